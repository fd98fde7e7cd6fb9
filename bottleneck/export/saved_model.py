"""Backbone + head -> a SavedModel, a labels file and a frozen graph.

The SavedModel holds everything needed to label a photo: the backbone, its
preprocessing, the head and the labels. Its signatures:

  serving_default: image_bytes string [batch] (JPEG, PNG, BMP, GIF, WebP files)
                   -> probabilities float32 [batch, classes] and, when the run
                   fitted one, unknown_score float32 [batch] (`outputs`);
                   decodes as the cache stage does (`graph_decode`)
  serving_images:  images float32 [batch, height, width, 3] in [0, 1]
                   -> the same outputs

`labels()` returns the labels as a string tensor [classes], and its assets/
folder holds labels.txt and bottleneck.json (see `formats`). The SavedModel
always runs the float32 backbone, also when the head was trained on int8
vectors; bottleneck.json then says so. The .tflite forms are `export_tflite`'s.

The frozen graph keeps retrain.py's contract: input `Placeholder`, float32
[batch, height, width, 3] in [0, 1], output `final_result` (--final_tensor_name),
so clients written for retrain.py keep working.

Every output is published atomically (see `publish`): a reader sees the
previous complete model or the new complete one.
"""

import json
import os

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import

from bottleneck import errors
from bottleneck.export import formats
from bottleneck.export import graph_decode
from bottleneck.export import outputs
from bottleneck import publish


class Classifier(outputs.HeadConstants):
  """The exported model: backbone features -> softmax head (`outputs`)."""

  def __init__(self, backbone, head, labels, asset_dir):
    super().__init__(head)
    self._labels = list(labels)
    self.backbone = backbone.module
    self._features = backbone.features
    self._size = backbone.image_size
    self.labels_file = tf.saved_model.Asset(
        os.path.join(asset_dir, formats.LABELS_FILE))
    self.metadata_file = tf.saved_model.Asset(
        os.path.join(asset_dir, formats.METADATA_FILE))

  @tf.function(input_signature=[])
  def labels(self):
    """string [classes]: the label of each class, in class-index order."""
    return tf.constant(self._labels)

  def outputs(self, images):
    """float32 [batch, height, width, 3] in [0, 1] -> `outputs`' dict."""
    return self.head_outputs(self._features(images))

  def decode(self, image_bytes):
    """string [batch] of image files -> float32 [batch, height, width, 3].

    The cache stage's pixels (see `graph_decode`), so that serving_default
    answers as label_image.py does for the same file.
    """
    return graph_decode.decode_images(image_bytes, self._size)


def write_model(backbone, head, labels, staging, *, metadata, trained_on=None):
  """Writes the SavedModel (see the module docstring) into staging/model.

  Args:
    backbone: the float32 `backbones.Backbone` the model runs.
    head: a `head.Head`.
    labels: list of str, in class-index order.
    staging: an empty folder (`publish.staging_dir`); the caller removes it.
    metadata: dict of JSON values added to assets/bottleneck.json.
    trained_on: the `backbones.Backbone` whose vectors the head was trained
      on, if not `backbone` (an int8 copy of it); its identity and precision
      are recorded.

  Returns:
    The path of the SavedModel folder, to be published with `publish_model`.
  """
  trained_on = trained_on or backbone
  asset_dir = os.path.join(staging, 'staged_assets')
  os.makedirs(asset_dir)
  _write_text(os.path.join(asset_dir, formats.LABELS_FILE),
              formats.labels_text(labels))
  _write_text(os.path.join(asset_dir, formats.METADATA_FILE), json.dumps(dict(
      metadata, **formats.export_metadata(
          labels=labels, backbone=backbone, trained_on=trained_on,
          computes_features_in=backbone.precision)), indent=2))
  model = Classifier(backbone, head, labels, asset_dir)
  height, width = backbone.image_size

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def serve_bytes(image_bytes):
    return model.outputs(model.decode(image_bytes))

  @tf.function(input_signature=[
      tf.TensorSpec([None, height, width, 3], tf.float32)])
  def serve_images(images):
    return model.outputs(images)

  model_dir = os.path.join(staging, 'model')
  tf.saved_model.save(model, model_dir, signatures={
      'serving_default': serve_bytes, 'serving_images': serve_images})
  return model_dir


def publish_model(model_dir, saved_model_dir, *, extra_files):
  """Adds files to a written SavedModel, and publishes it atomically.

  Args:
    model_dir: from `write_model`.
    saved_model_dir: destination; an earlier export there is replaced
      atomically (see `publish.replace_dir`).
    extra_files: {file name: bytes} written at the model folder's top level
      (metrics.json).
  """
  for name, data in extra_files.items():
    with open(os.path.join(model_dir, name), 'wb') as f:
      f.write(data)
  _fsync_tree(model_dir)
  publish.replace_dir(model_dir, saved_model_dir)


def check_destinations(saved_model_dir, files):
  """Refuses outputs that would replace something that is not an output.

  retrain.py replaces its previous export; it must never delete a folder of
  the user's that --saved_model_dir happens to name.

  Args:
    saved_model_dir: the SavedModel folder to be written.
    files: paths of the files to be written ('' for none).

  Raises:
    errors.UsageError: saved_model_dir holds something other than an export,
      or a file path is a folder.
  """
  if os.path.exists(saved_model_dir) and (
      not os.path.isdir(saved_model_dir) or
      (os.listdir(saved_model_dir) and not os.path.isfile(
          os.path.join(saved_model_dir, 'assets', formats.METADATA_FILE)))):
    raise errors.UsageError(
        f'--saved_model_dir {saved_model_dir} exists and is not a model '
        'exported by retrain.py; it would be replaced. Pass a new or empty '
        'folder.')
  for path in files:
    if path and os.path.isdir(path):
      raise errors.UsageError(f'{path} is a folder; pass a file path.')


def _fsync_tree(path):
  """Makes every file and folder below `path` durable before it is published."""
  for root, _, files in os.walk(path):
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        os.fsync(f.fileno())
    publish.fsync_dir(root)


def frozen_graph(backbone, head, *, final_tensor_name):
  """A frozen GraphDef with retrain.py's input and output names, as bytes.

  Args:
    backbone: a `backbones.Backbone`.
    head: a `head.Head`.
    final_tensor_name: name of the output node (retrain.py's 'final_result').
  """
  weights = tf.constant(head.weights)
  biases = tf.constant(head.biases)
  height, width = backbone.image_size

  # The input spec's name becomes the placeholder's node name.
  @tf.function(input_signature=[tf.TensorSpec(
      [None, height, width, 3], tf.float32, name='Placeholder')])
  def classify(images):
    logits = tf.matmul(backbone.features(images), weights) + biases
    return tf.identity(tf.nn.softmax(logits), name=final_tensor_name)

  frozen = convert_to_constants.convert_variables_to_constants_v2(
      classify.get_concrete_function())
  return frozen.graph.as_graph_def().SerializeToString()


def _write_text(path, text):
  with open(path, 'wb') as f:
    f.write(formats.text_bytes(text))
