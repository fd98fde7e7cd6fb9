"""--image_sizes: one backbone pass per size, concatenated, through every stage.

Each pass must be the very pass of a backbone of that size alone, on the
images resized inside the graph; the sizes and their order are part of the
backbone's identity (one size keeps the identity of before); every exported
form computes the concatenated vector, int8 included; bad values are one line.
"""

import json
import logging
import os
import sys

import conftest
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-direct-tensorflow-import

from bottleneck import config
from bottleneck import errors
from bottleneck.export import formats
from bottleneck.features import backbones
from bottleneck.features import quantize
from bottleneck.run import release

LAYERS = 'block_16_project_BN,out_relu'  # 320 + 1280 features a pass.
WEIGHTS = os.path.join(conftest.SHARED_DATA, 'weights',
                       'mobilenet_v2_1.0_224_no_top.weights.h5')


def read_json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def resized(images, size):
  """What a pass of `size` must see: bilinear, no antialiasing (TFLite's)."""
  return tf.image.resize(images, (size, size), method='bilinear',
                         antialias=False)


def _mobilenet_v2(sizes):
  return backbones.load_backbone('keras:mobilenet_v2', keras_weights='none',
                                 image_sizes=sizes, seed=0, layers='last')


@pytest.fixture(scope='module')
def any_size_module(tmp_path_factory):
  """A feature-vector SavedModel that takes images of any size: [b, 3]."""
  return conftest.save_feature_module(
      tmp_path_factory.mktemp('any') / 'module', reduce=tf.reduce_max)


def test_each_size_is_the_pass_of_its_own_backbone_concatenated():
  two, backwards = _mobilenet_v2((32, 48)), _mobilenet_v2((48, 32))
  single = {size: _mobilenet_v2((size,)) for size in (32, 48)}
  assert two.image_size == backwards.image_size == (48, 48)
  assert two.image_sizes == (32, 48) and single[32].image_sizes == (32,)
  assert two.feature_dim == single[32].feature_dim + single[48].feature_dim
  assert two.feature_dim == 2 * 1280 and two.groups == (1280, 1280)
  images = np.random.default_rng(0).random((2, 48, 48, 3), np.float32)
  small, large = single[32].features(resized(images, 32)), single[48].features(
      images)
  # Random weights give tiny features; each is compared to its own scale.
  for backbone, parts in ((two, (small, large)), (backwards, (large, small))):
    expected = np.concatenate(parts, axis=1)
    np.testing.assert_allclose(backbone.features(images), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  # The check can tell resizes apart: an antialiased one gives other features.
  other = single[32].features(tf.image.resize(images, (32, 32),
                                              antialias=True)).numpy()
  assert np.abs(other - small).max() > 1e-3 * np.abs(small).max()
  # Another order gives other vectors: another identity, so another cache.
  identities = {b.identity for b in (two, backwards, *single.values())}
  assert len(identities) == 4
  # One size keeps the identity computed before --image_sizes existed (as
  # test_backbones' check of the last layer), so old caches stay valid.
  assert single[32].identity == (
      '2caa8c9b322ee77292798d54f6a890b57547f0f60ea1ef4eb14d5385e158f1dc')


def test_a_savedmodel_is_called_at_each_size(any_size_module, hub_module):
  backbone = backbones.load_backbone(any_size_module, image_sizes=(24, 16))
  assert backbone.image_size == (24, 24) and backbone.feature_dim == 6
  images = np.random.default_rng(1).random((3, 24, 24, 3), np.float32)
  np.testing.assert_allclose(backbone.features(images), np.concatenate(
      [images.max(axis=(1, 2)), resized(images, 16).numpy().max(axis=(1, 2))],
      axis=1), rtol=1e-6)
  assert backbone.identity != backbones.load_backbone(
      any_size_module, image_sizes=(24,)).identity
  with pytest.raises(errors.ModelError, match=r'cannot take float32 images '
                     r'\[batch, 16, 16, 3\] or \[batch, 32, 32, 3\]'):
    backbones.load_backbone(hub_module, image_sizes=(32, 16))


def test_config_reads_the_sizes_and_the_old_flag():
  def sizes(**kwargs):
    return config.RetrainConfig(image_dir='photos', **kwargs).sizes
  assert sizes() == ()
  assert sizes(image_sizes=' 224, 320 ') == (224, 320)
  assert sizes(image_size=299) == sizes(image_sizes='299') == (299,)
  assert sizes(image_size=224, image_sizes='224') == (224,)


def int8_ops(data):
  """(names of all the ops of a .tflite, of those that compute in float)."""
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
  names = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
           for graph in model.subgraphs for op in graph.operators]
  return names, quantize.float_ops(data)


def test_every_form_computes_the_passes_int8_included(tmp_path, capsys):
  if not os.path.isfile(WEIGHTS):  # Fails, never skips, as test_real_data.
    pytest.fail(f'{WEIGHTS} is missing: this test needs ../shared/data beside '
                'the repository (see ../shared/data/README.md).')
  # An int8 run writes every form: the SavedModel and the frozen graph run
  # the float backbone, one .tflite each backbone.
  photos = conftest.write_photos(tmp_path / 'photos', per_class=8)
  flags = dict(image_dir=str(tmp_path / 'photos'),
               tfhub_module='keras:mobilenet_v2', keras_weights=WEIGHTS,
               image_sizes='48,64', bottleneck_layers=LAYERS,
               backbone_precision='int8', how_many_training_steps=10,
               tflite_output_file=str(tmp_path / 'model.tflite'),
               tflite_int8_output_file=str(tmp_path / 'model_int8.tflite'),
               **conftest.output_flags(tmp_path))
  assert conftest.run_retrain(**flags) == 0
  metrics = read_json(os.path.join(flags['saved_model_dir'],
                                   release.METRICS_FILE))
  assert metrics['backbone']['image_sizes'] == [48, 64]
  assert metrics['backbone']['image_size'] == [64, 64]
  assert metrics['backbone']['feature_dim'] == 2 * (320 + 1280)
  assert set(metrics['exports']) == {
      'saved_model', 'saved_model_tflite', 'frozen_graph', 'tflite_float32',
      'tflite_int8'}
  meta = read_json(os.path.join(flags['saved_model_dir'], 'assets',
                                formats.METADATA_FILE))
  assert (meta['image_sizes'], meta['image_size']) == ([48, 64], [64, 64])

  float_backbone = backbones.load_backbone(
      'keras:mobilenet_v2', keras_weights=WEIGHTS, image_sizes=(48, 64),
      layers=LAYERS)
  int8 = quantize.int8_backbone(float_backbone, flags['bottleneck_dir'],
                                calibration=lambda: pytest.fail('converted'))
  # The 48 px pass resizes inside the int8 model, in int8.
  ops, float_ops = int8_ops(int8.tflite_model)
  assert 'RESIZE_BILINEAR' in ops and 'RESIZE_BILINEAR' not in float_ops
  conftest.check_int8_run_forms(flags, float_backbone, int8)

  # label_image.py needs no new flag (its SavedModel path is serving_images,
  # checked above).
  paths = [photos[name][0] for name in sorted(photos)]
  capsys.readouterr()
  assert conftest.run_label_image(
      *paths[1:], image=paths[0], top_k=1, output_format='json',
      tflite_model=flags['tflite_int8_output_file']) == 0
  assert len(json.loads(capsys.readouterr().out)) == len(paths)


def test_the_cache_keeps_each_list_of_sizes_apart(tmp_path, any_size_module,
                                                  caplog):
  caplog.set_level(logging.INFO)
  conftest.write_photos(tmp_path / 'photos')
  flags = dict(image_dir=str(tmp_path / 'photos'),
               tfhub_module=any_size_module, image_sizes='16,24',
               **conftest.output_flags(tmp_path))
  assert conftest.run_retrain(**flags) == 0
  assert 'reused 0, computed 60' in caplog.text
  assert 'input 24x24 (passes at 16 and 24 px), 6 features' in caplog.text
  caplog.clear()
  # Nothing changed: nothing is computed, and the model is kept.
  assert conftest.run_retrain(**flags) == 0
  assert 'reused 60, computed 0' in caplog.text and 'keeping it' in caplog.text
  caplog.clear()
  # Other sizes, or the same in another order, are other vectors.
  assert conftest.run_retrain(**dict(flags, image_sizes='24,16')) == 0
  assert 'reused 0, computed 60' in caplog.text
  assert 'keeping it' not in caplog.text
  h5_files = [n for n in os.listdir(flags['bottleneck_dir'])
              if n.endswith('.h5')]
  assert len(h5_files) == 2


@pytest.mark.parametrize('changes, message', [
    (dict(image_sizes='0'), "--image_sizes is '0': '0' is not a positive"),
    (dict(image_sizes='abc'), "--image_sizes is 'abc': 'abc' is not a"),
    (dict(image_sizes='224,224'), "--image_sizes is '224,224': a size is "
     'given twice'),
    (dict(image_sizes='16,64', tfhub_module='keras:mobilenet_v2',
          keras_weights='none'), '--image_sizes: 16 is too small for '
     'keras:mobilenet_v2, which takes at least 32x32'),
    (dict(image_size=32, image_sizes='32,48'), '--image_size 32 and '
     '--image_sizes 32,48 disagree'),
])
def test_bad_sizes_are_one_line_and_exit_code_2(photo_flags, capsys, changes,
                                                message):
  capsys.readouterr()
  assert conftest.run_retrain(**dict(photo_flags, **changes)) == 2
  err = capsys.readouterr().err
  assert err.startswith('retrain.py: error: ') and err.count('\n') == 1, err
  assert message in err


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
