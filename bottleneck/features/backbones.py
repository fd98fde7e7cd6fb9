"""Name or handle -> a frozen, pretrained feature extractor.

Every backbone has one surface (`Backbone`): its input size, a description of
its preprocessing, its feature size, an identity for the cache, and `features`,
a function from float32 images in [0, 1] to feature vectors. Three sources:

  * a TF Hub handle or URL, loaded with `hub.load` (honours TFHUB_CACHE_DIR);
  * a local SavedModel folder that follows TF Hub's image feature-vector
    contract (float32 [batch, height, width, 3] in [0, 1] -> [batch, features]);
    `hub_sizes` chooses the input size of these two;
  * `keras:NAME`, a `keras.applications` model with include_top=False and
    pooling='avg' (the table is in `keras_models`); weights 'imagenet'
    (resolved through KERAS_HOME as Keras does), 'none' (random, seeded) or a
    weights file.
"""

import dataclasses
import hashlib
import os
import urllib.error

import tensorflow as tf

from bottleneck import errors
from bottleneck.features import hub_sizes
from bottleneck.features import keras_models

KERAS_PREFIX = 'keras:'


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A frozen feature extractor.

  Attributes:
    name: what the user passed: 'keras:NAME', a TF Hub handle or a folder.
    image_size: (height, width) of the images it takes.
    feature_dim: length of its feature vectors.
    preprocessing: how [0, 1] pixels are mapped to its input, in words.
    identity: hex digest of name, weights, input size and preprocessing; two
      backbones share cached vectors only if their identities are equal.
    module: the object that owns the variables (a Keras model or a loaded
      SavedModel); an export must keep a reference to it.
    features: function, float32 [batch, height, width, 3] in [0, 1] ->
      float32 [batch, feature_dim] (a tf.function returning a Tensor for
      float32 backbones; a `tflite.Runner` returning numpy for int8 ones).
    precision: 'float32', or 'int8' for a quantized copy (see `quantize`).
    tflite_model: bytes of the .tflite model that `features` runs, for int8.
  """
  name: str
  image_size: tuple
  feature_dim: int
  preprocessing: str
  identity: str
  module: object
  features: object
  precision: str = 'float32'
  tflite_model: bytes = None


def load_backbone(name, *, keras_weights='imagenet', image_size=0, seed=0):
  """Loads a backbone by name; see the module docstring for the kinds of name.

  Args:
    name: 'keras:NAME', a TF Hub handle or URL, or a SavedModel folder.
    keras_weights: for keras: names, 'imagenet', 'none' or a weights file.
    image_size: input size to use; 0 for the backbone's own.
    seed: seeds random weights for keras_weights='none', so that two runs build
      the same backbone (and share the cache). Python's, NumPy's and
      TensorFlow's global random state are left as they were.

  Returns:
    A `Backbone`.

  Raises:
    errors.UsageError: unknown keras name, missing weights file or folder, an
      image_size too small for the keras model.
    errors.ModelError: the backbone cannot be downloaded or loaded, or does not
      follow the feature-vector contract.
  """
  if name.startswith(KERAS_PREFIX):
    return _load_keras(name, keras_weights, image_size, seed)
  return _load_savedmodel(name, image_size)


def _load_keras(name, weights, image_size, seed):
  short = name[len(KERAS_PREFIX):]
  if short not in keras_models.KERAS_MODELS:
    raise errors.UsageError(
        f'Unknown backbone {name!r}. Known keras: backbones: '
        f'{", ".join(KERAS_PREFIX + k for k in keras_models.KERAS_MODELS)}.')
  spec = keras_models.KERAS_MODELS[short]
  size = image_size or spec.image_size
  if size < spec.min_size:
    raise errors.UsageError(
        f'--image_size {size} is too small for {name}, which takes at least '
        f'{spec.min_size}x{spec.min_size} (its own size is {spec.image_size}).')
  if weights == 'none':
    weights_arg = None
  elif weights == 'imagenet' or os.path.isfile(weights):
    weights_arg = weights
  else:
    raise errors.UsageError(
        f'--keras_weights {weights!r} is not imagenet, none or an existing '
        'weights file.')
  model, preprocess_input = keras_models.build(
      name, spec, weights=weights_arg, size=size, seed=seed)

  @tf.function(input_signature=[
      tf.TensorSpec([None, size, size, 3], tf.float32)])
  def features(images):
    return model(preprocess_input(images * 255.0), training=False)

  preprocessing = (f'keras.applications.{spec.preprocess_module}.'
                   'preprocess_input(255 * image)')
  return _finish(name, name, (size, size), preprocessing, model, features,
                 [v.numpy() for v in model.weights])


def _load_savedmodel(name, image_size):
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  is_url = '://' in name or name.startswith('@')
  if not is_url and not os.path.isdir(name):
    raise errors.UsageError(
        f'--tfhub_module {name!r} is not keras:NAME, a TF Hub URL or handle, '
        'or an existing SavedModel folder.')
  try:
    module = hub.load(name)
  except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
    cache_dir = os.environ.get('TFHUB_CACHE_DIR', '(unset: hub uses a temp folder)')
    raise errors.ModelError(
        f'Cannot download TF Hub module {name} ({e}); this machine may be '
        'offline. Either download the module where there is a network, unpack '
        'its .tar.gz and pass that folder as --tfhub_module, or set '
        'TFHUB_CACHE_DIR to a folder where it was cached before (now: '
        f'{cache_dir}). --tfhub_module keras:mobilenet_v2 with --keras_weights '
        'PATH is another offline choice.') from e
  except (OSError, ValueError, tf.errors.OpError) as e:
    raise errors.ModelError(f'Cannot load {name} as a SavedModel: {e}') from e
  if not callable(module):
    raise errors.ModelError(
        f'{name} is not callable: it looks like a TF1 Hub module. Use the TF2 '
        'SavedModel version of the feature vector.')
  size = hub_sizes.input_size(name, module, requested=image_size)
  call_kwargs = {'training': False} if _takes_training(module) else {}

  @tf.function(input_signature=[
      tf.TensorSpec([None, size, size, 3], tf.float32)])
  def features(images):
    return module(images, **call_kwargs)

  # A local folder is known by its contents, not its path, so that moving it
  # keeps the cache; a handle names fixed contents.
  pb_path = os.path.join(name, 'saved_model.pb')
  if is_url:
    id_name, graph = name, []
  else:
    with open(pb_path, 'rb') as f:
      id_name, graph = 'savedmodel', [f.read()]
  return _finish(name, id_name, (size, size),
                 'none: [0, 1] in (TF Hub contract)', module, features,
                 graph + [v.numpy() for v in getattr(module, 'variables', [])])


def _takes_training(module):
  for fn in getattr(module.__call__, 'concrete_functions', []):
    if 'training' in fn.structured_input_signature[1]:
      return True
    if len(fn.structured_input_signature[0]) > 1:
      return True
  return False


def _finish(name, id_name, size, preprocessing, module, features, weights):
  """Traces `features` once to check the contract and builds the Backbone.

  The identity hashes `id_name`, the size, the preprocessing and `weights` (a
  list of bytes or numpy arrays: everything that decides the features).
  """
  try:
    out = features(tf.zeros([1, size[0], size[1], 3]))
  except (ValueError, TypeError, tf.errors.OpError) as e:
    raise errors.ModelError(
        f'{name} cannot take float32 images [batch, {size[0]}, {size[1]}, 3] '
        f'in [0, 1] (the TF Hub image feature-vector contract): {e}') from e
  if not isinstance(out, tf.Tensor) or out.shape.rank != 2:
    raise errors.ModelError(
        f'{name} returns {out!r}, not one feature vector per image '
        '[batch, features]. Use a feature-vector model, not a classifier.')
  sha = hashlib.sha256()
  for part in (id_name, str(size), preprocessing):
    sha.update(part.encode('utf-8', 'surrogateescape') + b'\0')
  for value in weights:
    sha.update(value if isinstance(value, bytes) else value.tobytes())
  return Backbone(name=name, image_size=size, feature_dim=int(out.shape[1]),
                  preprocessing=preprocessing, identity=sha.hexdigest(),
                  module=module, features=features)
