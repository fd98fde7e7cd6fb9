"""Backbone + head -> a .tflite classifier, in float32 or int8 form.

Both forms take float32 images [batch, height, width, 3] in [0, 1] (the batch
can be resized) and return float32 probabilities [batch, classes]; both carry
labels.txt and bottleneck.json (see `tflite`), so `label_image.py
--tflite_model` needs no other file.

  float32  the float backbone and the head, converted by TFLiteConverter.
  int8     the cached int8 backbone of the cache stage (see `quantize`), bit
           for bit, with the head appended as a float32 FULLY_CONNECTED and
           SOFTMAX: the very features the head was trained on when the run
           used --backbone_precision int8, and a head that costs nothing next
           to the backbone. Its input and output stay float32 (quantized and
           dequantized inside), so it is not for integer-only accelerators.
"""

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=g-direct-tensorflow-import
from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-direct-tensorflow-import

from bottleneck.features import quantize
from bottleneck.features import tflite


def float_classifier(backbone, head):
  """The float32 .tflite classifier, without attached files.

  Args:
    backbone: a float32 `backbones.Backbone`.
    head: a `head.Head`.

  Returns:
    bytes.

  Raises:
    errors.ModelError: the backbone cannot be converted.
  """
  weights, biases = tf.constant(head.weights), tf.constant(head.biases)
  height, width = backbone.image_size

  @tf.function(input_signature=[
      tf.TensorSpec([None, height, width, 3], tf.float32, name='images')])
  def classify(images):
    logits = tf.matmul(backbone.features(images), weights) + biases
    return tf.nn.softmax(logits, name='probabilities')

  return quantize.to_tflite(classify.get_concrete_function(),
                            name=backbone.name)


def int8_classifier(backbone, head):
  """The int8 .tflite classifier, without attached files.

  Args:
    backbone: an int8 `backbones.Backbone` (`quantize.int8_backbone`).
    head: a `head.Head`.

  Returns:
    bytes.
  """
  model = flatbuffer_utils.convert_bytearray_to_object(
      bytearray(backbone.tflite_model))
  graph = model.subgraphs[0]
  (features,) = graph.outputs
  classes = head.biases.shape[0]

  def tensor(name, shape, data=None):
    buffer = schema.BufferT()
    if data is not None:
      buffer.data = np.frombuffer(np.ascontiguousarray(data, np.float32)
                                  .tobytes(), np.uint8)
    model.buffers.append(buffer)
    t = schema.TensorT()
    t.name, t.type, t.buffer = name, schema.TensorType.FLOAT32, len(
        model.buffers) - 1
    t.shape = np.array([1 if d < 0 else d for d in shape], np.int32)
    t.shapeSignature = np.array(shape, np.int32)
    graph.tensors.append(t)
    return len(graph.tensors) - 1

  def operator(builtin, options_type, options, inputs, outputs):
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(model, builtin)
    op.inputs = np.array(inputs, np.int32)
    op.outputs = np.array(outputs, np.int32)
    op.builtinOptionsType, op.builtinOptions = options_type, options
    graph.operators.append(op)

  # TFLite's fully connected layer keeps its weights as [out, in].
  kernel = tensor('head/weights', head.weights.T.shape, head.weights.T)
  bias = tensor('head/biases', [classes], head.biases)
  logits = tensor('head/logits', [-1, classes])
  probabilities = tensor('probabilities', [-1, classes])
  fc_options = schema.FullyConnectedOptionsT()
  fc_options.fusedActivationFunction = schema.ActivationFunctionType.NONE
  operator(schema.BuiltinOperator.FULLY_CONNECTED,
           schema.BuiltinOptions.FullyConnectedOptions, fc_options,
           [features, kernel, bias], [logits])
  softmax_options = schema.SoftmaxOptionsT()
  softmax_options.beta = 1.0
  operator(schema.BuiltinOperator.SOFTMAX, schema.BuiltinOptions.SoftmaxOptions,
           softmax_options, [logits], [probabilities])
  graph.outputs = np.array([probabilities], np.int32)
  for signature in model.signatureDefs or []:
    output = schema.TensorMapT()
    output.name, output.tensorIndex = 'probabilities', probabilities
    signature.outputs = [output]
  data = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
  tflite.Runner(data, name='the int8 classifier')  # Fails now, not on a phone.
  return data


def _opcode(model, builtin):
  """Index of the operator code for `builtin` in the model, added if needed."""
  for i, code in enumerate(model.operatorCodes):
    if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
      return i
  code = schema.OperatorCodeT()
  code.builtinCode = builtin
  # Codes up to 127 are also kept in the old one-byte field that older
  # runtimes read.
  code.deprecatedBuiltinCode = min(builtin, 127)
  code.version = 1
  model.operatorCodes.append(code)
  return len(model.operatorCodes) - 1
