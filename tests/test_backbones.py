"""Tests of backbone loading: TF Hub-style SavedModels, keras: models, errors."""

import hashlib
import logging
import os
import random
import re
import shutil
import socket
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from bottleneck.features import backbones
from bottleneck.features import hub_sizes
from bottleneck.features import keras_models
from bottleneck import errors
import conftest


class _FeatureMap(tf.Module):
  """Not a feature vector: returns [batch, height, width, 3]."""

  @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
  def __call__(self, images):
    return images * 2.0


def test_hub_style_savedmodel(hub_module, tmp_path):
  backbone = backbones.load_backbone(hub_module)
  assert backbone.image_size == (32, 32)
  assert backbone.feature_dim == 3
  images = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(backbone.features(images).numpy(),
                             images.mean(axis=(1, 2)), rtol=1e-5)
  # A moved copy is the same backbone: same identity, same cache.
  moved = str(tmp_path / 'copy')
  shutil.copytree(hub_module, moved)
  assert backbones.load_backbone(moved).identity == backbone.identity
  assert backbones.load_backbone(hub_module, image_size=32).identity == (
      backbone.identity)


# The input size of a TF Hub-style SavedModel.


@pytest.fixture(scope='module')
def any_size_module(tmp_path_factory):
  """A feature-vector SavedModel that takes images of any size."""
  return conftest.save_feature_module(
      tmp_path_factory.mktemp('any') / 'module', reduce=tf.reduce_max)


def test_size_of_a_hub_handle_comes_from_its_family(any_size_module, tmp_path,
                                                     monkeypatch, caplog):
  # TF Hub loads a handle from TFHUB_CACHE_DIR/<sha1 of handle>, offline.
  monkeypatch.setenv('TFHUB_CACHE_DIR', str(tmp_path))
  caplog.set_level(logging.INFO)
  for family, size in (('inception_v3', 299), ('resnet_v2_152', 224),
                       ('mobilenet_v2_100_160', 160)):
    handle = f'https://tfhub.dev/google/imagenet/{family}/feature_vector/5'
    shutil.copytree(any_size_module,
                    tmp_path / hashlib.sha1(handle.encode()).hexdigest())
    assert backbones.load_backbone(handle).image_size == (size, size), handle
    assert f'{handle}: input size {size}x{size}, the size of ' in caplog.text
  assert ("the size of Inception V3 models ('inception_v3' in its name; its "
          'signature takes any size; --image_size overrides it).'
          in caplog.text)


def test_size_of_a_folder(any_size_module, tmp_path, caplog):
  caplog.set_level(logging.INFO)
  # Named like a handle: its family decides.
  family = tmp_path / 'efficientnet_v2_imagenet21k_ft1k_s'
  shutil.copytree(any_size_module, family)
  assert backbones.load_backbone(str(family)).image_size == (384, 384)
  assert 'the size of EfficientNetV2 models' in caplog.text
  # No family, but a size at the end of its name.
  shutil.copytree(any_size_module, tmp_path / 'net_160')
  assert backbones.load_backbone(str(tmp_path / 'net_160')).image_size == (
      160, 160)
  assert ('net_160: input size 160x160, from the _160 its folder name ends '
          'in.') in caplog.text
  # Neither: 224, and the log says it was assumed and how to choose.
  shutil.copytree(any_size_module, tmp_path / 'net')
  assumed = backbones.load_backbone(str(tmp_path / 'net'))
  assert assumed.image_size == (224, 224)
  assert re.search(r'net: input size 224x224 assumed: .* pass it as '
                   r'--image_size\.', caplog.text)
  sized = backbones.load_backbone(str(tmp_path / 'net'), image_size=64)
  assert sized.image_size == (64, 64) and sized.identity != assumed.identity
  assert 'net: input size 64x64, from --image_size.' in caplog.text
  # A size fixed by the signature decides, whatever the name says.
  fixed = conftest.save_feature_module(tmp_path / 'inception_v3', size=64)
  assert backbones.load_backbone(fixed).image_size == (64, 64)
  assert f'{fixed}: input size 64x64, from its signature.' in caplog.text


@pytest.mark.parametrize('name, size', [
    ('https://tfhub.dev/google/imagenet/inception_v3/feature_vector/5', 299),
    ('https://tfhub.dev/google/imagenet/inception_resnet_v2/feature_vector/5',
     299),
    ('https://tfhub.dev/google/imagenet/resnet_v2_152/feature_vector/5', 224),
    ('https://tfhub.dev/google/imagenet/resnet_v1_101/feature_vector/5', 224),
    ('https://tfhub.dev/google/imagenet/nasnet_large/feature_vector/5', 331),
    ('https://tfhub.dev/google/imagenet/pnasnet_large/feature_vector/5', 331),
    ('https://tfhub.dev/google/imagenet/nasnet_mobile/feature_vector/5', 224),
    ('https://tfhub.dev/tensorflow/efficientnet/b0/feature-vector/1', 224),
    ('https://tfhub.dev/tensorflow/efficientnet/b3/feature-vector/1', 300),
    ('https://tfhub.dev/tensorflow/efficientnet/b7/feature-vector/1', 600),
    ('https://tfhub.dev/tensorflow/efficientnet/lite3/feature-vector/2', 280),
    ('https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet1k_b2/'
     'feature_vector/2', 260),
    ('https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet21k_ft1k_xl/'
     'feature_vector/2', 512),
    ('https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet21k_l/'
     'feature_vector/2', 480),
    ('https://www.kaggle.com/models/google/efficientnet-v2/TensorFlow2/'
     'imagenet21k-m-feature-vector/2', 480),
    ('https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5',
     224),
    ('https://tfhub.dev/google/imagenet/mobilenet_v2_035_96/feature_vector/5',
     96),
    ('https://tfhub.dev/google/imagenet/mobilenet_v1_025_128/feature_vector/5',
     128),
    ('https://tfhub.dev/google/imagenet/mobilenet_v3_small_075_224/'
     'feature_vector/5', 224),
    ('https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/'
     '130-224-feature-vector/2', 224),
    ('https://www.kaggle.com/models/google/resnet-v2/TensorFlow2/'
     '152-feature-vector/2', 224),
    ('https://tfhub.dev/google/bit/m-r50x1/1', 224),
    ('/models/imagenet_inception_v3_feature_vector_5', 299),
    ('https://tfhub.dev/google/imagenet/amoebanet_a_n18_f448/feature_vector/1',
     None),
    ('/models/my_net_v2_101', None),
])
def test_family_sizes(name, size):
  found = hub_sizes.family_size(name)
  assert (found[0] if found else None) == size


# keras: backbones.


def test_keras_backbone_with_random_weights_is_seeded():
  def load(seed):
    return backbones.load_backbone('keras:vgg16', keras_weights='none',
                                   image_size=32, seed=seed)
  first = load(3)
  assert first.feature_dim == 512 and first.image_size == (32, 32)
  assert 'vgg16.preprocess_input' in first.preprocessing
  # Whatever the global random state, the seed alone decides the weights.
  keras.utils.set_random_seed(11)
  again, other = load(3), load(4)
  assert first.identity == again.identity != other.identity
  images = np.full((1, 32, 32, 3), 0.5, np.float32)
  np.testing.assert_allclose(first.features(images), again.features(images))


def _seed_globally(seed):
  random.seed(seed)
  np.random.seed(seed)
  tf.random.set_seed(seed)
  tf.random.set_global_generator(tf.random.Generator.from_seed(seed))


def _next_random_numbers():
  """The next draws of Python's, NumPy's and TensorFlow's global generators."""
  return (random.random(), np.random.random(), float(tf.random.uniform([])),
          float(tf.random.get_global_generator().uniform([])))


def test_random_weights_leave_the_global_random_state_alone():
  _seed_globally(5)
  expected = _next_random_numbers()
  _seed_globally(5)
  backbones.load_backbone('keras:mobilenet_v2', keras_weights='none',
                          image_size=32, seed=0)
  assert _next_random_numbers() == expected


@pytest.mark.parametrize('short', list(keras_models.KERAS_MODELS))
def test_every_keras_backbone_builds_and_gives_vectors(short):
  # At its smallest input size, and called eagerly: tracing each model in a
  # tf.function, as load_backbone does, would double the time of this test.
  # Built with its auto layers, which proves that each of them exists.
  spec = keras_models.KERAS_MODELS[short]
  layers = keras_models.AUTO_LAYERS[short]
  model, preprocess_input = keras_models.build(
      f'keras:{short}', spec, weights=None, size=spec.min_size, seed=0,
      layers=layers)
  assert len(layers) == 3 and len(model.outputs) == 1
  images = np.random.default_rng(0).random(
      (2, spec.min_size, spec.min_size, 3), np.float32)
  vectors = model(preprocess_input(images * 255.0), training=False).numpy()
  assert vectors.shape == (2, model.output_shape[-1])
  assert np.isfinite(vectors).all()


def test_every_keras_backbone_has_auto_layers():
  assert list(keras_models.AUTO_LAYERS) == list(keras_models.KERAS_MODELS)


def _mobilenet_v2(layers):
  return backbones.load_backbone('keras:mobilenet_v2', keras_weights='none',
                                 image_size=32, seed=0, layers=layers)


def test_layers_are_pooled_concatenated_and_part_of_the_identity():
  last, auto = _mobilenet_v2('last'), _mobilenet_v2('auto')
  # The identity of the last layer alone is the one computed before layers
  # could be chosen: the caches of earlier runs stay valid.
  assert last.identity == (
      '2caa8c9b322ee77292798d54f6a890b57547f0f60ea1ef4eb14d5385e158f1dc')
  assert last.layers == () and last.feature_dim == 1280
  assert auto.layers == ('block_13_expand_relu', 'block_16_project_BN',
                         'out_relu')
  assert auto.feature_dim == 576 + 320 + 1280
  # The widths the standard head weighs alike, in the vector's order.
  assert auto.groups == (576, 320, 1280) and last.groups == (1280,)
  two = _mobilenet_v2(' block_16_project_BN , out_relu')
  assert two.layers == ('block_16_project_BN', 'out_relu')
  assert len({last.identity, auto.identity, two.identity}) == 3
  images = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
  # The same forward pass: the last 1280 features are the last layer's.
  np.testing.assert_allclose(auto.features(images)[:, -1280:],
                             last.features(images), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(two.features(images),
                             auto.features(images)[:, 576:], rtol=1e-5,
                             atol=1e-6)


def test_a_layer_without_height_and_width_is_used_as_it_is():
  # EfficientNet's squeeze-and-excitation pools to [batch, channels] itself.
  backbone = backbones.load_backbone(
      'keras:efficientnet_b0', keras_weights='none', image_size=32,
      layers='block6a_se_squeeze,top_activation')
  assert backbone.feature_dim == 672 + 1280
  assert backbone.groups == (672, 1280)


@pytest.mark.parametrize('layers, message', [
    ('block_13_expand_relu,no_such_layer', "has no layer 'no_such_layer'. "
     'Layers near its end: .*out_relu; its auto set: block_13_expand_relu'),
    ('out_relu,out_relu', 'a layer is named twice'),
    ('auto,out_relu', 'pass auto, last, or layer names'),
    (' , ', 'pass auto, last, or layer names'),
])
def test_bad_layer_names_are_usage_errors(layers, message):
  with pytest.raises(errors.UsageError, match=message):
    _mobilenet_v2(layers)


def test_auto_without_a_layer_set_uses_the_last_layer(monkeypatch, caplog):
  monkeypatch.delitem(keras_models.AUTO_LAYERS, 'mobilenet_v2')
  caplog.set_level(logging.INFO)
  backbone = _mobilenet_v2('auto')
  assert backbone.layers == () and backbone.identity == _mobilenet_v2(
      'last').identity
  assert 'no layer set is known for keras:mobilenet_v2' in caplog.text


@pytest.mark.parametrize('layers', ['auto', 'block_13_expand_relu,out_relu'])
def test_a_savedmodel_gives_its_last_layer_and_says_so(hub_module, caplog,
                                                       layers):
  caplog.set_level(logging.INFO)
  backbone = backbones.load_backbone(hub_module, layers=layers)
  assert backbone.feature_dim == 3 and backbone.layers == ()
  assert backbone.identity == backbones.load_backbone(hub_module).identity
  lines = [r for r in caplog.records if 'exposes only its' in r.getMessage()]
  assert len(lines) == 1


def test_keras_backbones_take_their_own_preprocessing():
  for short, spec in keras_models.KERAS_MODELS.items():
    constructor = getattr(keras.applications, spec.constructor)
    preprocess = getattr(keras.applications, spec.preprocess_module)
    assert constructor.__module__ == preprocess.preprocess_input.__module__, (
        short)


def test_readme_lists_the_keras_backbones():
  with open(os.path.join(os.path.dirname(__file__), '..', 'README.md'),
            encoding='utf-8') as f:
    listed = re.search(r'NAME is one of:([^.]*)\.', f.read()).group(1)
  assert re.findall(r'`([a-z0-9_]+)`', listed) == list(
      keras_models.KERAS_MODELS)


# Errors.


@pytest.mark.parametrize('name, kwargs, error, message', [
    ('keras:vgg_unknown', {}, errors.UsageError, 'Known keras: backbones'),
    ('keras:mobilenet_v2', {'keras_weights': '/no/such.h5'}, errors.UsageError,
     'imagenet, none or an existing weights file'),
    ('/no/such/module', {}, errors.UsageError, 'existing SavedModel folder'),
    ('keras:inception_v3', {'image_size': 64}, errors.UsageError,
     'too small for keras:inception_v3, which takes at least 75x75'),
])
def test_bad_names_are_usage_errors(name, kwargs, error, message):
  with pytest.raises(error, match=message):
    backbones.load_backbone(name, **kwargs)


def test_folders_that_are_not_feature_vectors(tmp_path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(errors.ModelError, match='Cannot load'):
    backbones.load_backbone(str(tmp_path / 'empty'))
  tf.saved_model.save(_FeatureMap(), str(tmp_path / 'map'))
  with pytest.raises(errors.ModelError, match='not one feature vector'):
    backbones.load_backbone(str(tmp_path / 'map'))


def _keras_run(tmp_path, backbone, **flag_values):
  """retrain.py flags for a run with a keras: backbone at 32x32."""
  conftest.write_photos(tmp_path / 'photos', per_class=3)
  return dict(image_dir=str(tmp_path / 'photos'), tfhub_module=backbone,
              image_size=32, how_many_training_steps=1,
              **conftest.output_flags(tmp_path), **flag_values)


def test_unusable_weights_files_end_the_run_with_one_line(tmp_path, capsys):
  not_h5 = tmp_path / 'text.weights.h5'
  not_h5.write_text('not weights')
  # Weights of another model: Keras warns for every layer, then fails.
  vgg19 = keras.applications.VGG19(include_top=False, weights=None,
                                   input_shape=(32, 32, 3))
  vgg19.save_weights(tmp_path / 'vgg19.weights.h5')
  for weights, message in ((not_h5, 'file signature not found'),
                           (tmp_path / 'vgg19.weights.h5', 'could not be')):
    capsys.readouterr()
    code = conftest.run_retrain(**_keras_run(
        tmp_path, 'keras:vgg16', keras_weights=str(weights)))
    err = capsys.readouterr().err
    assert code == errors.EXIT_MODEL, err
    assert err.startswith('retrain.py: error: Cannot load --keras_weights '
                          f'{weights} into keras:vgg16: '), err
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize('bug', [RuntimeError('a bug'),
                                 AttributeError('a bug')])
def test_a_bug_while_loading_is_not_a_user_error(tmp_path, monkeypatch, bug):
  def broken(*args, **kwargs):
    raise bug
  monkeypatch.setattr(keras.applications, 'MobileNetV2', broken)
  with pytest.raises(type(bug), match='a bug'):
    conftest.run_retrain(**_keras_run(tmp_path, 'keras:mobilenet_v2',
                                      keras_weights='none'))


@pytest.fixture
def offline(monkeypatch):
  """No name resolves, as on a machine without a network."""
  def fail(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')
  monkeypatch.setattr(socket, 'getaddrinfo', fail)


HANDLE = ('https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/'
          'feature_vector/5')


def test_offline_hub_handle_loads_from_tfhub_cache_dir(offline, tmp_path,
                                                        monkeypatch,
                                                        hub_module):
  # TF Hub caches a handle's download in TFHUB_CACHE_DIR/<sha1 of handle>.
  monkeypatch.setenv('TFHUB_CACHE_DIR', str(tmp_path))
  shutil.copytree(hub_module, tmp_path / hashlib.sha1(HANDLE.encode()).hexdigest())
  backbone = backbones.load_backbone(HANDLE)
  assert (backbone.name, backbone.feature_dim) == (HANDLE, 3)


def test_offline_hub_handle_says_how_to_use_a_local_copy(offline, tmp_path,
                                                         monkeypatch):
  monkeypatch.setenv('TFHUB_CACHE_DIR', str(tmp_path))
  with pytest.raises(errors.ModelError) as raised:
    backbones.load_backbone(HANDLE)
  message = str(raised.value)
  assert 'TFHUB_CACHE_DIR' in message and str(tmp_path) in message
  assert 'pass that folder as --tfhub_module' in message


def test_offline_imagenet_weights_say_where_to_put_them(offline):
  with pytest.raises(errors.ModelError) as raised:
    backbones.load_backbone('keras:mobilenet_v3_small', image_size=224)
  message = str(raised.value)
  assert 'weights_mobilenet_v3_small' in message
  assert 'KERAS_HOME' in message and '--keras_weights' in message


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
