"""Shared test fixtures: generated photos, a tiny TF Hub-style backbone, CLI runners.

Nothing here needs a network: the backbone is a SavedModel of global average
pooling (TF Hub's make_image_classifier test does the same), and the photos are
noisy solid colours written into temporary folders.

Mean colours pass whatever the resize, orientation or crop, so the exported
forms are also checked with `layout_module`, a fixed random convolution whose
features depend on where things are, and `write_layout_photos`: gradients and
shapes in non-square JPEGs (some large enough for a reduced-scale decode), in
JPEGs stored sideways with an EXIF orientation, and in PNGs with alpha.
"""

import io
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging
from absl.testing import flagsaver
import numpy as np
from PIL import Image
from PIL import ImageDraw
import pytest
import tensorflow as tf
# tensorflow_hub defines absl flags when it is first imported. Imported inside
# a flagsaver block (run_retrain below), its flags would be removed again when
# the block ends, and a later hub.load would fail; so import it here.
import tensorflow_hub  # pylint: disable=unused-import

import label_image
import retrain

from bottleneck import predict
from bottleneck.features import probe

flags.FLAGS.mark_as_parsed()
# Under app.run absl logs INFO; tests read those lines through caplog.
logging.set_verbosity(logging.INFO)

COLOURS = {'red': (200, 40, 40), 'green': (40, 190, 40), 'blue': (40, 40, 210)}
SHARED_DATA = os.path.join(os.path.dirname(__file__), '..', '..', 'shared',
                           'data')


@pytest.fixture(autouse=True)
def quick_probe(monkeypatch):
  """The cache stage's measurement (features/probe.py), timed as briefly as
  it can be: a run of the tests decides nothing by it, and most tests start
  from an empty cache, so each would measure again."""
  monkeypatch.setattr(probe, 'RATE_SECONDS', 0.0)
  monkeypatch.setattr(probe, 'BATCHES', (1, 4))


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


def save_layout_module(path, *, size=32, seed=0):
  """Saves a feature-vector SavedModel that sees layout, orientation and scale.

  A fixed random 5x5 convolution with stride 3 and a ReLU, flattened, then a
  fixed random projection to 32 features: no symmetry and no pooling, so a
  photo turned, mirrored or shifted by a pixel gives other features.

  Args:
    path: folder to write the SavedModel to.
    size: its input size.
    seed: seeds the weights.

  Returns:
    path, as a str.
  """
  rng = np.random.default_rng(seed)
  kernel = rng.normal(0, 0.3, (5, 5, 3, 6)).astype(np.float32)
  cells = ((size - 5) // 3 + 1) ** 2 * 6
  projection = rng.normal(0, cells ** -0.5, (cells, 32)).astype(np.float32)

  class Layout(tf.Module):

    @tf.function(input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32)])
    def __call__(self, images):
      maps = tf.nn.relu(tf.nn.conv2d(images - 0.5, kernel, strides=3,
                                     padding='VALID'))
      return tf.matmul(tf.reshape(maps, [-1, cells]), projection)

  tf.saved_model.save(Layout(), str(path))
  return str(path)


@pytest.fixture(scope='session')
def layout_module(tmp_path_factory):
  """Path of `save_layout_module`: [b, 32, 32, 3] in [0, 1] -> [b, 32]."""
  return save_layout_module(tmp_path_factory.mktemp('hub') / 'layout')


# Where each class of write_layout_photos has its bright square, as fractions
# of the upright photo's width and height.
LAYOUTS = {'left': (0.05, 0.3), 'right': (0.6, 0.3), 'top': (0.3, 0.05)}
# For each EXIF orientation, how to store an upright photo so that turning it
# as the tag says (ImageOps.exif_transpose) gives it back.
STORED_TURN = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270}


def layout_image(layout, size, seed):
  """An RGB photo: a gradient, random shapes, and a bright square placed by
  layout (a key of LAYOUTS); size is (width, height)."""
  rng = np.random.default_rng(seed)
  width, height = size
  y, x = np.mgrid[0:height, 0:width]
  slopes = rng.uniform(0.3, 1.0, 3) * 255
  pixels = np.stack([slopes[0] * x / width, slopes[1] * y / height,
                     slopes[2] * (1 - x / width) * y / height], axis=-1)
  pixels += rng.normal(0, 8, pixels.shape)
  img = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  for _ in range(3):
    box = sorted(rng.uniform(0, width, 2)) + sorted(rng.uniform(0, height, 2))
    draw.ellipse([box[0], box[2], box[1], box[3]],
                 fill=tuple(int(c) for c in rng.integers(0, 120, 3)))
  left, top = LAYOUTS[layout]
  side = 0.35 * min(width, height)
  draw.rectangle([left * width, top * height, left * width + side,
                  top * height + side], fill=(250, 250, 210))
  return img


def layout_file(img, kind, *, orientation=1):
  """Encodes an upright layout_image as a file of kind 'jpeg', 'png_alpha' or
  'webp'; a JPEG with an orientation other than 1 is stored turned and tagged
  so that EXIF-aware decoders show img."""
  buffer = io.BytesIO()
  if kind == 'png_alpha':
    rgba = np.asarray(img.convert('RGBA')).copy()
    height, width = rgba.shape[:2]
    rgba[..., 3] = np.linspace(40, 255, width).astype(np.uint8)  # A fade.
    rgba[: height // 5, : width // 5, 3] = 0  # A transparent corner.
    Image.fromarray(rgba).save(buffer, 'PNG')
  elif kind == 'webp':
    img.save(buffer, 'WEBP', quality=90)
  elif orientation == 1:
    img.save(buffer, 'JPEG', quality=90)
  else:
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.transpose(STORED_TURN[orientation]).save(
        buffer, 'JPEG', quality=90, exif=exif.tobytes())
  return buffer.getvalue()


def write_layout_photos(root, *, per_class=12, seed=0):
  """Writes per_class layout photos into root/<layout>/ for each of LAYOUTS.

  Sizes vary from 40 to 300 pixels a side, never square; one photo in four is
  stored sideways with an EXIF orientation (2..8 in turn), one in six is a PNG
  with alpha.

  Returns:
    dict from class name to the list of written paths.
  """
  rng = np.random.default_rng(seed)
  written = {}
  for c, layout in enumerate(sorted(LAYOUTS)):
    folder = os.path.join(root, layout)
    os.makedirs(folder, exist_ok=True)
    written[layout] = []
    for i in range(per_class):
      width, height = (int(v) for v in rng.integers(40, 300, 2))
      height += height == width
      img = layout_image(layout, (width, height),
                         seed=seed * 1000 + c * 100 + i)
      kind, orientation = 'jpeg', 1
      if i % 6 == 5:
        kind = 'png_alpha'
      elif i % 4 == 1:
        orientation = 2 + (c * per_class + i) % 7
      path = os.path.join(folder, f'{layout}_{i:03d}_o{orientation}.'
                          f'{"png" if kind == "png_alpha" else "jpg"}')
      with open(path, 'wb') as f:
        f.write(layout_file(img, kind, orientation=orientation))
      written[layout].append(path)
  return written


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


def exported_head(saved_model_dir):
  """The head of an export: float32 features [n, d] -> probabilities [n, c].

  Read from the export's variables: loading the whole SavedModel would also
  restore the backbone's functions, seconds for a Keras one.
  """
  reader = tf.train.load_checkpoint(
      os.path.join(saved_model_dir, 'variables', 'variables'))
  weights, biases = (reader.get_tensor(f'{name}/.ATTRIBUTES/VARIABLE_VALUE')
                     for name in ('head_weights', 'head_biases'))
  return lambda features: tf.nn.softmax(
      np.asarray(features) @ weights + biases).numpy()


def float_export_forms(flags, images, image_bytes):
  """Probabilities of each export that runs the float backbone.

  Args:
    flags: retrain.py's flag values of the run that exported them.
    images: float32 [n, height, width, 3] in [0, 1].
    image_bytes: list of n encoded files of the same images, for
      serving_default.

  Returns:
    {form: float32 [n, classes]} for both SavedModel signatures, the model
    folder's classifier.tflite (label_image.py's fast path), the frozen graph
    and the float32 .tflite.
  """
  signatures = tf.saved_model.load(flags['saved_model_dir']).signatures
  folder_model, note = predict.load_model_folder(flags['saved_model_dir'])
  assert note is None and folder_model.source.endswith('.tflite (LiteRT)')
  return {
      'serving_default': signatures['serving_default'](
          image_bytes=tf.constant(image_bytes))['probabilities'].numpy(),
      'serving_images': signatures['serving_images'](
          images=tf.constant(images))['probabilities'].numpy(),
      'classifier.tflite': folder_model.classify(images),
      'frozen graph': predict.load_frozen_graph(
          flags['output_graph'], flags['output_labels']).classify(images),
      'tflite float32': predict.load_tflite(
          flags['tflite_output_file']).classify(images),
  }


def check_int8_run_forms(flags, float_backbone, int8_backbone):
  """Asserts that every form an int8 run exported gives its head's answer.

  On 3 random images: the forms of the float backbone (float_export_forms)
  give the head's answer on float_backbone's features, the int8 .tflite on
  int8_backbone's; the answers are neither uniform nor saturated, so that a
  small difference would show.

  Args:
    flags: retrain.py's flag values of a --backbone_precision int8 run with
      every output.
    float_backbone: a `backbones.Backbone` loaded as the run loaded it.
    int8_backbone: its int8 copy (`quantize.int8_backbone`).
  """
  head = exported_head(flags['saved_model_dir'])
  pixels = np.random.default_rng(0).integers(
      0, 256, (3, *float_backbone.image_size, 3), np.uint8)
  images = pixels.astype(np.float32) / 255
  expected = head(float_backbone.features(images))
  # Below 0.999, a logit that moves by 0.1 still moves a probability by 1e-4.
  assert 0.05 < np.ptp(expected, axis=1).min() <= np.ptp(expected).max() < 0.999
  check_forms_give(flags, pixels, expected, head(int8_backbone.features(images)))


def check_forms_give(flags, pixels, expected, expected_int8):
  """Asserts the answers of every exported form of a run on some images.

  Args:
    flags: retrain.py's flag values of a run with every output, int8 too.
    pixels: uint8 [n, height, width, 3] images.
    expected: float32 [n, classes]: what the float forms must answer.
    expected_int8: float32 [n, classes]: what the int8 .tflite must answer.
  """
  images = pixels.astype(np.float32) / 255
  forms = float_export_forms(
      flags, images, [tf.io.encode_png(p).numpy() for p in pixels])
  for form, probabilities in forms.items():
    np.testing.assert_allclose(probabilities, expected, atol=1e-4,
                               err_msg=form)
  np.testing.assert_allclose(
      predict.load_tflite(flags['tflite_int8_output_file']).classify(images),
      expected_int8, atol=1e-5)


def clusters(rng, labels, dim=16, num_classes=4, spread=3.0):
  """float32 [n, dim] vectors for the head tests: a unit normal around each
  class's centre (labels int [n])."""
  centres = (np.eye(num_classes, dim) * spread if num_classes <= dim else
             rng.normal(0, spread / 2, (num_classes, dim)))
  return (centres[labels] + rng.normal(0, 1, (len(labels), dim))).astype(
      np.float32)


def head_accuracy(head, vectors, labels):
  """Accuracy of a `head.Head` on float32 vectors [n, d], int labels [n]."""
  return np.mean(head.probabilities(vectors).argmax(axis=1) == labels)
