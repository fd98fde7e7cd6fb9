"""Open set: a score that says a photo looks like none of the trained classes.

A softmax head always names one of its classes, also for a photo of something
it was never taught. This module fits, on the cached training vectors, the
class-conditional Mahalanobis distance of Lee et al. 2018 ("A simple unified
framework for detecting out-of-distribution samples"): one mean per class, one
covariance shared by the classes (the training vectors minus their class
mean), and a vector's distance to its nearest class mean. Its threshold is a
percentile of the validation photos' distances (config.UNKNOWN_PERCENTILE):
photos the head never saw, so the share of in-domain photos turned away is
about 100 - that percentile.

Two choices keep it general, whatever the photos and the width of the vectors:

  shrinkage  the covariance has more entries than there are photos (2,176
             features, a few hundred photos per class), so it is shrunk toward
             its diagonal by the intensity of Schaefer and Strimmer 2005
             (target D), computed from the vectors, not tuned.
  rank       the export keeps the `RANK` leading directions of the covariance
             exactly and the rest as one mean variance (as probabilistic PCA
             does), so the matrix it carries is at most [feature_dim, RANK]:
             with MobileNetV2's 2,176 `auto` features, 2,048 directions, 17.8
             MB in float32 (4,352 features, two sizes: 36 MB). Fewer cost
             accuracy: 256 directions turned away 2.6 points fewer photos of
             other subjects and 4.4 fewer faces (bench/open_set.py, README).

bench/open_set.py measures the choices (full rank, the relative Mahalanobis
distance of Ren et al. 2021, the top softmax score) on held-out flower photos,
photos of other subjects, and a flower class left out of training.

The score that exports return is distance / threshold: above 1.0 means
unknown at the default threshold, whatever the scale of the features.
"""

import dataclasses

from absl import logging
import numpy as np

from bottleneck import config as config_lib

RANK = 2048  # Directions kept exactly; see the module docstring.
MIN_VALIDATION = 20  # Fewer validation photos cannot place a percentile.
_BLOCK_ROWS = 4096  # In-memory vectors are read this many rows at a time.


@dataclasses.dataclass
class OpenSet:
  """The distance, written so that every export computes it with matmuls.

  score(v) = (||x||^2 / rest - ||x @ directions||^2
              + min_c(x @ class_weights[:, c] + class_biases[c])) / threshold
  with x = v - center,

  which is the squared Mahalanobis distance to the nearest class mean, divided
  by the threshold (see `fit`). Centering keeps float32 exports exact enough:
  the terms stay near the distance's own size.

  Attributes:
    center: float32 [feature_dim], the training vectors' mean.
    directions: float32 [feature_dim, k], the leading eigenvectors of the
      shared covariance, each scaled by sqrt(1 / rest - 1 / eigenvalue).
    rest: float, the mean variance of the other directions.
    class_weights: float32 [feature_dim, classes].
    class_biases: float32 [classes].
    threshold: float, the validation percentile of the distance.
    percentile: float, which percentile.
  """
  center: np.ndarray
  directions: np.ndarray
  rest: float
  class_weights: np.ndarray
  class_biases: np.ndarray
  threshold: float
  percentile: float

  def distances(self, vectors):
    """float32 [n, feature_dim] -> float64 [n] squared distances."""
    x = np.asarray(vectors, np.float64) - self.center
    quadratic = ((x * x).sum(1) / self.rest
                 - ((x @ self.directions) ** 2).sum(1))
    nearest = (x @ self.class_weights + self.class_biases).min(1)
    return quadratic + nearest

  def scores(self, vectors):
    """float32 [n, feature_dim] -> float32 [n]; above 1.0 is unknown."""
    return (self.distances(vectors) / self.threshold).astype(np.float32)


def fit(train, validation, *, num_classes,
        percentile=config_lib.UNKNOWN_PERCENTILE, rank=RANK):
  """Fits the open-set score on a run's vectors.

  Args:
    train: (float32 [n, feature_dim] vectors, int [n] classes); the vectors
      may be lazy (`segments.StoredVectors`, above --vector_memory_mb): they
      are then read in blocks, three times (see `moments`), never whole.
    validation: the same, for the threshold; read whole (a small set).
    num_classes: number of classes.
    percentile: of the validation distances, for the threshold.
    rank: directions kept exactly.

  Returns:
    An `OpenSet`, or None with a logged reason when the photos are too few to
    place the threshold (fewer than MIN_VALIDATION validation photos) or a
    class has no training photo.
  """
  vectors, classes = train
  classes = np.asarray(classes).reshape([-1])
  if len(validation[0]) < MIN_VALIDATION:
    logging.warning(
        'No "unknown" detection: %d validation photo(s) are too few to set '
        'its threshold (at least %d are needed); add photos or raise '
        '--validation_percentage.', len(validation[0]), MIN_VALIDATION)
    return None
  if len(set(classes.tolist())) < num_classes:
    logging.warning('No "unknown" detection: a class has no training photo.')
    return None
  center, means, covariance, alpha = moments(vectors, classes, num_classes)
  variances = np.diag(covariance).copy()
  covariance *= 1 - alpha  # Shrunk toward its diagonal, which stays.
  covariance[np.diag_indices_from(covariance)] = variances
  values, vectors_ = np.linalg.eigh(covariance)  # Ascending.
  k = min(rank, len(values) - 1)
  rest = float(values[:-k].mean()) if k else float(values.mean())
  lead = np.maximum(values[-k:], rest) if k else values[:0]
  directions = vectors_[:, len(values) - k:] * np.sqrt(1 / rest - 1 / lead)
  # d_c(x) = q(x) - 2 x.A m_c + m_c.A m_c with A the precision; q is above.
  precise_means = means / rest - (means @ directions) @ directions.T
  open_set = OpenSet(
      center=center.astype(np.float32),
      directions=directions.astype(np.float32), rest=rest,
      class_weights=(-2 * precise_means.T).astype(np.float32),
      class_biases=(precise_means * means).sum(1).astype(np.float32),
      threshold=1.0, percentile=float(percentile))
  open_set.threshold = float(np.percentile(
      open_set.distances(validation[0]), percentile))
  logging.info('"Unknown" detection: Mahalanobis distance (shrinkage %.2f, '
               '%d directions), threshold at the %gth percentile of the %d '
               'validation photos.', alpha, k, percentile,
               len(validation[0]))
  return open_set


def moments(vectors, classes, num_classes):
  """What `fit` needs of the training vectors, a block at a time.

  Three passes, each holding one float64 block (and the [dim, dim] sums):
  the class sums give the class means; the residuals' (vectors minus their
  class mean) products and sums give the covariance and the residuals' mean
  and standard deviation; with those, the standardized residuals' sums that
  `shrinkage` needs (its sums of z_ij^2 products need the mean and standard
  deviation first, hence the third pass; only the second one multiplies
  [block, dim] x [dim, dim]). In-memory vectors go through the same passes in
  slices, so that no float64 copy of them all is made; the result is that of
  the formulas on the whole matrix, up to float64 rounding in the order of the
  sums (tests/test_streaming.py).

  Args:
    vectors: float32 [n, dim], a numpy array or lazy (has `blocks()`).
    classes: int [n].
    num_classes: number of classes.

  Returns:
    (center float64 [dim], the vectors' mean; means float64 [classes, dim],
    class means minus center; covariance float64 [dim, dim], the residuals';
    alpha float, the shrinkage intensity).
  """
  if not hasattr(vectors, 'blocks'):  # Lazy: segments.StoredVectors.
    vectors = np.asarray(vectors)
  blocks = _blocks(vectors)
  n, dim = vectors.shape
  sums = np.zeros((num_classes, dim))
  for at, block in blocks():
    sums += np.eye(num_classes)[classes[at]].T @ block
  class_means = sums / np.bincount(classes, minlength=num_classes)[:, None]
  center = sums.sum(0) / n
  gram, total = np.zeros((dim, dim)), np.zeros(dim)
  for at, block in blocks():
    residuals = block - class_means[classes[at]]
    gram += residuals.T @ residuals
    total += residuals.sum(0)
  mean = total / n
  scale = np.sqrt(np.maximum(np.diag(gram) / n - mean ** 2, 0)) + 1e-12
  row_sums, squared_sum = 0.0, 0.0
  for at, block in blocks():
    squares = ((block - class_means[classes[at]] - mean) / scale) ** 2
    row_sums += (squares.sum(1) ** 2).sum()
    squared_sum += (squares ** 2).sum()
  mean_products = (gram / n - np.outer(mean, mean)) / np.outer(scale, scale)
  alpha = _intensity(n, mean_products, row_sums, squared_sum)
  return center, class_means - center, gram / n, alpha


def _blocks(vectors):
  """A function that yields (positions int [r], float64 [r, dim]) blocks."""
  if hasattr(vectors, 'blocks'):
    return lambda: ((at, block.astype(np.float64))
                    for at, block in vectors.blocks())
  return lambda: ((np.arange(lo, min(lo + _BLOCK_ROWS, len(vectors))),
                   vectors[lo:lo + _BLOCK_ROWS].astype(np.float64))
                  for lo in range(0, len(vectors), _BLOCK_ROWS))


def shrinkage(residuals):
  """Schaefer-Strimmer intensity toward the diagonal (their target D).

  The in-memory form of what `moments` computes a block at a time.

  Args:
    residuals: float64 [n, dim], vectors minus their class mean.

  Returns:
    float in [0, 1]: the estimated variance of the sample correlations over
    their squared size, off the diagonal.
  """
  z = residuals - residuals.mean(0)
  z /= z.std(0) + 1e-12
  squares = z * z
  return _intensity(len(z), z.T @ z / len(z), (squares.sum(1) ** 2).sum(),
                    (squares ** 2).sum())


def _intensity(n, mean_products, row_sums, squared_sum):
  """The intensity from sums over the n standardized residuals z [n, dim].

  Args:
    n: number of residuals.
    mean_products: float64 [dim, dim], z.T @ z / n.
    row_sums: sum over rows of (sum_j z_ij^2)^2.
    squared_sum: sum of z_ij^4.
  """
  # Sum over i != j of the variance of z_i z_j, without the [n, dim, dim] array.
  spread = (row_sums - squared_sum
            - n * ((mean_products ** 2).sum()
                   - (np.diag(mean_products) ** 2).sum()))
  variance = n / (n - 1) ** 3 * spread
  correlations = mean_products * n / (n - 1)
  size = (correlations ** 2).sum() - (np.diag(correlations) ** 2).sum()
  return float(np.clip(variance / size, 0.0, 1.0)) if size > 0 else 1.0


def unknown_rate(open_set, vectors, threshold=1.0):
  """Share of vectors [n, feature_dim] whose score is above threshold."""
  if open_set is None or not len(vectors):
    return None
  return float(np.mean(open_set.scores(vectors) > threshold))


def figures(open_set, validation, testing):
  """metrics.json's 'unknown' dict, and its log line.

  Args:
    open_set: an `OpenSet`, or None.
    validation, testing: float32 vectors [n, feature_dim] of those photos.

  Returns:
    {'method', 'percentile', 'threshold', 'validation_unknown_rate',
    'test_unknown_rate'}, or None without a score.
  """
  if open_set is None:
    return None
  rates = [unknown_rate(open_set, v) for v in (validation, testing)]
  logging.info('"Unknown" at the default threshold: %s of the validation and '
               '%s of the test photos.', *(
                   'none measured' if r is None else f'{r:.1%}'
                   for r in rates))
  return {'method': 'mahalanobis', 'percentile': open_set.percentile,
          'threshold': open_set.threshold,
          'validation_unknown_rate': rates[0], 'test_unknown_rate': rates[1]}
