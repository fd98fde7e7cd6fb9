"""A float backbone -> its full-integer (int8) TFLite copy, for the cache stage.

`--backbone_precision int8` computes the bottleneck vectors with a post-training
int8 quantization of the chosen backbone, run by LiteRT (see `tflite`). How
much faster that is than the float backbone under TensorFlow depends on the
CPU (int8 dot-product instructions such as VNNI, the core count) and on the
backbone; README.md, Performance, gives what bench/run.py measured, speed and
accuracy, on one machine.

The converter calibrates the range of every activation on CALIBRATION_PHOTOS
training photos of the run (pixels only, never labels), chosen
deterministically: in turn from each class, lowest content digest first. The
converted model is cached beside the vectors,

  <bottleneck_dir>/<backbone slug>-<float identity[:16]>.int8.tflite

so the conversion (tens of seconds for MobileNetV2 on 2 cores; bench/run.py
prints it) is paid once per backbone,
not once per run; delete the file to calibrate again on today's photos. The
int8 backbone's identity is the hash of the converted model's bytes, so its
vectors go to a cache file of their own: float and int8 vectors never mix, nor
do the vectors of two conversions.
"""

import dataclasses
import hashlib
import itertools
import os
import time
import warnings

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert_phase  # pylint: disable=g-direct-tensorflow-import
from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=g-direct-tensorflow-import
from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import

from bottleneck.features import cache
from bottleneck.data import decode
from bottleneck import errors
from bottleneck import publish
from bottleneck.features import tflite

# A few hundred photos settle the activation ranges; conversion time grows
# linearly with them (each photo is one float forward pass of the backbone).
CALIBRATION_PHOTOS = 300


def calibration_photos(training, count=CALIBRATION_PHOTOS):
  """The photos the converter calibrates on.

  Args:
    training: list of `images.Photo` (with digests) of the training set.
    count: how many to choose.

  Returns:
    Up to `count` paths of distinct photos: in turn from each class, lowest
    digest first, so the choice depends on the photos' contents only.
  """
  by_class = {}
  for photo in sorted(training, key=lambda p: (p.label, p.digest, p.path)):
    by_class.setdefault(photo.label, {}).setdefault(photo.digest, photo.path)
  chosen, seen = [], set()
  for row in itertools.zip_longest(*(list(d.items())
                                     for d in by_class.values())):
    for digest, path in filter(None, row):
      if digest not in seen and len(chosen) < count:
        seen.add(digest)
        chosen.append(path)
  return chosen


def model_path(bottleneck_dir, backbone):
  """Where the int8 copy of the float `backbone` is cached."""
  return cache.sibling_path(bottleneck_dir, backbone, '.int8.tflite')


def int8_backbone(backbone, bottleneck_dir, calibration, *, keep=True):
  """The int8 copy of a float backbone, converted once and then cached.

  Args:
    backbone: a float32 `backbones.Backbone`.
    bottleneck_dir: folder of the cache.
    calibration: function of no arguments that returns the paths of the
      calibration photos (called only if the model must be converted).
    keep: cache the copy in bottleneck_dir (and use a cached one); False for
      a backbone no later run will have (fine-tuned weights).

  Returns:
    A `backbones.Backbone` with precision 'int8' whose `features` runs the
    converted model, and whose `tflite_model` holds its bytes.

  Raises:
    errors.ModelError: the converter cannot convert the backbone.
    errors.DataError: no calibration photo can be decoded.
  """
  path = model_path(bottleneck_dir, backbone)
  if keep and os.path.exists(path):
    with open(path, 'rb') as f:
      data = f.read()
    try:
      return _from_tflite(backbone, data, path)
    except errors.ModelError as e:
      aside = f'{path}.damaged-{time.strftime("%Y%m%d-%H%M%S")}'
      os.replace(path, aside)
      logging.warning('%s; moved it to %s and converting again.', e, aside)
  paths = calibration()
  logging.info('Converting %s to int8 TFLite, calibrated on %d training photos '
               '(%s).', backbone.name, len(paths),
               f'once per backbone; kept in {path}' if keep else
               'its weights are this run\'s own; not cached')
  start = time.monotonic()
  pixels = _calibration_pixels(paths, backbone.image_size)
  data = to_tflite(backbone.features.get_concrete_function(),
                   calibration=lambda: (p[np.newaxis].astype(np.float32) / 255
                                        for p in pixels),
                   name=backbone.name)
  if keep:
    os.makedirs(bottleneck_dir, exist_ok=True)
    publish.write_file(path, data)
  logging.info('Converted in %.1f s.', time.monotonic() - start)
  left = float_ops(data)
  if left:
    logging.warning(
        '%d op(s) of %s have no int8 kernel and stay float32 in its int8 copy '
        '(%s): its features are right, but it runs slower than a fully '
        'integer copy would.', len(left), backbone.name,
        ', '.join(sorted(set(left))))
  return _from_tflite(backbone, data, path)


def to_tflite(function, *, calibration=None, name):
  """Converts a concrete tf.function to a .tflite model.

  Args:
    function: a concrete function of one float32 input [batch, ...].
    calibration: None for a float32 model; else a function of no arguments
      that yields float32 numpy inputs [1, ...], for full-integer int8
      quantization (input and output stay float32, quantized and dequantized
      inside the model).
    name: what to call the model in error messages.

  Returns:
    The .tflite bytes.

  Raises:
    errors.ModelError: the converter fails, e.g. on an op with no int8 kernel.
  """
  # Variables become constants first: the converter cannot calibrate through
  # the resource variables of a Keras model or a loaded SavedModel.
  # (The empty module only selects the converter's current code path.)
  frozen = convert_to_constants.convert_variables_to_constants_v2(function)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [frozen], tf.Module())
  if calibration is not None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in calibration())
    # Int8 kernels only. An op that has none still stays float32 (the
    # converter does not refuse it), so `float_ops` looks for such ops.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  try:
    with warnings.catch_warnings():
      # 'Statistics for quantized inputs were expected': the input stays float.
      warnings.simplefilter('ignore', UserWarning)
      return _named_outputs(converter.convert(), function.structured_outputs)
  except (convert_phase.ConverterError, ValueError, RuntimeError) as e:
    kind = 'full-integer int8' if calibration is not None else 'float32'
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else e
    raise errors.ModelError(
        f'Cannot convert {name} to a {kind} TFLite model: {first_line}. Use '
        '--backbone_precision float32 and no int8 TFLite output, or another '
        'backbone.') from e


def _named_outputs(data, structured):
  """Gives a converted model's signature outputs the keys of a dict output.

  Freezing the function loses its output names, and the converter calls them
  output_0, output_1, ... in the order tf.nest flattens the dict (sorted
  keys); a reader finds them by name (`tflite.Runner`). The model's outputs
  are put in that order too: the converter may list them otherwise, and a
  client that reads output 0 must get the first key ('probabilities').
  """
  if not isinstance(structured, dict):
    return data
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
  names = sorted(structured)
  for signature in model.signatureDefs or []:
    for output in signature.outputs:
      index = int(output.name.decode().rpartition('_')[2])
      output.name = names[index].encode()
    signature.outputs.sort(key=lambda output: names.index(output.name.decode()))
    model.subgraphs[signature.subgraphIndex].outputs = np.array(
        [output.tensorIndex for output in signature.outputs], np.int32)
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def float_ops(data):
  """Names of the ops of a .tflite model that compute in float32.

  The QUANTIZE of the float32 input and the DEQUANTIZE of the output do not
  count: they are the edges of an integer model with a float32 interface.
  """
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
  names = []
  for graph in model.subgraphs:
    for op in graph.operators:
      name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
      if name not in ('QUANTIZE', 'DEQUANTIZE') and any(
          graph.tensors[i].type == schema.TensorType.FLOAT32
          for i in op.inputs if i >= 0):
        names.append(name)
  return names


def _calibration_pixels(paths, size):
  """Decoded calibration photos: list of uint8 [height, width, 3]."""
  pixels = [p for p in decode.load_images(paths, size)
            if not isinstance(p, errors.DecodeError)]
  if not pixels:
    raise errors.DataError(
        f'None of the {len(paths)} calibration photos for the int8 backbone '
        'can be decoded. Add photos that can be decoded, or use '
        '--backbone_precision float32.')
  return pixels


def _from_tflite(backbone, data, path):
  """The int8 `Backbone` that runs the .tflite bytes `data`."""
  runner = tflite.Runner(data, name=path)
  if (runner.image_size != tuple(backbone.image_size) or
      runner.outputs != backbone.feature_dim):
    raise errors.ModelError(
        f'{path} takes {runner.image_size} and gives {runner.outputs} features,'
        f' where {backbone.name} takes {tuple(backbone.image_size)} and gives '
        f'{backbone.feature_dim}')
  identity = hashlib.sha256(b'int8\0' + data).hexdigest()
  return dataclasses.replace(
      backbone, identity=identity, precision='int8', module=None,
      features=runner, tflite_model=data,
      preprocessing=backbone.preprocessing + '; int8 TFLite (LiteRT)')

