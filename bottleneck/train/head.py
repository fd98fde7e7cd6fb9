"""The fast stage: a softmax layer trained on cached bottleneck vectors.

The same model and schedule as retrain.py's final layer: one dense layer,
weights from a truncated normal with stddev 0.001, plain gradient descent on
the mean softmax cross entropy, a random batch (with replacement) per step, and
an evaluation every `eval_step_interval` steps. A step costs one [batch,
features] x [features, classes] product and its gradient, so training takes a
small fraction of the cache stage (README.md, Performance, has the measured
figures).

Above --vector_memory_mb the training vectors are lazy
(`segments.StoredVectors`): the batches of as many steps as the budget holds
are drawn first (from the same generator, in the same order, so the head is
the one the vectors in memory give), then their rows are read in one pass
over the store, in the files' order. Random batches touch nearly every chunk
of the store, so a pass reads all of it: 4,000 steps of 100 at a budget of
120,000 vectors make 4 passes. The validation vectors (10% of the photos by
default) are read whole, as calibration reads them.
"""

import dataclasses
import math

from absl import logging
import numpy as np

from bottleneck.train import summaries


@dataclasses.dataclass
class Head:
  """A trained softmax layer.

  Attributes:
    weights: float32 [feature_dim, num_classes].
    biases: float32 [num_classes].
    unknown: the `open_set.OpenSet` score that exports compute beside the
      probabilities, or None.
    curves: what training measured, for metrics.json and the report:
      {'head': a curve of the evaluation steps (`CURVE_COLUMNS`), and with
      --fine_tune_blocks 'fine_tune': one of the epochs (`EPOCH_COLUMNS`)};
      a curve is {column: list of float or None}.
  """
  weights: np.ndarray
  biases: np.ndarray
  unknown: object = None
  curves: dict = dataclasses.field(default_factory=dict, compare=False,
                                   repr=False)

  def probabilities(self, vectors):
    """float32 [batch, feature_dim] -> float32 [batch, num_classes] softmax."""
    return np.exp(self.log_probabilities(vectors))

  def log_probabilities(self, vectors):
    """float32 [batch, feature_dim] -> float32 [batch, num_classes] log softmax."""
    logits = vectors @ self.weights + self.biases
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


CURVE_COLUMNS = ('step', 'train_accuracy', 'train_loss', 'validation_accuracy',
                 'validation_loss')
EPOCH_COLUMNS = ('epoch', 'train_loss', 'validation_accuracy',
                 'validation_loss')


def new_curve(columns=CURVE_COLUMNS):
  """An empty curve: {column: []}."""
  return {column: [] for column in columns}


def add_point(curve, **values):
  """Appends one point to a curve; a column not given (or None) gets None."""
  for column, points in curve.items():
    value = values.get(column)
    points.append(None if value is None else
                  int(value) if column in ('step', 'epoch') else
                  round(float(value), 5))


@dataclasses.dataclass(frozen=True)
class Schedule:
  """retrain.py's training flags; see config.RetrainConfig for the defaults."""
  steps: int
  learning_rate: float
  train_batch_size: int
  eval_step_interval: int
  validation_batch_size: int  # -1: the whole validation set.


def train_head(train, validation, *, num_classes, schedule, seed,
               summaries_dir=None, memory_mb=math.inf):
  """Trains the softmax layer, logging retrain.py's lines as it goes.

  The step is written out in NumPy: for a [100, 1280] x [1280, 5] product a
  TensorFlow call costs more in dispatch than in arithmetic, and NumPy runs
  4,000 steps in a fraction of a second.

  Args:
    train: (vectors float32 [n, feature_dim], labels int [n]).
    validation: the same, may be empty.
    num_classes: number of classes.
    schedule: a `Schedule`.
    seed: int; the same seed and data give the same head.
    summaries_dir: if set, TensorBoard scalars go to its train/ and validation/
      subfolders.
    memory_mb: the MiB of float32 training vectors read at a time when they
      are lazy (`segments.StoredVectors`); see the module docstring.

  Returns:
    A `Head`.
  """
  train_x, train_y = arrays(train, keep_lazy=True)
  val_x, val_y = arrays(validation)
  rng = np.random.default_rng(seed)
  head = Head(_truncated_normal(np.random.default_rng([seed, 0]),
                                [train_x.shape[1], num_classes], stddev=0.001),
              np.zeros([num_classes], np.float32))
  head.curves['head'] = curve = new_curve()
  rate = np.float32(schedule.learning_rate)
  writers = (summaries.Writer(summaries_dir, ('train', 'validation'))
             if summaries_dir else None)
  rows = (schedule.train_batch_size if isinstance(train_x, np.ndarray) else
          max(schedule.train_batch_size, int(memory_mb * 2**20 / (
              4 * train_x.shape[1]))))
  draws = _draws(rng, schedule, train_x, len(val_y), rows)
  for i, (indices, vectors, val_indices) in enumerate(draws):
    log_probabilities = head.log_probabilities(vectors)
    # Gradient of the mean cross entropy with respect to the logits.
    gradient = np.exp(log_probabilities)
    gradient[np.arange(len(indices)), train_y[indices]] -= 1
    gradient /= len(indices)
    head.weights -= rate * (vectors.T @ gradient)  # Plain gradient descent.
    head.biases -= rate * gradient.sum(axis=0)
    if i % schedule.eval_step_interval and i + 1 != schedule.steps:
      continue
    # retrain.py's figures: the batch just trained on, before this step.
    loss, train_accuracy = _loss_and_accuracy(log_probabilities,
                                              train_y[indices])
    logging.info('Step %d: Train accuracy = %.1f%%', i, train_accuracy * 100)
    logging.info('Step %d: Cross entropy = %f', i, loss)
    scalars = {'train': (train_accuracy, loss)}
    if len(val_y):
      val_loss, val_accuracy = _loss_and_accuracy(
          head.log_probabilities(val_x[val_indices]), val_y[val_indices])
      logging.info('Step %d: Validation accuracy = %.1f%% (N=%d)', i,
                   val_accuracy * 100, len(val_indices))
      scalars['validation'] = (val_accuracy, val_loss)
    val_accuracy, val_loss = scalars.get('validation', (None, None))
    add_point(curve, step=i, train_accuracy=train_accuracy, train_loss=loss,
              validation_accuracy=val_accuracy, validation_loss=val_loss)
    if writers:
      for name, (accuracy, loss) in scalars.items():
        writers.scalars(name, i, accuracy=accuracy, cross_entropy=loss)
  if writers:
    writers.close()
  return head


def _draws(rng, schedule, train_x, val_count, rows):
  """Yields each step's (train indices, their vectors, validation indices).

  The indices are drawn from `rng` in the order the steps used to draw them
  (a step's batch, then, at an evaluation step, its validation sample: None
  at other steps), the batches of as many steps as `rows` rows hold at a
  time; lazy vectors are then read in one pass (module docstring).
  """
  step = 0
  while step < schedule.steps:
    span, drawn = [], 0
    while step < schedule.steps and (
        not span or drawn + schedule.train_batch_size <= rows):
      indices = sample(rng, len(train_x), schedule.train_batch_size)
      evaluate = not (step % schedule.eval_step_interval and
                      step + 1 != schedule.steps)
      span.append((indices, sample(rng, val_count,
                                   schedule.validation_batch_size)
                   if evaluate and val_count else None))
      drawn += len(indices)
      step += 1
    if isinstance(train_x, np.ndarray):
      for indices, val_indices in span:
        yield indices, train_x[indices], val_indices
      continue
    wanted = np.unique(np.concatenate([indices for indices, _ in span]))
    read = np.asarray(train_x[wanted], np.float32)
    for indices, val_indices in span:
      yield indices, read[np.searchsorted(wanted, indices)], val_indices


def predicted_classes(head, vectors):
  """int [n] classes the head predicts for float32 [n, feature_dim] vectors.

  Lazy vectors (`segments.StoredVectors`) are read a block at a time.
  """
  if not hasattr(vectors, 'blocks'):
    return head.log_probabilities(np.asarray(vectors, np.float32)).argmax(
        axis=1)
  classes = np.empty(len(vectors), np.int64)
  for at, block in vectors.blocks():
    classes[at] = head.log_probabilities(block).argmax(axis=1)
  return classes


def arrays(split, *, keep_lazy=False):
  """(float32 [n, feature_dim] vectors, int64 [n] labels) of a split.

  Args:
    split: (vectors, labels) as the recipes take them.
    keep_lazy: leave lazy vectors (`segments.StoredVectors`, above
      --vector_memory_mb) lazy, for a recipe that reads them in blocks;
      otherwise they are read whole.
  """
  vectors, labels = split
  if not (keep_lazy and hasattr(vectors, 'blocks')):
    vectors = np.asarray(vectors, np.float32)
  return vectors, np.asarray(labels, np.int64).reshape([-1])


def _truncated_normal(rng, shape, stddev):
  """float32 normal values redrawn until within 2 stddev, as TensorFlow's."""
  values = rng.standard_normal(shape)
  while True:
    outside = np.abs(values) > 2
    if not outside.any():
      return (values * stddev).astype(np.float32)
    values[outside] = rng.standard_normal(outside.sum())


def _loss_and_accuracy(log_probabilities, labels):
  """Mean cross entropy and accuracy of float32 [n, classes] log softmax."""
  loss = -np.mean(log_probabilities[np.arange(len(labels)), labels])
  return (float(loss),
          float(np.mean(log_probabilities.argmax(axis=1) == labels)))


def sample(rng, count, batch_size):
  """Indices of an evaluation sample, as retrain.py drew them.

  Args:
    rng: a numpy Generator.
    count: size of the set.
    batch_size: -1 for the whole set in order, else this many drawn at random
      with replacement. A sample as large as the set is the whole set: drawing
      100 from 3 validation photos (retrain.py did) only adds noise.

  Returns:
    int numpy array [count] or [batch_size].
  """
  if batch_size == -1 or batch_size >= count:
    return np.arange(count)
  return rng.integers(0, count, batch_size)
