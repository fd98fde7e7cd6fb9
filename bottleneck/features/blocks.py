"""The last blocks of a keras: backbone, split off for --fine_tune_blocks N.

A backbone is a chain of blocks; the activation entering its last N blocks
(the cut) is one tensor that everything after it depends on. `split` cuts
the backbone's Keras model there:

  frozen part   images -> (the pooled layers before the cut, concatenated;
                the cut activation), run once per photo and view by the
                cache stage, which stores both as one float16 record
                (`view_backbone`);
  tunable part  the cut activation -> the pooled layers after it (a trainable
                copy of the last N blocks, `Split.tail`), trained on the
                cached records (train/fine_tune.py).

`Split.features` computes the features of cached records through a tail;
`Split.tuned_backbone` is the whole backbone again, images -> features, with
the tuned blocks in place: what every export runs.

The blocks of each supported family are found by their layer names
(BLOCK_OUTPUTS): a block ends with its projection's batch norm, or with the
residual add after it. N may be at most the number of last blocks whose input
has the final (smallest) resolution, 7x7 at 224 px: their activations are the
smallest to cache (an earlier cut has 4 times as many positions), and they are
the blocks whose tuning pays most on a new subject.
"""

import dataclasses
import hashlib
import re

import numpy as np
import tensorflow as tf

from bottleneck import errors
from bottleneck.features import backbones
from bottleneck.features import keras_models
from bottleneck.features import passes

# The layer that ends each block, by family: a regex whose first group numbers
# the block. A block with a residual connection ends at '<same prefix>add'.
BLOCK_OUTPUTS = {
    'mobilenet_v2': r'^block_(\d+)_project_BN$',
    'mobilenet_v3_small': r'^expanded_conv_(\d+)_project_bn$',
    'mobilenet_v3_large': r'^expanded_conv_(\d+)_project_bn$',
    **{f'efficientnet_b{v}': r'^block(\d[a-z])_project_bn$' for v in range(4)},
}
VIEWS = ('photo', 'flipped')  # The photo as it is, and flipped left-right.
_EVAL_BATCH = 256  # Records per forward pass of the tail in `features_of`.


@dataclasses.dataclass(frozen=True)
class Split:
  """A backbone cut before its last blocks; see the module docstring.

  Attributes:
    backbone: the float32 `backbones.Backbone` that was split.
    blocks: N, the number of blocks after the cut.
    cut: name of the layer whose output enters the last N blocks.
    layout: per pass (size order): (fixed features, height, width, channels)
      of its part of a record.
    record_dim: length of a record: the sum of fixed + height * width *
      channels over the passes.
    feature_dim: length of the features of a record (the backbone's).
    tail: the trainable Keras model, float32 [batch, h, w, channels] (any h,
      w) -> list of float32 [batch, features] (the pooled layers after the
      cut, in the backbone's order).
    frozen: one Keras model per pass: its input -> [fixed features, cut
      activation] (or the cut activation alone if no layer is before it).
    preprocess: keras.applications' preprocess_input of the backbone.
  """
  backbone: object
  blocks: int
  cut: str
  layout: tuple
  record_dim: int
  feature_dim: int
  tail: object
  frozen: tuple
  preprocess: object

  def _passes(self, finish):
    """The backbone's passes, each through the frozen part and then `finish`.

    Args:
      finish: function (pooled float32 [batch, fixed] or None, cut float32
        [batch, h, w, channels]) -> float32 [batch, n] of one pass.

    Returns:
      A tf.function, float32 images [batch, S, S, 3] in [0, 1] -> the
      passes' outputs, concatenated (see `passes`).
    """
    def one(model, fixed):
      def run(images):
        outputs = model(self.preprocess(images * 255.0), training=False)
        return finish(*(tuple(outputs) if fixed else (None, outputs)))
      return run
    return passes.features([one(m, f) for m, (f, *_) in zip(self.frozen,
                                                          self.layout)],
                           self.backbone.image_sizes)

  def records_function(self, view):
    """tf.function: float32 images [batch, S, S, 3] -> float32 records."""
    def record(pooled, cut):
      flat = tf.reshape(cut, [tf.shape(cut)[0], -1])
      return flat if pooled is None else tf.concat([pooled, flat], 1)
    run = self._passes(record)
    size = self.backbone.image_size[0]

    @tf.function(input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32)])
    def records(images):
      return run(tf.reverse(images, axis=[2]) if view == 'flipped' else images)
    return records

  def features(self, records, tail=None):
    """float16/32 records [batch, record_dim] -> float32 features [batch, F].

    Per pass, the pooled layers before the cut, then those after it through
    `tail` (self.tail by default): the backbone's own vector when, as in
    every `auto` set, the earlier layers are named first.
    """
    tail = tail or self.tail
    records = tf.cast(records, tf.float32)
    parts, at = [], 0
    for fixed, height, width, channels in self.layout:
      if fixed:
        parts.append(records[:, at:at + fixed])
      at += fixed
      cut = tf.reshape(records[:, at:at + height * width * channels],
                       [-1, height, width, channels])
      at += height * width * channels
      parts.extend(_as_list(tail(cut, training=False)))
    return tf.concat(parts, axis=1)

  def features_of(self, records, tail=None):
    """`features` of many records, _EVAL_BATCH at a time, as numpy.

    Returns:
      float32 [len(records), feature_dim].
    """
    parts = [self.features(records[i:i + _EVAL_BATCH], tail).numpy()
             for i in range(0, len(records), _EVAL_BATCH)]
    return (np.concatenate(parts) if parts else
            np.zeros([0, self.feature_dim], np.float32))

  def trainable_tail(self):
    """A copy of `tail` with its weights, to train (the split keeps its own)."""
    return _copy(self.tail)

  def tuned_backbone(self, tail):
    """The `backbones.Backbone` with `tail` in place of the last N blocks."""
    def tuned(pooled, cut):
      return tf.concat(([pooled] if pooled is not None else []) +
                       _as_list(tail(cut, training=False)), 1)
    features = self._passes(tuned)
    sha = hashlib.sha256(f'{self.backbone.identity} tuned after '
                         f'{self.cut}\0'.encode())
    for weight in tail.weights:
      sha.update(np.asarray(weight).tobytes())
    module = tf.Module()
    module.frozen, module.tail = list(self.frozen), tail
    return dataclasses.replace(
        self.backbone, identity=sha.hexdigest(), module=module,
        features=features, tuned_blocks=self.blocks,
        preprocessing=self.backbone.preprocessing +
        f'; last {self.blocks} block(s) fine-tuned')

  def view_backbone(self, view):
    """A `Backbone` whose 'vectors' are this view's float16 records."""
    sha = hashlib.sha256(f'{self.backbone.identity} records before '
                         f'{self.cut} view {view}'.encode())
    return dataclasses.replace(
        self.backbone, name=f'{self.backbone.name} {self.cut} {view}',
        identity=sha.hexdigest(), feature_dim=self.record_dim,
        features=self.records_function(view), vector_dtype='float16',
        preprocessing=self.backbone.preprocessing +
        f'; pooled layers before {self.cut} and its activation, {view}')


def supported():
  """The keras: names that --fine_tune_blocks works with, for messages."""
  return ', '.join(backbones.KERAS_PREFIX + n for n in BLOCK_OUTPUTS)


def split(backbone, blocks):
  """Cuts a float32 keras: backbone before its last `blocks` blocks.

  Args:
    backbone: a float32 `backbones.Backbone` of a family in BLOCK_OUTPUTS.
    blocks: N >= 1.

  Returns:
    A `Split`.

  Raises:
    errors.UsageError: the backbone is not supported, or N is too large.
  """
  short = backbone.name[len(backbones.KERAS_PREFIX):]
  if (not backbone.name.startswith(backbones.KERAS_PREFIX) or
      short not in BLOCK_OUTPUTS):
    raise errors.UsageError(
        f'--fine_tune_blocks works with {supported()}; {backbone.name} is not '
        'one of them. Pass --fine_tune_blocks 0, or one of those as '
        '--tfhub_module.')
  models = (backbone.module if isinstance(backbone.module, tuple) else
            (backbone.module,))
  ends = _block_ends(models[0], BLOCK_OUTPUTS[short])
  most = _blocks_at_final_resolution(models[0], ends)
  if not 1 <= blocks <= most:
    raise errors.UsageError(
        f'--fine_tune_blocks {blocks}: {backbone.name} can tune 1 to {most} '
        f'of its last blocks (those that run at its final resolution).')
  cut = ends[-blocks - 1]
  import keras  # pylint: disable=g-import-not-at-top
  frozen, layout = [], []
  for model in models:
    fixed, after = _pooled_outputs(model, cut)
    cut_output = model.get_layer(cut).output
    if len(fixed) > 1:
      fixed = [keras.layers.Concatenate()(fixed)]
    frozen.append(keras.Model(model.inputs, fixed + [cut_output]))
    layout.append((sum(int(f.shape[-1]) for f in fixed),
                   *map(int, cut_output.shape[1:])))
  tail = _trainable_copy(model, cut_output, after)
  spec = keras_models.KERAS_MODELS[short]
  return Split(backbone=backbone, blocks=blocks, cut=cut, layout=tuple(layout),
               record_dim=sum(f + h * w * c for f, h, w, c in layout),
               feature_dim=backbone.feature_dim,
               tail=tail, frozen=tuple(frozen),
               preprocess=getattr(keras.applications,
                                  spec.preprocess_module).preprocess_input)


def _pooled_outputs(model, cut):
  """The model's pooled outputs before the cut and after it, in order.

  Args:
    model: a backbone's Keras model (`keras_models.build`): its output is one
      pooled layer, or several concatenated.
    cut: name of a layer of the model.

  Returns:
    (fixed, after): lists of its pooled KerasTensors, [batch, channels],
    whose layer comes before (or is) the cut, and after it.
  """
  index = {id(layer): i for i, layer in enumerate(model.layers)}
  last = model.layers[-1]
  pooled = (list(last.input) if last.name == 'bottleneck_layers' else
            [model.output])
  fixed, after = [], []
  for tensor in pooled:
    layer = tensor._keras_history[0]  # pylint: disable=protected-access
    if len(layer.input.shape) == 4 and len(tensor.shape) == 2:
      layer = layer.input._keras_history[0]  # What the pooling pools.
    (fixed if index[id(layer)] <= index[id(model.get_layer(cut))] else
     after).append(tensor)
  return fixed, after


def _trainable_copy(model, cut_output, after):
  """A trainable copy of the layers from the cut to `after`, any input size."""
  import keras  # pylint: disable=g-import-not-at-top
  return _copy(keras.Model(cut_output, after), keras.Input(
      shape=(None, None, cut_output.shape[-1])))


def _copy(model, input_tensors=None):
  """A trainable copy of a Keras model with its weights (on new inputs)."""
  import keras  # pylint: disable=g-import-not-at-top
  copy = keras.models.clone_model(model, input_tensors=input_tensors)
  copy.set_weights(model.get_weights())
  copy.trainable = True
  return copy


def _as_list(outputs):
  return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _block_ends(model, pattern):
  """Names of the layers that end each block, in order."""
  names = [layer.name for layer in model.layers]
  ends = []
  for name in names:
    if re.match(pattern, name):
      added = re.sub(r'project_(BN|bn)$', 'add', name)
      ends.append(added if added in names else name)
  return ends


def _blocks_at_final_resolution(model, ends):
  """How many of the last blocks take an input of the final resolution."""
  final = model.get_layer(ends[-1]).output.shape[1]
  count = 0
  for end in reversed(ends[:-1]):
    if model.get_layer(end).output.shape[1] != final:
      break
    count += 1
  return count
