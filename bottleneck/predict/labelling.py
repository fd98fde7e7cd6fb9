"""Label images with a loaded model: files in batches, "unknown" included.

`label_images` decodes files as the cache stage does (`decode`), runs a
`loaders.LoadedModel` on batches of them and keeps the top labels of each,
with the model's "unknown" verdict (export/outputs.py) when it has the score.
"""

import numpy as np

from bottleneck import config
from bottleneck.data import decode
from bottleneck import errors


class Predictions(list):
  """[(label, score), ...] best first, as a list, and the "unknown" verdict.

  Attributes:
    unknown: True if the image looks like none of the classes (its
      unknown_score is above the threshold asked for).
    unknown_score: float, or None for a model without the score.
  """

  def __init__(self, pairs, unknown_score=None, threshold=None):
    super().__init__(pairs)
    self.unknown_score = unknown_score
    self.unknown = bool(unknown_score is not None and threshold is not None
                        and threshold >= 0 and unknown_score > threshold)


def label_images(model, paths, *, top_k,
                 batch_size=config.DEFAULT_BATCH_SIZE,
                 unknown_threshold=config.DEFAULT_UNKNOWN_THRESHOLD):
  """Labels image files in batches.

  Args:
    model: a `LoadedModel`.
    paths: list of file paths.
    top_k: how many (label, score) pairs to keep per image.
    batch_size: images per model call.
    unknown_threshold: an image whose unknown score is above it is called
      unknown (1.0: the threshold retrain.py fitted); negative: never.

  Yields:
    (path, result) in input order: result is a `Predictions` (a list of
    (label, float score), best first), or an `errors.DecodeError` for a file
    that cannot be used.
  """
  batch = []

  def run(batch):
    return labelled(model, [path for path, _ in batch],
                    np.stack([pixels for _, pixels in batch]), top_k=top_k,
                    unknown_threshold=unknown_threshold)

  for path, pixels in zip(paths, decode.load_images(paths, model.image_size)):
    if isinstance(pixels, errors.DecodeError):
      yield from run(batch) if batch else ()
      batch = []
      yield path, pixels
      continue
    batch.append((path, pixels.astype(np.float32) / 255.0))
    if len(batch) == batch_size:
      yield from run(batch)
      batch = []
  if batch:
    yield from run(batch)


def labelled(model, names, pixels, *, top_k, unknown_threshold):
  """(name, `Predictions`) for each of float32 pixels [n, height, width, 3]."""
  scores, unknown = model.run(pixels)
  for i, (name, row) in enumerate(zip(names, scores)):
    best = np.argsort(-row, kind='stable')[:top_k]
    yield name, Predictions(
        [(model.labels[j], float(row[j])) for j in best],
        None if unknown is None else float(unknown[i]), unknown_threshold)


def accuracy(model, paths, truth):
  """Share of image files whose top label is the true one.

  Args:
    model: a `LoadedModel`.
    paths: list of image file paths.
    truth: list of str, the true label of each; a file that cannot be decoded,
      or whose label the model does not know, counts as a mistake.

  Returns:
    float in [0, 1]; None for no files.
  """
  if not paths:
    return None
  guesses = [None if isinstance(result, errors.DecodeError) else result[0][0]
             for _, result in label_images(model, paths, top_k=1)]
  return float(np.mean([g == t for g, t in zip(guesses, truth)]))
