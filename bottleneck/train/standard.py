"""The standard head recipe: standardized features, L2 chosen on validation.

The same softmax layer as retrain.py's (head.py), trained so that it fits any
features, from MobileNetV2's 1,280 to several pooled layers of several image
sizes side by side (3,000 to 10,000 numbers whose scales differ by orders of
magnitude):

1. Standardization. Each feature is shifted and scaled by its mean and
   standard deviation over the training vectors, so that features of every
   layer weigh alike in the penalty below and the optimizer sees a well
   conditioned problem. When the vectors are several pooled layers (or
   passes) side by side, each layer's standardized features are then scaled
   by sqrt(D / (G * d)) (D features in all, G layers, d in this one), so
   that every layer has the same total variance, D / G: each layer weighs
   alike in the penalty, whatever its width, as Head2Toe's and SUR's
   per-layer normalization makes every layer a vector of the same length
   (Evci et al. 2022; Dvornik et al. 2020). Otherwise MobileNetV2's 1,280
   final channels would outweigh the 320 of the layer before 4 to 1. Both
   are linear, and folded into the head's weights at the end (scaling.py),
   so every export still takes raw vectors.
2. L2. The objective is the mean cross entropy plus l2 * sum(weights**2)
   (Keras's `regularizers.l2(l2)`; biases are not penalized). It is strictly
   convex: it has one minimum, whatever the features.
3. Full-batch L-BFGS (lbfgs.py) from zero weights. A line search picks each
   step, so no learning rate needs choosing for a given width or scale; a fit
   stops when a step lowers the objective by less than a relative 1e-7, or
   after `--how_many_training_steps` steps.
4. The strength is chosen on the validation photos: one fit per strength of
   config.L2_STRENGTHS, strongest first, each starting from the previous
   answer; the fit with the lowest validation cross entropy wins, and the
   path stops once two strengths in a row did not improve on it. Without
   validation photos, config.DEFAULT_L2 is used, and the log says so.

Cost: a step is one [n, d] x [d, classes] product and one [d, n] x [n,
classes] product (the line search rarely needs a second try), on float32
standardized copies of the training and validation vectors (4 bytes each).
Above --vector_memory_mb the vectors are lazy (`segments.StoredVectors`): the
statistics and each step read them from the cache a block at a time and
standardize each block on the fly, so memory holds a block, not n x d; each
step then costs a read of every training vector (from the page cache when
it fits in RAM). README.md, The
head, has measured times and step counts.
"""

import dataclasses

from absl import logging
import numpy as np

from bottleneck import config
from bottleneck.train import head as head_lib
from bottleneck.train import lbfgs
from bottleneck.train import scaling
from bottleneck.train import summaries

# Strengths after the best one that may fail to improve before the path stops.
_PATIENCE = 2


def train_head(train, validation, *, num_classes, schedule, seed,
               summaries_dir=None, groups=()):
  """Trains the softmax layer by the standard recipe (see the module doc).

  Takes the same arguments as `head.train_head`. Of the schedule, `steps` caps
  the L-BFGS steps of each fit and `eval_step_interval` spaces the log lines;
  the learning rate, batch sizes and seed do not apply (every step uses all
  training vectors, validation uses all validation vectors, and nothing is
  drawn at random).

  Args:
    train: (vectors float32 [n, feature_dim], labels int [n]).
    validation: the same, may be empty.
    num_classes: number of classes.
    schedule: a `head.Schedule`.
    seed: unused; the recipe is deterministic.
    summaries_dir: if set, TensorBoard scalars go to its train/ and validation/
      subfolders, at the log lines' steps.
    groups: the widths of the layers side by side in a vector, in order
      (`backbones.Backbone.groups`); each layer weighs alike (see the module
      doc). () for one layer.

  Returns:
    A `head.Head` that takes raw vectors.
  """
  del seed  # Zero start, full batches: the same data give the same head.
  train_x, train_y = head_lib.arrays(train, keep_lazy=True)
  val_x, val_y = head_lib.arrays(validation, keep_lazy=True)
  stats = scaling.Standardization.of(train_x, groups)
  problem = _Problem(_source(stats, train_x), train_y, num_classes,
                     train_x.shape[1])
  held_out = (_source(stats, val_x), val_y)
  strengths = config.L2_STRENGTHS if len(val_y) else (config.DEFAULT_L2,)
  logging.info(
      'Head: standard recipe, %s training vectors of %s features, '
      'standardized%s; L2 strength %s.', f'{len(train_y):,}',
      f'{train_x.shape[1]:,}',
      f', each of {len(groups)} layers weighted alike' if len(groups) > 1
      else '',
      f'chosen on {len(val_y):,} validation photos among '
      f'{_strength(strengths[0])} ... {_strength(strengths[-1])}'
      if len(val_y) else
      f'{_strength(config.DEFAULT_L2)}, the default (no validation photos '
      'to choose it on)')
  writers = (summaries.Writer(summaries_dir, ('train', 'validation'))
             if summaries_dir else None)
  step = 0  # Counts on across the fits, as TensorBoard's x axis.
  curve = head_lib.new_curve()

  def report(i, theta, fit, last):
    nonlocal step
    if i % schedule.eval_step_interval == 0 or last:
      val = _evaluate(problem, theta, *held_out)
      _log(writers, step, fit, val)
      head_lib.add_point(curve, step=step, train_loss=fit[0],
                         train_accuracy=fit[1],
                         validation_accuracy=val and val[0],
                         validation_loss=val and val[1])
    step += 1

  # The validation photos only choose the strength; they are never trained
  # on. (Fitting once more on training + validation photos gained 0.8 point
  # in cross-validation on the flowers' last layer, lost 0.15 on six layers,
  # and would blind --promote_if_better, which compares on them.)
  try:
    _, theta = _path(problem, strengths, held_out, max_steps=schedule.steps,
                     report=report)
  finally:
    if writers:
      writers.close()
  weights, biases = problem.unpack(theta)
  return dataclasses.replace(scaling.fold(weights, biases, stats),
                             curves={'head': curve})


def _path(problem, strengths, validation, *, max_steps, report):
  """Fits each strength in turn, keeping the best on validation.

  Returns:
    (the chosen strength, its float64 parameters).
  """
  theta = np.zeros(problem.size)
  best = None  # (validation cross entropy, index of the strength, theta).
  for index, strength in enumerate(strengths):
    theta, steps, fit = lbfgs.minimize(
        lambda theta, strength=strength: problem.loss(theta, strength), theta,
        max_steps=max_steps, report=report)
    val = _evaluate(problem, theta, *validation)
    logging.info('L2 strength %s: %d steps, train accuracy %.1f%%, cross '
                 'entropy %.4f%s.', _strength(strength), steps,
                 fit[1] * 100, fit[0],
                 f'; validation accuracy {val[0]:.1%}, cross entropy '
                 f'{val[1]:.4f} (N={val[2]})' if val else '')
    if not val:
      return strength, theta
    if best is None or val[1] < best[0]:
      best = (val[1], index, theta.copy())
    elif index - best[1] >= _PATIENCE:
      break
  _, index, theta = best
  edge = (' (the strongest tried)' if index == 0 else
          ' (the weakest tried)' if index == len(strengths) - 1 else '')
  logging.info('Chose L2 strength %s%s, the lowest validation cross entropy '
               '(%.4f).', _strength(strengths[index]), edge, best[0])
  return strengths[index], theta


def _source(stats, vectors):
  """A function that yields (positions int [r], standardized float32 [r, d]).

  In memory: one block, the standardized copy. Lazy vectors
  (`segments.StoredVectors`, above --vector_memory_mb): read and
  standardized a block at a time at each call, so nothing of size n x d is
  held.
  """
  if hasattr(vectors, 'blocks'):
    return lambda: ((at, stats.apply(block)) for at, block in vectors.blocks())
  everything = [(np.arange(len(vectors)), stats.apply(vectors))]
  return lambda: everything


class _Problem:
  """Mean cross entropy of a softmax layer on standardized float32 vectors."""

  def __init__(self, source, labels, num_classes, feature_dim):
    """source: see `_source`; labels: int [n]."""
    self.source, self.labels = source, labels
    self.shape = (feature_dim, num_classes)
    self.size = feature_dim * num_classes + num_classes

  def unpack(self, theta):
    """float64 [size] -> (weights [feature_dim, classes], biases [classes])."""
    cut = self.shape[0] * self.shape[1]
    return theta[:cut].reshape(self.shape), theta[cut:]

  def logits(self, theta, vectors):
    weights, biases = self.unpack(theta)
    return (vectors @ weights.astype(np.float32)).astype(np.float64) + biases

  def loss(self, theta, strength):
    """Objective, its gradient (float64 [size]) and (cross entropy, accuracy)."""
    n = len(self.labels)
    weights, _ = self.unpack(theta)
    d_weights = 2 * strength * weights
    d_biases = np.zeros(self.shape[1])
    cross_entropy = correct = 0.0
    for at, vectors in self.source():
      labels = self.labels[at]
      log_p = _log_softmax(self.logits(theta, vectors))
      rows = np.arange(len(at))
      cross_entropy -= log_p[rows, labels].sum() / n
      correct += np.sum(log_p.argmax(axis=1) == labels)
      d_logits = np.exp(log_p)
      d_logits[rows, labels] -= 1
      d_logits /= n
      d_weights += (vectors.T @ d_logits.astype(np.float32)).astype(np.float64)
      d_biases += d_logits.sum(axis=0)
    gradient = np.concatenate([d_weights.ravel(), d_biases])
    return (cross_entropy + strength * np.sum(weights ** 2), gradient,
            (float(cross_entropy), float(correct / n)))


def _evaluate(problem, theta, source, labels):
  """(accuracy, cross entropy, N) on a `_source`; None if empty."""
  if not len(labels):
    return None
  correct = cross_entropy = 0.0
  for at, vectors in source():
    log_p = _log_softmax(problem.logits(theta, vectors))
    correct += np.sum(log_p.argmax(axis=1) == labels[at])
    cross_entropy -= log_p[np.arange(len(at)), labels[at]].sum()
  n = len(labels)
  return float(correct / n), float(cross_entropy / n), n


def _log(writers, step, fit, val):
  """retrain.py's three lines, and the same figures to TensorBoard."""
  loss, accuracy = fit
  logging.info('Step %d: Train accuracy = %.1f%%', step, accuracy * 100)
  logging.info('Step %d: Cross entropy = %f', step, loss)
  if val:
    logging.info('Step %d: Validation accuracy = %.1f%% (N=%d)', step,
                 val[0] * 100, val[2])
  if writers:
    writers.scalars('train', step, accuracy=accuracy, cross_entropy=loss)
    if val:
      writers.scalars('validation', step, accuracy=val[0],
                      cross_entropy=val[1])


def _log_softmax(logits):
  logits = logits - logits.max(axis=1, keepdims=True)
  return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def _strength(value):
  return f'{value:.0e}'
