"""The `keras:NAME` backbones: which keras.applications models; building one.

Each is built with include_top=False and pooling='avg', so that it maps images
to one feature vector each, and is fed `<module>.preprocess_input(255 * image)`
(see KERAS_MODELS for what that does in each family).

Left out, as too slow for a cache stage on a CPU: the models of over about 20
GFLOPs per image (EfficientNetV2M and L, NASNetLarge, ConvNeXtLarge and
XLarge) or of over 10 times MobileNetV2's CPU time in Keras's own table of
keras.applications (EfficientNetB4 to B7: 308 to 1,579 ms per step against 26).
The slowest kept, EfficientNetB3, ResNet152 and InceptionResNetV2, take about
5 times MobileNetV2's. A row in KERAS_MODELS is all one of them would need.
"""

import contextlib
import dataclasses
import os
import random
import re
import warnings

from bottleneck import errors


@dataclasses.dataclass(frozen=True)
class KerasSpec:
  constructor: str  # Name in keras.applications.
  preprocess_module: str  # keras.applications.<this>.preprocess_input
  image_size: int  # The size its ImageNet weights were trained at.
  min_size: int = 32  # The smallest input keras.applications builds it for.


# name: KerasSpec(constructor, preprocess module, native size[, minimum size]).
# The preprocessing of each family: 'caffe' (RGB -> BGR, ImageNet mean
# subtracted) for VGG and ResNet; 'tf' (to [-1, 1]) for Inception, Xception,
# MobileNet V1/V2, ResNet V2 and NASNet; 'torch' (ImageNet mean and std) for
# DenseNet; none for EfficientNet, EfficientNetV2, MobileNetV3 and ConvNeXt,
# which normalize inside the model (their preprocess_input returns its input).
KERAS_MODELS = {
    'mobilenet': KerasSpec('MobileNet', 'mobilenet', 224),
    'mobilenet_v2': KerasSpec('MobileNetV2', 'mobilenet_v2', 224),
    'mobilenet_v3_small': KerasSpec('MobileNetV3Small', 'mobilenet_v3', 224),
    'mobilenet_v3_large': KerasSpec('MobileNetV3Large', 'mobilenet_v3', 224),
    'efficientnet_b0': KerasSpec('EfficientNetB0', 'efficientnet', 224),
    'efficientnet_b1': KerasSpec('EfficientNetB1', 'efficientnet', 240),
    'efficientnet_b2': KerasSpec('EfficientNetB2', 'efficientnet', 260),
    'efficientnet_b3': KerasSpec('EfficientNetB3', 'efficientnet', 300),
    'efficientnetv2_b0': KerasSpec('EfficientNetV2B0', 'efficientnet_v2', 224),
    'efficientnetv2_b1': KerasSpec('EfficientNetV2B1', 'efficientnet_v2', 240),
    'efficientnetv2_b2': KerasSpec('EfficientNetV2B2', 'efficientnet_v2', 260),
    'efficientnetv2_b3': KerasSpec('EfficientNetV2B3', 'efficientnet_v2', 300),
    'efficientnetv2_s': KerasSpec('EfficientNetV2S', 'efficientnet_v2', 384),
    'inception_v3': KerasSpec('InceptionV3', 'inception_v3', 299, 75),
    'inception_resnet_v2': KerasSpec('InceptionResNetV2', 'inception_resnet_v2',
                                     299, 75),
    'xception': KerasSpec('Xception', 'xception', 299, 71),
    # keras.applications.resnet50 is keras.applications.resnet; keras:resnet50
    # keeps the name its cache identity was first computed with.
    'resnet50': KerasSpec('ResNet50', 'resnet50', 224),
    'resnet101': KerasSpec('ResNet101', 'resnet', 224),
    'resnet152': KerasSpec('ResNet152', 'resnet', 224),
    'resnet50_v2': KerasSpec('ResNet50V2', 'resnet_v2', 224),
    'resnet101_v2': KerasSpec('ResNet101V2', 'resnet_v2', 224),
    'resnet152_v2': KerasSpec('ResNet152V2', 'resnet_v2', 224),
    'vgg16': KerasSpec('VGG16', 'vgg16', 224),
    'vgg19': KerasSpec('VGG19', 'vgg19', 224),
    'densenet121': KerasSpec('DenseNet121', 'densenet', 224),
    'densenet169': KerasSpec('DenseNet169', 'densenet', 224),
    'densenet201': KerasSpec('DenseNet201', 'densenet', 224),
    'convnext_tiny': KerasSpec('ConvNeXtTiny', 'convnext', 224),
    'convnext_small': KerasSpec('ConvNeXtSmall', 'convnext', 224),
    'convnext_base': KerasSpec('ConvNeXtBase', 'convnext', 224),
    'nasnet_mobile': KerasSpec('NASNetMobile', 'nasnet', 224),
}


def build(name, spec, *, weights, size, seed):
  """Builds a keras.applications model as a feature extractor.

  Args:
    name: 'keras:NAME', for messages.
    spec: its `KerasSpec`.
    weights: 'imagenet', None (random) or the path of a weights file.
    size: input size, at least spec.min_size.
    seed: int; seeds the random weights, so that the same seed builds the same
      model.

  Returns:
    (model, preprocess_input): the Keras model, float32 [batch, size, size, 3]
    -> [batch, features], and the function that maps 255 * image to its input.

  Raises:
    errors.ModelError: the weights cannot be downloaded or do not fit.
  """
  import keras  # pylint: disable=g-import-not-at-top
  constructor = getattr(keras.applications, spec.constructor)
  # Keras warns once per layer that a wrong weights file does not fit; the
  # error says it in one line, so the warnings are shown only on success.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    try:
      with _python_random_seeded(seed):
        model = constructor(include_top=False, weights=weights, pooling='avg',
                            input_shape=(size, size, 3))
    except (OSError, ValueError) as e:
      raise errors.ModelError(_build_error(name, weights, e)) from e
    except Exception as e:  # pylint: disable=broad-except
      if not _is_download_failure(e):
        raise  # A bug: it keeps its traceback.
      raise errors.ModelError(_download_error(name, e)) from e
  for w in caught:
    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  return model, getattr(keras.applications,
                        spec.preprocess_module).preprocess_input


@contextlib.contextmanager
def _python_random_seeded(seed):
  """Seeds Python's `random` for the block, then puts its state back.

  Building a Keras model draws the seed of each weight initializer from
  Python's global `random` (keras.random.make_default_seed); that is the
  only randomness in it. Seeding it, rather than calling
  keras.utils.set_random_seed, leaves NumPy's, TensorFlow's and Keras's
  global random state alone, and the caller's Python random state too.
  """
  state = random.getstate()
  random.seed(seed)
  try:
    yield
  finally:
    random.setstate(state)


def _is_download_failure(e):
  # keras.utils.get_file raises a bare Exception when a download fails.
  bare = type(e) is Exception  # pylint: disable=unidiomatic-typecheck
  return bare and str(e).startswith('URL fetch failure')


def _first_line(e):
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def _build_error(name, weights, e):
  """The message for an OSError or ValueError from building `name`."""
  if weights is None:
    return f'Cannot build {name} with random weights: {_first_line(e)}'
  if weights == 'imagenet':
    return (f'Cannot build {name} with its ImageNet weights: {_first_line(e)}. '
            f'If a file for it in {_keras_models_dir()} is damaged, delete it '
            'to download it again.')
  return (f'Cannot load --keras_weights {weights} into {name}: '
          f'{_first_line(e)}. Pass the weights file of this model without its '
          'top (include_top=False), or --keras_weights imagenet or none.')


def _download_error(name, e):
  file_name = re.search(r'/([^/\s:]+\.h5)', str(e))
  return (
      f'Cannot download the ImageNet weights of {name} (no network?). Put '
      f'{file_name.group(1) if file_name else "the weights file"} into '
      f'{_keras_models_dir()} (set KERAS_HOME to use another folder), or '
      'pass --keras_weights=/path/to/weights.h5.')


def _keras_models_dir():
  # Keras reads KERAS_HOME once, when it is imported; ask it what it uses.
  from keras.src.backend import config as keras_config  # pylint: disable=g-import-not-at-top
  return os.path.join(keras_config.keras_home(), 'models')
