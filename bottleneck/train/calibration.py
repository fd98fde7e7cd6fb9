"""Calibration: temperature scaling, so that a score of 0.9 is right 9 in 10.

A head trained to minimize cross entropy with L2 on a few hundred photos per
class is often over- or under-confident on new photos. Temperature scaling
(Guo et al. 2017, "On calibration of modern neural networks") divides the
logits by one number T, fitted on the validation photos by minimizing their
cross entropy; the class ranking, hence accuracy, does not change. T is
folded into the head's weights and biases, so every export carries it.

The expected calibration error (ECE) measures the result: the photos are
binned by their top score (config.ECE_BINS equal-width bins), and the gaps
between each bin's mean top score and its accuracy are averaged, weighted by
the bin's share of photos.
"""

import dataclasses

from absl import logging
import numpy as np

from bottleneck import config as config_lib

MIN_VALIDATION = 10  # Fewer validation photos leave T = 1.
_LOG_T_RANGE = (-3.0, 3.0)  # T from 0.05 to 20.


def fit_temperature(head, validation):
  """The temperature that minimizes the validation photos' cross entropy.

  Args:
    head: a `head.Head`.
    validation: (float32 [n, feature_dim] vectors, int [n] classes).

  Returns:
    float T > 0; 1.0 (with a logged reason) for too few validation photos.
  """
  vectors, classes = validation
  if len(vectors) < MIN_VALIDATION:
    logging.warning('Scores are not calibrated: %d validation photo(s) are '
                    'too few (at least %d are needed).', len(vectors),
                    MIN_VALIDATION)
    return 1.0
  logits = (np.asarray(vectors, np.float64) @ head.weights + head.biases)
  rows = np.arange(len(classes))

  def loss(log_t):
    scaled = logits / np.exp(log_t)
    scaled -= scaled.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(scaled).sum(1)) - scaled[rows, classes]))

  # The loss is convex in 1/T; a golden-section search on log T is enough.
  low, high = _LOG_T_RANGE
  ratio = (np.sqrt(5) - 1) / 2
  for _ in range(60):
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    if loss(a) < loss(b):
      high = b
    else:
      low = a
  return float(np.exp((low + high) / 2))


def scaled(head, temperature):
  """The head with its logits divided by temperature (a new `head.Head`)."""
  return dataclasses.replace(
      head, weights=(head.weights / temperature).astype(np.float32),
      biases=(head.biases / temperature).astype(np.float32))


def expected_calibration_error(probabilities, classes,
                               bins=config_lib.ECE_BINS):
  """ECE of probabilities float [n, classes] for true classes int [n].

  Returns:
    float in [0, 1]; None for no photos.
  """
  if not len(classes):
    return None
  probabilities = np.asarray(probabilities)
  confidence = probabilities.max(1)
  correct = probabilities.argmax(1) == np.asarray(classes)
  which = np.minimum((confidence * bins).astype(int), bins - 1)
  error = 0.0
  for b in range(bins):
    members = which == b
    if members.any():
      error += members.mean() * abs(confidence[members].mean() -
                                    correct[members].mean())
  return float(error)


def calibrate(head, validation, testing):
  """Fits T on validation and measures the ECE on the test photos.

  Args:
    head: a `head.Head`.
    validation, testing: (float32 [n, feature_dim], int [n]) each.

  Returns:
    (the calibrated `head.Head`, metrics.json's 'calibration' dict:
    temperature, ece_before, ece_after, and the mean cross entropy
    nll_before, nll_after (a proper score, less noisy than the ECE on a few
    hundred photos), all on the test photos (None without them), bins).
  """
  temperature = fit_temperature(head, validation)
  calibrated = scaled(head, temperature)
  vectors, classes = testing
  (before, nll_before), (after, nll_after) = (
      _scores(h, vectors, classes) for h in (head, calibrated))
  logging.info('Calibration: temperature %.3f; expected calibration error on '
               'the test photos %s before, %s after.', temperature,
               _percent(before), _percent(after))
  return calibrated, {'temperature': temperature, 'ece_before': before,
                      'ece_after': after, 'nll_before': nll_before,
                      'nll_after': nll_after, 'bins': config_lib.ECE_BINS}


def _scores(head, vectors, classes):
  """(ECE, mean cross entropy in nats) of a head on vectors [n, d] with true
  classes [n], from one pass of the head; (None, None) for no vectors."""
  if not len(vectors):
    return None, None
  log_probabilities = head.log_probabilities(np.asarray(vectors))
  return (expected_calibration_error(np.exp(log_probabilities), classes),
          float(-log_probabilities[np.arange(len(classes)), classes].mean()))


def _percent(value):
  return 'not measured' if value is None else f'{value:.1%}'
