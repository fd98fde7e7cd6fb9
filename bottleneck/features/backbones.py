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

Layers (--bottleneck_layers): 'last' is the global average of the final
layer, the only vector a SavedModel exposes; a keras: backbone can also give
several layers of the same forward pass, each pooled, concatenated ('auto':
its set in `keras_models.AUTO_LAYERS`; or a comma-separated list of names).

Sizes (--image_sizes): one pass of the backbone per size, the vectors
concatenated in the order given; the backbone takes images of the largest
size, and each smaller pass resizes them inside its function (`passes` says
why). A keras: backbone is one model per size, each built as a backbone of
that size alone would be; a SavedModel is called at each size.
"""

import dataclasses
import hashlib
import os
import urllib.error

from absl import logging
import tensorflow as tf

from bottleneck import config
from bottleneck import errors
from bottleneck.features import hub_sizes
from bottleneck.features import keras_models
from bottleneck.features import passes

KERAS_PREFIX = 'keras:'


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A frozen feature extractor.

  Attributes:
    name: what the user passed: 'keras:NAME', a TF Hub handle or a folder.
    image_size: (height, width) of the images it takes: the largest of
      image_sizes.
    feature_dim: length of its feature vectors.
    preprocessing: how [0, 1] pixels are mapped to its input, in words.
    identity: hex digest of name, weights, input sizes and preprocessing;
      two backbones share cached vectors only if their identities are equal.
    module: the object that owns the variables (a Keras model, a tuple of
      them, one per size, or a loaded SavedModel); an export must keep a
      reference to it.
    features: function, float32 [batch, height, width, 3] in [0, 1] ->
      float32 [batch, feature_dim] (a tf.function returning a Tensor for
      float32 backbones; a `tflite.Runner` returning numpy for int8 ones).
    precision: 'float32', or 'int8' for a quantized copy (see `quantize`).
    tflite_model: bytes of the .tflite model that `features` runs, for int8.
    layers: tuple of the layer names whose pooled outputs `features`
      concatenates; () for the last vector alone.
    tuned_blocks: how many of its last blocks were fine-tuned (`blocks`).
    vector_dtype: how the cache stores its vectors: 'float32', or 'float16'
      for the records of --fine_tune_blocks (`blocks.Split.view_backbone`).
    image_sizes: tuple of ints, the size of each pass in the order their
      vectors are concatenated (see `passes`); (image_size[0],) for one.
    groups: tuple of ints, the width of each pooled layer of each pass in
      the order of the vector (passes in size order, each its layers in
      order), summing to feature_dim; () when not known (a SavedModel, whose
      passes are alike). The standard head weighs each alike.
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
  layers: tuple = ()
  image_sizes: tuple = ()
  tuned_blocks: int = 0
  vector_dtype: str = 'float32'
  groups: tuple = ()


def load_backbone(name, *, keras_weights='imagenet', image_sizes=(), seed=0,
                  layers='last', image_size=0):
  """Loads a backbone by name; see the module docstring for the kinds of name.

  Args:
    name: 'keras:NAME', a TF Hub handle or URL, or a SavedModel folder.
    keras_weights: for keras: names, 'imagenet', 'none' or a weights file.
    image_sizes: tuple of distinct ints, one pass of the backbone at each
      size (see `passes`); () for one pass at the backbone's own size.
    seed: seeds random weights for keras_weights='none', so that two runs build
      the same backbone (and share the cache). Python's, NumPy's and
      TensorFlow's global random state are left as they were.
    layers: 'last', 'auto' or comma-separated layer names (see the module
      docstring); a SavedModel always gives 'last', and logs so otherwise.
    image_size: one size, as image_sizes=(image_size,), for the callers of
      before image_sizes; 0 for none. Ignored if image_sizes is given.

  Returns:
    A `Backbone`.

  Raises:
    errors.UsageError: unknown keras name, missing weights file or folder, a
      size that is not positive, repeated or too small for the keras model, a
      layer it does not have.
    errors.ModelError: the backbone cannot be downloaded or loaded, or does not
      follow the feature-vector contract (at every size).
  """
  names = tuple(n.strip() for n in layers.split(',') if n.strip())
  if not names or (len(names) > 1 and {'auto', 'last'} & set(names)):
    raise errors.UsageError(
        f'--bottleneck_layers {layers!r}: pass auto, last, or layer names '
        'separated by commas.')
  sizes = tuple(image_sizes) or ((image_size,) if image_size else ())
  config.parse_image_sizes(','.join(map(str, sizes)))  # Raises if bad.
  if name.startswith(KERAS_PREFIX):
    return _load_keras(name, keras_weights, sizes, seed, names)
  if names != ('last',):
    logging.info('--bottleneck_layers %s: %s exposes only its feature vector; '
                 'using its last layer.', layers, name)
  return _load_savedmodel(name, sizes)


def _keras_layers(name, names):
  """The layers of `names` (from load_backbone) for keras:NAME; () for last."""
  if names == ('last',):
    return ()
  if names != ('auto',):
    return names
  table = keras_models.AUTO_LAYERS.get(name[len(KERAS_PREFIX):])
  if not table:
    logging.info('--bottleneck_layers auto: no layer set is known for %s; '
                 'using its last layer.', name)
  return tuple(table or ())


def _load_keras(name, weights, sizes, seed, names):
  short = name[len(KERAS_PREFIX):]
  if short not in keras_models.KERAS_MODELS:
    raise errors.UsageError(
        f'Unknown backbone {name!r}. Known keras: backbones: '
        f'{", ".join(KERAS_PREFIX + k for k in keras_models.KERAS_MODELS)}.')
  spec = keras_models.KERAS_MODELS[short]
  sizes = sizes or (spec.image_size,)
  for size in sizes:
    if size < spec.min_size:
      raise errors.UsageError(
          f'--image_sizes: {size} is too small for {name}, which takes at '
          f'least {spec.min_size}x{spec.min_size} (its own size is '
          f'{spec.image_size}).')
  if weights == 'none':
    weights_arg = None
  elif weights == 'imagenet' or os.path.isfile(weights):
    weights_arg = weights
  else:
    raise errors.UsageError(
        f'--keras_weights {weights!r} is not imagenet, none or an existing '
        'weights file.')
  layers = _keras_layers(name, names)
  # One model per size, each with the weights a backbone of that size alone
  # gets (MobileNet V1 and V2 have ImageNet weights for 96 to 224 px).
  models = [keras_models.build(name, spec, weights=weights_arg, size=size,
                               seed=seed, layers=layers or None)
            for size in sizes]

  def one_pass(model, preprocess_input):
    return lambda images: model(preprocess_input(images * 255.0),
                                training=False)

  features = passes.features([one_pass(*built) for built in models], sizes)
  preprocessing = (f'keras.applications.{spec.preprocess_module}.'
                   'preprocess_input(255 * image)')
  # The last vector alone keeps the identity it had before layers could be
  # chosen, so that caches written then stay valid.
  id_name = f'{name} layers={",".join(layers)}' if layers else name
  module = models[0][0] if len(models) == 1 else tuple(m for m, _ in models)
  return dataclasses.replace(
      _finish(name, passes.identity_name(id_name, sizes), sizes,
              preprocessing, module, features,
              [v.numpy() for model, _ in models for v in model.weights]),
      layers=layers,
      groups=tuple(w for model, _ in models
                   for w in _layer_widths(model)))


def _layer_widths(model):
  """Widths of the pooled layers in a `keras_models.build` model's vector."""
  concatenate = [layer for layer in model.layers
                 if layer.name == 'bottleneck_layers']  # pooled_layers's.
  if not concatenate:
    return (int(model.output.shape[-1]),)
  return tuple(int(t.shape[-1]) for t in concatenate[0].input)


def _load_savedmodel(name, sizes):
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
  if len(sizes) > 1:
    logging.info('%s: input sizes %s, from --image_sizes.', name,
                 ', '.join(f'{size}x{size}' for size in sizes))
  else:
    sizes = (hub_sizes.input_size(name, module,
                                  requested=sizes[0] if sizes else 0),)
  call_kwargs = {'training': False} if _takes_training(module) else {}
  features = passes.features(
      [lambda images: module(images, **call_kwargs)] * len(sizes), sizes)

  # A local folder is known by its contents, not its path, so that moving it
  # keeps the cache; a handle names fixed contents.
  pb_path = os.path.join(name, 'saved_model.pb')
  if is_url:
    id_name, graph = name, []
  else:
    with open(pb_path, 'rb') as f:
      id_name, graph = 'savedmodel', [f.read()]
  return _finish(name, passes.identity_name(id_name, sizes), sizes,
                 'none: [0, 1] in (TF Hub contract)', module, features,
                 graph + [v.numpy() for v in getattr(module, 'variables', [])])


def _takes_training(module):
  for fn in getattr(module.__call__, 'concrete_functions', []):
    if 'training' in fn.structured_input_signature[1]:
      return True
    if len(fn.structured_input_signature[0]) > 1:
      return True
  return False


def _finish(name, id_name, sizes, preprocessing, module, features, weights):
  """Traces `features` once to check the contract and builds the Backbone.

  The identity hashes `id_name` (with the sizes of several passes, see
  `passes.identity_name`), the input size, the preprocessing and `weights`
  (a list of bytes or numpy arrays: everything that decides the features).
  """
  size = (max(sizes), max(sizes))
  try:
    out = features(tf.zeros([1, size[0], size[1], 3]))
  except (ValueError, TypeError, tf.errors.OpError) as e:
    shapes = ' or '.join(f'[batch, {s}, {s}, 3]' for s in sorted(set(sizes)))
    raise errors.ModelError(
        f'{name} cannot take float32 images {shapes} in [0, 1] (the TF Hub '
        f'image feature-vector contract): {e}') from e
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
                  module=module, features=features, image_sizes=tuple(sizes))
