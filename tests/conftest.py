"""Shared test fixtures: generated photos, a tiny TF Hub-style backbone, CLI runners.

Nothing here needs a network: the backbone is a SavedModel of global average
pooling (TF Hub's make_image_classifier test does the same), and the photos are
noisy solid colours written into temporary folders.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging
from absl.testing import flagsaver
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
# tensorflow_hub defines absl flags when it is first imported. Imported inside
# a flagsaver block (run_retrain below), its flags would be removed again when
# the block ends, and a later hub.load would fail; so import it here.
import tensorflow_hub  # pylint: disable=unused-import

import label_image
import retrain

flags.FLAGS.mark_as_parsed()
# Under app.run absl logs INFO; tests read those lines through caplog.
logging.set_verbosity(logging.INFO)

COLOURS = {'red': (200, 40, 40), 'green': (40, 190, 40), 'blue': (40, 40, 210)}
SHARED_DATA = os.path.join(os.path.dirname(__file__), '..', '..', 'shared',
                           'data')


def write_photos(root, colours=None, *, per_class=20, size=(48, 64), seed=0,
                 ext='.jpg'):
  """Writes per_class noisy solid-colour photos into root/<class>/.

  Returns:
    dict from class name to the list of written paths.
  """
  rng = np.random.default_rng(seed)
  written = {}
  for name, colour in (colours or COLOURS).items():
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    written[name] = []
    for i in range(per_class):
      pixels = np.clip(np.array(colour) + rng.normal(0, 20, (*size, 3)), 0, 255)
      path = os.path.join(folder, f'photo_{i:03d}{ext}')
      Image.fromarray(pixels.astype(np.uint8)).save(path)
      written[name].append(path)
  return written


def save_feature_module(path, *, size=None, reduce=tf.reduce_mean):
  """Saves the smallest model that follows the image feature-vector contract.

  Args:
    path: folder to write the SavedModel to.
    size: its fixed input size, or None to take any size.
    reduce: pools float32 [b, size, size, 3] over axes [1, 2] to [b, 3].

  Returns:
    path, as a str.
  """
  class Pooling(tf.Module):

    @tf.function(input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32)])
    def __call__(self, images):
      return reduce(images, axis=[1, 2])

  tf.saved_model.save(Pooling(), str(path))
  return str(path)


@pytest.fixture(scope='session')
def hub_module(tmp_path_factory):
  """Path of a TF Hub-style SavedModel: [b, 32, 32, 3] in [0, 1] -> [b, 3]."""
  return save_feature_module(tmp_path_factory.mktemp('hub') / 'gap', size=32)


def output_flags(root):
  """Every output flag of retrain.py, pointed into the folder root."""
  return dict(bottleneck_dir=str(root / 'bottlenecks'),
              saved_model_dir=str(root / 'model'),
              output_labels=str(root / 'labels.txt'),
              output_graph=str(root / 'graph.pb'),
              summaries_dir=str(root / 'logs'))


@pytest.fixture
def outputs(tmp_path):
  """output_flags(tmp_path)."""
  return output_flags(tmp_path)


@pytest.fixture
def photo_flags(tmp_path, hub_module, outputs):
  """retrain.py flags for write_photos(tmp_path / 'photos'), outputs in tmp."""
  write_photos(tmp_path / 'photos')
  return dict(image_dir=str(tmp_path / 'photos'), tfhub_module=hub_module,
              **outputs)


def model_files(outputs):
  """{path: bytes} of everything a run published: model, labels, graph."""
  files = {}
  for root, _, names in os.walk(outputs['saved_model_dir']):
    for name in names:
      with open(os.path.join(root, name), 'rb') as f:
        files[os.path.join(root, name)] = f.read()
  for name in ('output_labels', 'output_graph'):
    with open(outputs[name], 'rb') as f:
      files[outputs[name]] = f.read()
  return files


def run_retrain(**flag_values):
  """Runs retrain.main() in-process with these flags; returns the exit code."""
  with flagsaver.flagsaver(**flag_values):
    return retrain.main(['retrain.py'])


def run_label_image(*extra_args, **flag_values):
  """Runs label_image.main() in-process; returns the exit code."""
  with flagsaver.flagsaver(**flag_values):
    return label_image.main(['label_image.py', *extra_args])
