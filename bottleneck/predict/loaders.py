"""Load an export of retrain.py as a `LoadedModel`.

Three kinds of export: the SavedModel folder and the .tflite file (labels,
input size and preprocessing come from the model itself), and retrain.py's
frozen graph with its labels file (input float32 [batch, height, width, 3] in
[0, 1]).

TensorFlow is imported only to load a SavedModel or a frozen graph: labelling
with a .tflite does not pay its import (seconds; README.md, Performance, has the
measured figure). `load_model_folder` therefore runs the folder's
classifier.tflite, the same backbone and head as its SavedModel (see
`formats`), and loads the SavedModel only from a folder exported before that
file existed, or whose backbone could not be converted.
"""

import dataclasses
import hashlib
import os

import numpy as np

from bottleneck import errors
from bottleneck.export import formats
from bottleneck.features import tflite


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A classifier ready to use.

  Attributes:
    labels: list of str, class-index order.
    image_size: (height, width) it takes.
    run: float32 numpy [batch, height, width, 3] in [0, 1] ->
      (float32 numpy [batch, len(labels)] probabilities, float32 [batch]
      "unknown" scores (export/outputs.py), or None for a model without
      them).
    source: what runs, for a log line ('model.tflite (LiteRT)').
  """
  labels: list
  image_size: tuple
  run: object
  source: str = ''

  def classify(self, batch):
    """images -> float32 [batch, len(labels)] probabilities."""
    return self.run(batch)[0]


def load_saved_model(path):
  """Loads a SavedModel folder written by retrain.py.

  Raises:
    errors.ModelError: the folder is missing or is not such an export.
  """
  path = _model_folder(path)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(os.path.join(path, 'saved_model.pb')):
    raise errors.ModelError(f'{path} is not a SavedModel (no saved_model.pb).')
  meta = _folder_metadata(path)
  for key in ('labels', 'image_size'):
    if key not in meta:
      raise errors.ModelError(
          f'{path}: its assets/{formats.METADATA_FILE} has no {key!r} (edited '
          'or damaged?). Export the model again with retrain.py.')
  missing = [name for name in ('variables/variables.index',
                                'assets/' + formats.LABELS_FILE)
             if not os.path.isfile(os.path.join(path, name))]
  if missing:
    raise errors.ModelError(
        f'{path} is incomplete: {" and ".join(missing)} missing (a half-copied '
        'export?). Copy the whole folder again, or export it again with '
        'retrain.py.')
  try:
    signature = tf.saved_model.load(path).signatures['serving_images']
  # TF's checkpoint reader raises IndexError for a truncated variables file.
  except (KeyError, OSError, ValueError, tf.errors.OpError, IndexError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else e
    raise errors.ModelError(
        f'Cannot load the model in {path}: {first_line}') from e

  def run(batch):
    result = signature(images=tf.constant(batch))
    unknown = result.get(formats.UNKNOWN_SCORE)
    return (result[formats.PROBABILITIES].numpy(),
            None if unknown is None else unknown.numpy())

  return _checked(LoadedModel(list(meta['labels']), tuple(meta['image_size']),
                              run, f'the SavedModel {path} (TensorFlow)'),
                  path)


def load_model_folder(path):
  """Loads retrain.py's model folder: its classifier.tflite if it has one.

  Returns:
    (`LoadedModel`, note): note is None, or, for a folder of an earlier
    version (no classifier.tflite: the SavedModel is loaded), one line that
    says so.

  Raises:
    errors.ModelError: the folder is missing or is not such an export, or its
      classifier.tflite is damaged (never a silent fall back to TensorFlow).
  """
  given, path = path, _model_folder(path)
  classifier = os.path.join(path, formats.CLASSIFIER_FILE)
  if not os.path.lexists(classifier):
    meta = formats.read_metadata(path)
    note = None if meta and formats.CLASSIFIER_DIGEST in meta else (
        f'{given} has no {formats.CLASSIFIER_FILE} (exported by an earlier '
        'version), so its SavedModel was loaded with TensorFlow, which takes '
        'seconds; export it again with retrain.py to label without '
        'TensorFlow.')
    return load_saved_model(path), note
  meta = _folder_metadata(path)
  data = _read(classifier)
  if hashlib.sha256(data).hexdigest() != meta.get(formats.CLASSIFIER_DIGEST):
    raise errors.ModelError(
        f'{classifier} is damaged or from another export: its SHA-256 is not '
        f'the one in assets/{formats.METADATA_FILE}. Copy the whole folder '
        'again, or export it again with retrain.py.')
  return _tflite_model(data, name=classifier), None


def load_frozen_graph(graph_path, labels_path, *, input_layer='Placeholder',
                      output_layer='final_result'):
  """Loads a frozen GraphDef (retrain.py's --output_graph) and its labels.

  Raises:
    errors.ModelError: a file is missing or not what it should be.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  try:
    with open(graph_path, 'rb') as f:
      graph_def = tf.compat.v1.GraphDef.FromString(f.read())
    with open(labels_path, 'rb') as f:
      labels = formats.labels_from_bytes(f.read())
  except OSError as e:
    raise errors.ModelError(f'Cannot read {e.filename}: {e.strerror}.') from e
  except message.DecodeError as e:
    raise errors.ModelError(f'{graph_path} is not a frozen GraphDef: {e}') from e

  def imports():
    tf.compat.v1.import_graph_def(graph_def, name='')

  try:
    wrapped = tf.compat.v1.wrap_function(imports, [])
    inputs = wrapped.graph.get_tensor_by_name(input_layer + ':0')
    outputs = wrapped.graph.get_tensor_by_name(output_layer + ':0')
    fn = wrapped.prune(inputs, outputs)
  except (KeyError, ValueError, tf.errors.OpError) as e:
    raise errors.ModelError(
        f'{graph_path} has no usable {input_layer!r} -> {output_layer!r} '
        f'(--input_layer, --output_layer): {e}') from e
  shape = inputs.shape
  if shape.rank != 4 or not shape[1] or not shape[2]:
    raise errors.ModelError(f'{graph_path}: input {input_layer} has shape '
                            f'{shape}, not [batch, height, width, 3].')

  def run(batch):  # retrain.py's contract has no "unknown" score.
    return fn(tf.constant(batch)).numpy(), None

  return _checked(LoadedModel(labels, (int(shape[1]), int(shape[2])), run,
                              f'the frozen graph {graph_path} (TensorFlow)'),
                  graph_path)


def load_tflite(path, *, labels_path=None):
  """Loads a .tflite classifier: retrain.py's, or another image classifier.

  Args:
    path: the .tflite file.
    labels_path: a labels file (one label per line) to use instead of the
      labels.txt attached to the model; needed for a model without one.

  Raises:
    errors.ModelError: a file is missing or not what it should be.
  """
  data = _read(path)
  labels = labels_path and formats.labels_from_bytes(_read(labels_path))
  return _tflite_model(data, name=path, labels=labels)


def _tflite_model(data, *, name, labels=None):
  """A `LoadedModel` of a .tflite's bytes; labels None: the attached ones."""
  runner = tflite.Runner(data, name=name)
  attached = tflite.attached_files(data)
  if labels is None and formats.LABELS_FILE not in attached:
    raise errors.ModelError(
        f'{name} carries no {formats.LABELS_FILE} (it was not written by '
        'retrain.py); pass its labels file with --labels.')
  if labels is None:
    labels = formats.labels_from_bytes(attached[formats.LABELS_FILE])
  def run(batch):
    probabilities, extra = runner.run(batch)
    return probabilities, extra.get(formats.UNKNOWN_SCORE)

  return _checked(LoadedModel(labels, runner.image_size, run,
                              f'{name} (LiteRT)'), name)


def _read(path):
  """A file's bytes; errors.ModelError if it cannot be read."""
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise errors.ModelError(f'Cannot read {e.filename}: {e.strerror}.') from e


def _model_folder(path):
  """The export folder `path` resolved; errors.ModelError if it is missing."""
  if not os.path.isdir(path):
    raise errors.ModelError(
        f'Model folder {path} not found. Pass --saved_model_dir the folder that '
        'retrain.py exported to, or --graph and --labels for a frozen graph.')
  # A published model folder is a link that a new export replaces at once:
  # resolve it once, so that the metadata and the model come from one export.
  return os.path.realpath(path)


def _folder_metadata(path):
  """assets/bottleneck.json as a dict; errors.ModelError if it is missing or
  from a newer version."""
  meta = formats.read_metadata(path)
  if meta is None:
    raise errors.ModelError(
        f'{path} is not an export of retrain.py: its assets/'
        f'{formats.METADATA_FILE} is missing or is not a JSON object.')
  if meta.get('format', 0) > formats.FORMAT_VERSION:
    raise errors.ModelError(
        f'{path} was exported by a newer version (format {meta["format"]}); '
        'update bottleneck to read it.')
  return meta


def _checked(model, where):
  """Runs the model once to check that labels and outputs agree."""
  probe = np.zeros([1, *model.image_size, 3], np.float32)
  classes = model.classify(probe).shape[-1]
  if classes != len(model.labels):
    raise errors.ModelError(
        f'{where}: the model gives {classes} classes but its labels file has '
        f'{len(model.labels)} labels; use the labels written with this model.')
  return model
