"""Backbone + head -> a .tflite classifier, in float32 or int8 form.

Both forms take float32 images [batch, height, width, 3] in [0, 1] (the batch
can be resized) and return `outputs`' float32 probabilities [batch, classes]
and, when the run fitted one, unknown_score [batch] (output and signature
keys so named); both carry labels.txt and bottleneck.json (see `tflite`), so
`label_image.py --tflite_model` needs no other file.

  float32  the float backbone and the head, converted by TFLiteConverter.
  int8     the cached int8 backbone of the cache stage (see `quantize`), bit
           for bit, with the head converted on its own in float32 and
           appended: the very features the head was trained on when the run
           used --backbone_precision int8, and a head that costs little next
           to the backbone. Its input and output stay float32 (quantized and
           dequantized inside), so it is not for integer-only accelerators.
"""

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=g-direct-tensorflow-import
from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-direct-tensorflow-import

from bottleneck.export import outputs
from bottleneck.features import quantize
from bottleneck.features import tflite


def float_classifier(backbone, head):
  """The float32 .tflite classifier, without attached files.

  Args:
    backbone: a float32 `backbones.Backbone`.
    head: a `head.Head`.

  Returns:
    bytes: a model with the outputs of `outputs` (signature keys named so).

  Raises:
    errors.ModelError: the backbone cannot be converted.
  """
  constants = outputs.HeadConstants(head)
  height, width = backbone.image_size

  @tf.function(input_signature=[
      tf.TensorSpec([None, height, width, 3], tf.float32, name='images')])
  def classify(images):
    return constants.head_outputs(backbone.features(images))

  return quantize.to_tflite(classify.get_concrete_function(),
                            name=backbone.name)


def int8_classifier(backbone, head):
  """The int8 .tflite classifier, without attached files.

  The head (`outputs`) is converted on its own, in float32, and grafted onto
  the cached int8 backbone: its input becomes the backbone's output.

  Args:
    backbone: an int8 `backbones.Backbone` (`quantize.int8_backbone`).
    head: a `head.Head`.

  Returns:
    bytes.
  """
  constants = outputs.HeadConstants(head)

  @tf.function(input_signature=[
      tf.TensorSpec([None, backbone.feature_dim], tf.float32)])
  def classify(features):
    return constants.head_outputs(features)

  tail = flatbuffer_utils.convert_bytearray_to_object(bytearray(
      quantize.to_tflite(classify.get_concrete_function(), name='the head')))
  model = flatbuffer_utils.convert_bytearray_to_object(
      bytearray(backbone.tflite_model))
  _graft(model, tail)
  data = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
  tflite.Runner(data, name='the int8 classifier')  # Fails now, not on a phone.
  return data


def _graft(model, tail):
  """Appends the one-input model `tail` to `model`, fed by its one output.

  Tensors, buffers and operators of tail's first subgraph are appended with
  their indices renumbered, its operator codes merged, and model's outputs
  (and its signature's) become tail's.
  """
  graph, tail_graph = model.subgraphs[0], tail.subgraphs[0]
  (features,) = graph.outputs
  (tail_input,) = tail_graph.inputs
  tensor_map = {}
  for i, tensor in enumerate(tail_graph.tensors):
    if i == tail_input:
      tensor_map[i] = int(features)
      continue
    if tensor.buffer:  # Buffer 0 is the empty one of every model.
      model.buffers.append(tail.buffers[tensor.buffer])
      tensor.buffer = len(model.buffers) - 1
    graph.tensors.append(tensor)
    tensor_map[i] = len(graph.tensors) - 1

  def renumber(indices):
    return np.array([tensor_map[int(i)] if i >= 0 else -1 for i in indices],
                    np.int32)

  for op in tail_graph.operators:
    code = tail.operatorCodes[op.opcodeIndex]
    op.opcodeIndex = _opcode(model, max(code.builtinCode,
                                        code.deprecatedBuiltinCode),
                             version=code.version)
    op.inputs, op.outputs = renumber(op.inputs), renumber(op.outputs)
    graph.operators.append(op)
  graph.outputs = renumber(tail_graph.outputs)
  tail_outputs = (tail.signatureDefs[0].outputs if tail.signatureDefs
                  else [])
  for signature in model.signatureDefs or []:
    signature.outputs = []
    for entry in tail_outputs:
      output = schema.TensorMapT()
      output.name, output.tensorIndex = entry.name, tensor_map[
          entry.tensorIndex]
      signature.outputs.append(output)


def _opcode(model, builtin, *, version=1):
  """Index of the operator code for `builtin` in the model, added if needed.

  An existing code of a lower version is raised to `version`: a kernel of a
  version also runs what the older versions describe.
  """
  for i, code in enumerate(model.operatorCodes):
    if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
      code.version = max(code.version, version)
      return i
  code = schema.OperatorCodeT()
  code.builtinCode = builtin
  # Codes up to 127 are also kept in the old one-byte field that older
  # runtimes read.
  code.deprecatedBuiltinCode = min(builtin, 127)
  code.version = version
  model.operatorCodes.append(code)
  return len(model.operatorCodes) - 1
