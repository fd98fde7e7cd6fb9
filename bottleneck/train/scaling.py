"""Per-feature standardization and layer weights, folded into the head.

The standard recipe (standard.py) trains on vectors shifted and scaled feature
by feature (`Standardization`), with each pooled layer weighted so that all
layers weigh alike in the L2 penalty (`layer_weights`); `fold` turns the head
it trains into one on raw vectors, so that every export takes the vectors the
backbone gives.
"""

import dataclasses

import numpy as np

from bottleneck.train import head as head_lib

_ROWS = 4096  # Rows per block when standardizing: bounds float64 temporaries.


@dataclasses.dataclass(frozen=True)
class Standardization:
  """Per-feature shift and scale of the training vectors.

  Attributes:
    mean: float64 [feature_dim].
    scale: float64 [feature_dim], the standard deviation divided by the
      feature's layer weight (`layer_weights`); 1 divided by it for a feature
      that is constant (to float32 precision) on the training vectors, which
      standardization sends to 0 and the penalty gives a weight of 0.
  """
  mean: np.ndarray
  scale: np.ndarray

  @classmethod
  def of(cls, vectors, groups=()):
    """Of float32 [n, feature_dim] vectors, in float64, a block at a time.

    Args:
      vectors: float32 [n, feature_dim], an array or lazy
        (`segments.StoredVectors`, read twice).
      groups: the widths of the layers side by side in a vector, in order
        (`backbones.Backbone.groups`); () for one layer.
    """
    n = len(vectors)
    mean = sum(block.sum(axis=0, dtype=np.float64)
               for block in _blocks(vectors)) / n
    variance = sum(((block - mean) ** 2).sum(axis=0)
                   for block in _blocks(vectors)) / n
    std = np.sqrt(variance)
    # Differences below float32's resolution of the values are rounding.
    constant = std <= 1e-6 * np.abs(mean)
    return cls(mean, np.where(constant, 1.0, std) /
               layer_weights(groups, len(mean)))

  def apply(self, vectors):
    """float32 [n, feature_dim] -> standardized float32 [n, feature_dim]."""
    out = np.empty(vectors.shape, np.float32)
    for start in range(0, len(vectors), _ROWS):
      out[start:start + _ROWS] = (
          vectors[start:start + _ROWS] - self.mean) / self.scale
    return out


def layer_weights(groups, feature_dim):
  """Each feature's layer weight: sqrt(D / (G * d)) for a layer of d of D.

  After standardization every feature has variance 1, so a layer of d
  features has total variance d; times this weight squared it has D / G, the
  same for each of the G layers.

  Args:
    groups: tuple of ints, the width of each layer in order, summing to
      feature_dim; () or one width for a single layer.
    feature_dim: D.

  Returns:
    float64 [feature_dim]; all ones for a single layer.

  Raises:
    ValueError: the widths do not add up to feature_dim.
  """
  if len(groups) <= 1:
    return np.ones(feature_dim)
  if sum(groups) != feature_dim or min(groups) < 1:
    raise ValueError(f'Layer widths {groups} (sum {sum(groups)}) do not split '
                     f'vectors of {feature_dim} features.')
  return np.concatenate([np.full(d, np.sqrt(feature_dim / (len(groups) * d)))
                         for d in groups])


def fold(weights, biases, standardization):
  """The head on raw vectors that equals (weights, biases) on standardized ones.

  x' W + b with x' = (x - mean) / scale is x (W / scale) + (b - (mean / scale)
  W), so W' = W / scale[:, None] and b' = b - (mean / scale) @ W.

  Args:
    weights: float64 [feature_dim, num_classes].
    biases: float64 [num_classes].
    standardization: a `Standardization`.

  Returns:
    A `head.Head` (float32) that takes raw vectors.
  """
  shift = standardization.mean / standardization.scale
  return head_lib.Head(
      (weights / standardization.scale[:, None]).astype(np.float32),
      (biases - shift @ weights).astype(np.float32))


def _blocks(vectors):
  if hasattr(vectors, 'blocks'):  # Lazy: segments.StoredVectors.
    for _, block in vectors.blocks():
      yield block.astype(np.float64)
    return
  for start in range(0, len(vectors), _ROWS):
    yield vectors[start:start + _ROWS].astype(np.float64)
