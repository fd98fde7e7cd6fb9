"""metrics.json: what a run trained on, how the model scored, what it skipped.

Written into every published model folder, and beside it for a candidate the
quality gate refused, for programs that watch a nightly run:

  {
    "decision": "published" | "kept" | "refused: <why>",
    "test_accuracy": 0.912,            (null without test photos)
    "labels": ["daisy", ...],
    "counts": {"daisy": {"training": 318, "validation": 40, "testing": 39}},
    "per_class": {"daisy": {"precision": 0.95, "recall": 0.92, "support": 39}},
    "confusion_matrix": [[36, 1, ...], ...],  (row: true class, column:
                                               predicted class; test photos)
    "backbone": {...}, "flags": {...}, "durations_seconds": {...},
    "skipped": [{"path": "...", "reason": "..."}], "skipped_count": 1,
    "bottlenecks": {"photos": 2000, "distinct": 1998, "reused": 1990,
                    "computed": 8, "could_not_decode": 0, "duplicates": 2,
                    "engine": {"runtime": "litert", "batch_size": 4,
                               "decode_threads": 2, "backbone_threads": 2,
                               "chosen_by": "measured on ..."}},
    "gate": {"compared_on": "validation", "photos": 196,
             "new_accuracy": 0.92, "in_place_accuracy": 0.91,
             "in_place": "evaluated"},  (null without --promote_if_better)
    "curves": {"head": {"step": [0, 10, ...], "train_accuracy": [...],
                        "train_loss": [...], "validation_accuracy": [...],
                        "validation_loss": [...]},
               "fine_tune": {"epoch": [0, 1, ...], ...}}  (`head.Head.curves`)
  }

"bottlenecks" has the counts of the cache stage's log line: reused, computed
and could_not_decode count distinct contents (they add up to "distinct");
"duplicates" photos more have the same bytes as one of them. "engine" is how
the computed ones were computed (`features.probe`); null if none was.

"gate" is --promote_if_better's comparison (see `run.gate`): the set that
decided ("validation"; "testing" only when there are no validation photos),
its size, and both models' accuracy on it; "test_accuracy" is the new model's
own, measured before and apart from that choice. "in_place" is "evaluated",
"none" (no model in place), "replaced: <why>" (damaged beyond use) or
"kept: <why>" (it could not be compared).
"""

import dataclasses
import io

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageDraw

from bottleneck.train import head as head_lib


def confusion_matrix(truth, predicted, num_classes):
  """int64 [num_classes, num_classes]: row true class, column prediction."""
  matrix = np.zeros([num_classes, num_classes], np.int64)
  np.add.at(matrix, (np.asarray(truth, np.int64),
                     np.asarray(predicted, np.int64)), 1)
  return matrix


def per_class(matrix, labels):
  """{label: {precision, recall, support}}; None where a ratio is 0/0."""
  result = {}
  for i, label in enumerate(labels):
    predicted, actual = matrix[:, i].sum(), matrix[i, :].sum()
    result[label] = {
        'precision': float(matrix[i, i] / predicted) if predicted else None,
        'recall': float(matrix[i, i] / actual) if actual else None,
        'support': int(actual)}
  return result


def build(*, labels, splits, truth, predicted, config, backbone, durations,
          skipped, bottlenecks, gate, decision, calibration=None,
          unknown=None, curves=None):
  """The metrics.json dict.

  Args:
    labels: list of str, class-index order.
    splits: {'training'|'validation'|'testing': list of `images.Photo`}.
    truth: int [n] true classes of the test photos evaluated.
    predicted: int [n] the model's classes for them.
    config: the run's `config.RetrainConfig`.
    backbone: the `backbones.Backbone`.
    durations: {stage: seconds}.
    skipped: list of (path, reason).
    bottlenecks: the cache stage's counts (`cache.CacheResult.counts`) and
      its `engine`.
    gate: the quality gate's comparison (`gate.check`), or None.
    decision: 'published', or 'refused: <why>'.
    calibration: `calibration.calibrate`'s figures, or None.
    unknown: the "unknown" score's threshold and rates (run/pipeline.py), or
      None when it was not fitted.
    curves: the head's training curves (`head.Head.curves`), or None.
  """
  matrix = confusion_matrix(truth, predicted, len(labels))
  counts = {label: {name: 0 for name in splits} for label in labels}
  for name, photos in splits.items():
    for photo in photos:
      counts[labels[photo.label]][name] += 1
  return {
      'decision': decision,
      'test_accuracy': (float(np.trace(matrix) / matrix.sum())
                        if matrix.sum() else None),
      'test_photos': int(matrix.sum()),
      'labels': list(labels),
      'counts': counts,
      'per_class': per_class(matrix, labels),
      'confusion_matrix': matrix.tolist(),
      'backbone': {'name': backbone.name, 'identity': backbone.identity,
                   'image_size': list(backbone.image_size),
                   'image_sizes': list(backbone.image_sizes),
                   'feature_dim': backbone.feature_dim,
                   'layers': list(backbone.layers) or ['last'],
                   'tuned_blocks': backbone.tuned_blocks,
                   'preprocessing': backbone.preprocessing,
                   'precision': backbone.precision},
      'flags': dataclasses.asdict(config),
      'durations_seconds': {k: round(v, 3) for k, v in durations.items()},
      'skipped': [{'path': path, 'reason': reason} for path, reason in skipped],
      'skipped_count': len(skipped),
      'bottlenecks': dict(bottlenecks),
      'gate': gate,
      'calibration': calibration,
      'unknown': unknown,
      'curves': curves or {},
  }


def final_test(head, test_data, test_photos, labels, config):
  """Measures the head on the test photos and logs retrain.py's final line.

  Args:
    head: the trained `head.Head`.
    test_data: (float32 [n, feature_dim] vectors, int32 [n] classes).
    test_photos: list of n `images.Photo` (--print_misclassified_test_images).
    labels: list of str, class-index order.
    config: the run's `config.RetrainConfig` (seed, test batch size).

  Returns:
    (accuracy or None, true classes int [n], predicted classes int [n]) of
    the test photos evaluated.
  """
  vectors, truth = test_data
  if not len(truth):
    logging.warning('No test photos (--testing_percentage %s): the final test '
                    'accuracy cannot be measured.', config.testing_percentage)
    return None, truth, truth
  rng = np.random.default_rng(config.random_seed + 1)
  indices = head_lib.sample(rng, len(truth), config.test_batch_size)
  predictions = head_lib.predicted_classes(head, vectors[indices])
  accuracy = float(np.mean(predictions == truth[indices]))
  logging.info('Final test accuracy = %.1f%% (N=%d)', accuracy * 100,
               len(indices))
  if config.print_misclassified_test_images:
    logging.info('=== MISCLASSIFIED TEST IMAGES ===')
    for i, predicted in zip(indices, predictions):
      if predicted != truth[i]:
        logging.info('%70s  %s', test_photos[i].path, labels[predicted])
  return accuracy, truth[indices], predictions


def confusion_png(matrix, labels, *, cell=40):
  """The confusion matrix drawn as a heat map with counts.

  Rows are true classes, columns predictions; a cell's darkness is its share
  of its row. Labels are listed along the left, in class-index order.

  Returns:
    (PNG bytes, (width, height)).
  """
  n = len(labels)
  margin = 8 + 7 * min(24, max((len(label) for label in labels), default=1))
  img = Image.new('RGB', (margin + n * cell + 1, n * cell + 1), 'white')
  draw = ImageDraw.Draw(img)
  rows = matrix.sum(axis=1, keepdims=True)
  share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
  for i in range(n):
    draw.text((4, i * cell + cell // 2 - 5), labels[i][:24], fill='black')
    for j in range(n):
      shade = int(255 * (1 - share[i, j]))
      box = (margin + j * cell, i * cell, margin + (j + 1) * cell, (i + 1) * cell)
      draw.rectangle(box, fill=(shade, shade, 255), outline='gray')
      draw.text((box[0] + 4, box[1] + cell // 2 - 5), str(matrix[i, j]),
                fill='white' if share[i, j] > 0.5 else 'black')
  out = io.BytesIO()
  img.save(out, 'PNG')
  return out.getvalue(), img.size
