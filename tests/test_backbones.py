"""Tests of backbone loading: TF Hub-style SavedModels, keras: models, errors."""

import hashlib
import shutil
import socket
import sys

import numpy as np
import pytest
import tensorflow as tf

from bottleneck.features import backbones
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


def test_size_of_a_module_that_takes_any_size(tmp_path):
  for folder, size in (('net_160', 160), ('net', 224)):
    conftest.save_feature_module(tmp_path / folder, reduce=tf.reduce_max)
    assert backbones.load_backbone(str(tmp_path / folder)).image_size == (
        size, size)
  sized = backbones.load_backbone(str(tmp_path / 'net'), image_size=64)
  assert sized.image_size == (64, 64)
  assert sized.identity != backbones.load_backbone(str(tmp_path / 'net')).identity


def test_keras_backbone_with_random_weights_is_seeded():
  first = backbones.load_backbone('keras:mobilenet_v2', keras_weights='none',
                                  image_size=64, seed=3)
  assert first.feature_dim == 1280 and first.image_size == (64, 64)
  assert 'mobilenet_v2.preprocess_input' in first.preprocessing
  again = backbones.load_backbone('keras:mobilenet_v2', keras_weights='none',
                                  image_size=64, seed=3)
  other = backbones.load_backbone('keras:mobilenet_v2', keras_weights='none',
                                  image_size=64, seed=4)
  assert first.identity == again.identity != other.identity
  images = np.full((1, 64, 64, 3), 0.5, np.float32)
  np.testing.assert_allclose(first.features(images), again.features(images))


@pytest.mark.parametrize('short', sorted(backbones.KERAS_MODELS))
def test_every_keras_backbone_builds_and_gives_vectors(short):
  backbone = backbones.load_backbone(backbones.KERAS_PREFIX + short,
                                     keras_weights='none', image_size=96)
  assert backbone.image_size == (96, 96)
  vectors = backbone.features(np.random.default_rng(0).random(
      (2, 96, 96, 3), np.float32)).numpy()
  assert vectors.shape == (2, backbone.feature_dim) and np.isfinite(
      vectors).all()


@pytest.mark.parametrize('name, kwargs, error, message', [
    ('keras:vgg_unknown', {}, errors.UsageError, 'Known keras: backbones'),
    ('keras:mobilenet_v2', {'keras_weights': '/no/such.h5'}, errors.UsageError,
     'imagenet, none or an existing weights file'),
    ('/no/such/module', {}, errors.UsageError, 'existing SavedModel folder'),
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
