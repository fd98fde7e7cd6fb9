"""--mirror_average: each vector is the mean of the photo's and its mirror's.

The averaged backbone must compute exactly that, be another backbone for the
cache, and every exported form (both SavedModel signatures, the frozen graph,
both .tflite files) must compute the averaged vector the head was trained on.
"""

import os
import sys

import conftest
import numpy as np
import pytest

from bottleneck.features import backbones
from bottleneck.features import cache
from bottleneck.features import mirror
from bottleneck.features import quantize

LAYERS = 'block_16_project_BN,out_relu'  # 320 + 1280 features.
WEIGHTS = os.path.join(conftest.SHARED_DATA, 'weights',
                       'mobilenet_v2_1.0_224_no_top.weights.h5')


def real_weights():
  if not os.path.isfile(WEIGHTS):  # Fails, never skips, as test_real_data.
    pytest.fail(f'{WEIGHTS} is missing: this test needs ../shared/data beside '
                'the repository (see ../shared/data/README.md).')
  return WEIGHTS


def test_the_vector_is_the_mean_of_the_photo_and_its_mirror_image():
  # Real weights: random ones give features near 1e-13, equal to any others.
  backbone = backbones.load_backbone('keras:mobilenet_v2',
                                     keras_weights=real_weights(),
                                     image_size=48, layers=LAYERS)
  averaged = mirror.averaged(backbone)
  images = np.random.default_rng(0).random((3, 48, 48, 3), np.float32)
  flipped = images[:, :, ::-1]
  expected = (backbone.features(images).numpy() +
              backbone.features(flipped).numpy()) / 2
  np.testing.assert_allclose(averaged.features(images), expected, rtol=1e-5,
                             atol=1e-6)
  # A photo and its mirror image give the same vector; the plain backbone
  # does not (or the test would prove nothing).
  np.testing.assert_allclose(averaged.features(flipped),
                             averaged.features(images), rtol=1e-5, atol=1e-6)
  assert np.abs(backbone.features(images)).mean() > 0.01
  assert not np.allclose(backbone.features(flipped), backbone.features(images),
                         rtol=1e-2, atol=1e-3)
  assert (averaged.feature_dim, averaged.groups) == (backbone.feature_dim,
                                                     (320, 1280))
  # Another backbone for the cache: its vectors never mix with the plain ones.
  assert averaged.identity != backbone.identity
  assert cache.cache_path('/c', averaged) != cache.cache_path('/c', backbone)
  assert 'mirror image' in averaged.preprocessing


def test_every_form_computes_the_averaged_vector_int8_included(tmp_path):
  real_weights()
  conftest.write_photos(tmp_path / 'photos', per_class=8)
  flags = dict(image_dir=str(tmp_path / 'photos'),
               tfhub_module='keras:mobilenet_v2', keras_weights=WEIGHTS,
               image_sizes='48', bottleneck_layers=LAYERS, mirror_average=True,
               backbone_precision='int8', how_many_training_steps=10,
               tflite_output_file=str(tmp_path / 'model.tflite'),
               tflite_int8_output_file=str(tmp_path / 'model_int8.tflite'),
               **conftest.output_flags(tmp_path))
  assert conftest.run_retrain(**flags) == 0
  plain_backbone = backbones.load_backbone(
      'keras:mobilenet_v2', keras_weights=WEIGHTS, image_sizes=(48,),
      layers=LAYERS)
  float_backbone = mirror.averaged(plain_backbone)
  int8 = quantize.int8_backbone(float_backbone, flags['bottleneck_dir'],
                                calibration=lambda: pytest.fail('converted'))
  head = conftest.exported_head(flags['saved_model_dir'])
  pixels = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3), np.uint8)
  images = pixels.astype(np.float32) / 255
  expected = head(float_backbone.features(images))
  # The head on the plain (unaveraged) vectors answers otherwise: a form
  # that forgot the mirror image would fail below.
  plain = head(plain_backbone.features(images))
  assert np.abs(plain - expected).max() > 0.01
  conftest.check_forms_give(flags, pixels, expected,
                            head(int8.features(images)))


def test_fine_tuning_with_mirror_average_is_a_usage_error(photo_flags, capsys):
  capsys.readouterr()
  assert conftest.run_retrain(**dict(photo_flags, mirror_average=True,
                                     fine_tune_blocks=1)) == 2
  err = capsys.readouterr().err
  assert err.startswith('retrain.py: error: ') and err.count('\n') == 1, err
  assert 'cannot run with --mirror_average' in err


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
