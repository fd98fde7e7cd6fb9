"""What every export computes from the backbone's features, in one place.

  probabilities  float32 [batch, classes], the head's softmax (its
                 temperature folded in: `calibration`).
  unknown_score  float32 [batch], the "unknown" score of `open_set`: above 1.0
                 means the photo looks like none of the classes at the
                 threshold fitted by retrain.py. Only when the head has one.

The SavedModel's signatures, the float32 .tflite and the head grafted onto
the int8 .tflite (`tflite_file`) all call `head_outputs`, so they cannot
compute different things. The frozen graph keeps retrain.py's contract
(`final_result` alone).
"""

import tensorflow as tf

from bottleneck.export import formats

PROBABILITIES = formats.PROBABILITIES
UNKNOWN_SCORE = formats.UNKNOWN_SCORE


class HeadConstants(tf.Module):
  """The head's arrays as non-trainable variables (a SavedModel keeps them)."""

  def __init__(self, head):
    super().__init__()
    self.head_weights = tf.Variable(head.weights, trainable=False)
    self.head_biases = tf.Variable(head.biases, trainable=False)
    unknown = head.unknown
    self.has_unknown = unknown is not None
    if self.has_unknown:
      self.unknown_center = tf.Variable(unknown.center, trainable=False)
      self.unknown_directions = tf.Variable(unknown.directions,
                                            trainable=False)
      self.unknown_class_weights = tf.Variable(unknown.class_weights,
                                               trainable=False)
      self.unknown_class_biases = tf.Variable(unknown.class_biases,
                                              trainable=False)
      self.unknown_scale = tf.Variable(
          [1.0 / unknown.rest / unknown.threshold, 1.0 / unknown.threshold],
          trainable=False)

  def head_outputs(self, features):
    """float32 features [batch, feature_dim] -> dict of the outputs above."""
    logits = tf.matmul(features, self.head_weights) + self.head_biases
    outputs = {PROBABILITIES: tf.nn.softmax(logits, name=PROBABILITIES)}
    if self.has_unknown:
      x = features - self.unknown_center
      spread = tf.reduce_sum(x * x, axis=1)
      lead = tf.reduce_sum(tf.square(tf.matmul(x, self.unknown_directions)),
                           axis=1)
      nearest = tf.reduce_min(tf.matmul(x, self.unknown_class_weights) +
                              self.unknown_class_biases, axis=1)
      outputs[UNKNOWN_SCORE] = tf.identity(
          spread * self.unknown_scale[0] +
          (nearest - lead) * self.unknown_scale[1], name=UNKNOWN_SCORE)
    return outputs
