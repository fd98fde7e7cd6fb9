"""The Python API, for notebooks: retrain and label without flags.

  import bottleneck
  summary = bottleneck.retrain(image_dir='photos/', saved_model_dir='model/')
  model = bottleneck.load('model/')
  for result in model.predict(['a.jpg', open('b.png', 'rb').read()]):
    print(result.unknown, result[:2])

Options are retrain.py's flag names, with the same defaults
(`config.RetrainConfig`) and the same checks. Errors are raised, not printed:
`errors.BottleneckError` for what the user can fix. Progress goes to the
`absl` log at INFO, which a notebook shows under the cell; the progress lines
are plain lines every 10 s, not a redrawn bar, because a notebook's stderr is
not a terminal (see `progress`).
"""

import contextlib
import dataclasses
import io
import os

from absl import logging
import numpy as np
from PIL import Image

from bottleneck import config as config_lib
from bottleneck import errors
from bottleneck import predict
from bottleneck.data import decode
from bottleneck.run import cli


def retrain(image_dir, *, verbose=True, **options):
  """Runs retrain.py's whole pipeline; see README.md, Python API.

  Args:
    image_dir: folder with one subfolder of images per class.
    verbose: log each stage at INFO (True), or only warnings.
    **options: any of retrain.py's flags by name (saved_model_dir='model/',
      image_sizes='224,320', fine_tune_blocks=1, ...).

  Returns:
    The run's `pipeline.RunSummary` (labels, split sizes, test accuracy,
    exports and their accuracies, skipped files), with saved_model_dir set.

  Raises:
    errors.UsageError: an option that retrain.py does not have, or a value it
      refuses.
    errors.BottleneckError: whatever retrain.py would exit non-zero for.
  """
  names = {f.name for f in dataclasses.fields(config_lib.RetrainConfig)}
  unknown = sorted(set(options) - names)
  if unknown:
    raise errors.UsageError(
        f'retrain() has no option {", ".join(unknown)}; its options are '
        "retrain.py's flag names (python retrain.py --helpfull lists them).")
  config = config_lib.RetrainConfig(image_dir=str(image_dir), **options)
  # Imported here: it imports TensorFlow, which `load` does not need.
  from bottleneck.run import pipeline  # pylint: disable=g-import-not-at-top
  with _logging_at(logging.INFO if verbose else logging.WARNING):
    summary = pipeline.retrain(config)
  return dataclasses.replace(summary, saved_model_dir=config.saved_model_dir)


def load(path=config_lib.DEFAULT_SAVED_MODEL_DIR, *, labels=None):
  """Loads an export of retrain.py for labelling.

  Args:
    path: a model folder (its classifier.tflite runs, without importing
      TensorFlow), a .tflite file, or retrain.py's frozen graph (.pb).
    labels: a labels file, for a .tflite without attached labels or a frozen
      graph (default: the folder's own; for a .pb, retrain.py's default).

  Returns:
    A `Classifier`.

  Raises:
    errors.ModelError: the path is not such an export.
  """
  path = os.fspath(path)
  if path.endswith('.tflite'):
    model = predict.load_tflite(path, labels_path=labels)
  elif path.endswith('.pb'):
    model = predict.load_frozen_graph(
        path, labels or config_lib.RETRAIN_DEFAULTS['output_labels'])
  else:
    model, note = predict.load_model_folder(path)
    if note:
      logging.warning('%s', note)
  return Classifier(model)


class Classifier:
  """A loaded model: `labels`, and `predict` for images of any kind.

  Attributes:
    labels: list of str, class-index order.
    image_size: (height, width) the model takes.
  """

  def __init__(self, model):
    self._model = model
    self.labels = list(model.labels)
    self.image_size = tuple(model.image_size)

  def __repr__(self):
    return (f'<bottleneck.Classifier of {len(self.labels)} classes: '
            f'{self._model.source}>')

  def predict(self, images, top_k=config_lib.DEFAULT_TOP_K,
              unknown_threshold=config_lib.DEFAULT_UNKNOWN_THRESHOLD,
              batch_size=config_lib.DEFAULT_BATCH_SIZE):
    """Labels images.

    Args:
      images: one image or a list of them; an image is a file path (str or
        os.PathLike), the bytes of an image file, a PIL image, or a numpy
        array [height, width, 3] (uint8, or float in [0, 1]) of any size.
      top_k: labels kept per image.
      unknown_threshold: as label_image.py's flag (1.0: the fitted threshold;
        negative: never unknown).
      batch_size: images per model call.

    Returns:
      A list with one `predict.Predictions` per image: a list of (label,
      score) best first, whose `.unknown` is True for an image that looks
      like none of the classes (and `.unknown_score` its score).

    Raises:
      errors.DecodeError: an image cannot be decoded; it is named.
    """
    if not isinstance(images, (list, tuple)):
      images = [images]
    results = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      pixels = np.stack([self._pixels(image, start + i)
                         for i, image in enumerate(chunk)])
      results += [result for _, result in predict.labelled(
          self._model, range(len(chunk)), pixels.astype(np.float32) / 255,
          top_k=top_k, unknown_threshold=unknown_threshold)]
    return results

  def _pixels(self, image, index):
    """One image of any accepted kind -> uint8 [height, width, 3]."""
    if isinstance(image, (str, os.PathLike)):
      return decode.load_image(os.fspath(image), self.image_size)
    if isinstance(image, (bytes, bytearray, memoryview)):
      return decode.decode_image(bytes(image), self.image_size,
                                 name=f'image {index} (bytes)')
    if isinstance(image, Image.Image):
      buffer = io.BytesIO()
      image.save(buffer, format='PNG')
      return decode.decode_image(buffer.getvalue(), self.image_size,
                                 name=f'image {index} (PIL)')
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or not array.size:
      raise errors.DecodeError(f'image {index}', (
          f'an array of shape {array.shape}; pass [height, width, 3] (RGB) '
          'or [height, width, 4] (RGBA)'))
    if array.dtype != np.uint8:
      array = np.clip(np.round(array.astype(np.float64) * 255), 0, 255)
    return self._pixels(Image.fromarray(array.astype(np.uint8)), index)


@contextlib.contextmanager
def _logging_at(level):
  """absl logs at `level` while the run lasts, TensorFlow's own kept quiet."""
  before = logging.get_verbosity()
  logging.set_verbosity(level)
  cli.quiet_library_logs()
  try:
    yield
  finally:
    logging.set_verbosity(before)
