"""The fast stage: a softmax layer trained on cached bottleneck vectors.

The same model and schedule as retrain.py's final layer: one dense layer,
weights from a truncated normal with stddev 0.001, plain gradient descent on
the mean softmax cross entropy, a random batch (with replacement) per step, and
an evaluation every `eval_step_interval` steps. All vectors are held in memory;
4,000 steps on 2,000 MobileNetV2 vectors take a few seconds on a CPU.
"""

import dataclasses
import os

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2  # pylint: disable=g-direct-tensorflow-import

# What TensorBoard's scalar plugin writes with each value. tf.summary.scalar
# would do the same but needs the tensorboard package, which TensorFlow no
# longer installs; viewing the logs needs it, writing them does not.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))


@dataclasses.dataclass
class Head:
  """A trained softmax layer.

  Attributes:
    weights: float32 [feature_dim, num_classes].
    biases: float32 [num_classes].
  """
  weights: np.ndarray
  biases: np.ndarray

  def probabilities(self, vectors):
    """float32 [batch, feature_dim] -> float32 [batch, num_classes] softmax."""
    logits = vectors @ self.weights + self.biases
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """retrain.py's training flags; see config.RetrainConfig for the defaults."""
  steps: int
  learning_rate: float
  train_batch_size: int
  eval_step_interval: int
  validation_batch_size: int  # -1: the whole validation set.


def train_head(train, validation, *, num_classes, schedule, seed,
               summaries_dir=None):
  """Trains the softmax layer, logging retrain.py's lines as it goes.

  Args:
    train: (vectors float32 [n, feature_dim], labels int [n]).
    validation: the same, may be empty.
    num_classes: number of classes.
    schedule: a `Schedule`.
    seed: int; the same seed and data give the same head.
    summaries_dir: if set, TensorBoard scalars go to its train/ and validation/
      subfolders.

  Returns:
    A `Head`.
  """
  train_x, train_y = _tensors(train)
  val_x, val_y = _tensors(validation)
  rng = np.random.default_rng(seed)
  feature_dim = train_x.shape[1]
  weights = tf.Variable(tf.random.stateless_truncated_normal(
      [feature_dim, num_classes], seed=[seed, 0], stddev=0.001))
  biases = tf.Variable(tf.zeros([num_classes]))
  learning_rate = tf.constant(schedule.learning_rate, tf.float32)

  def loss_and_accuracy(vectors, labels, indices):
    logits = tf.matmul(tf.gather(vectors, indices), weights) + biases
    y = tf.gather(labels, indices)
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    return loss, _accuracy(logits, y)

  @tf.function
  def step(indices):
    with tf.GradientTape() as tape:
      loss, accuracy = loss_and_accuracy(train_x, train_y, indices)
    for variable, gradient in zip([weights, biases],
                                  tape.gradient(loss, [weights, biases])):
      variable.assign_sub(learning_rate * gradient)  # Plain gradient descent.
    return loss, accuracy

  @tf.function
  def evaluate(indices):
    return loss_and_accuracy(val_x, val_y, indices)

  writers = None
  if summaries_dir:
    writers = {name: tf.summary.create_file_writer(
        os.path.join(summaries_dir, name)) for name in ('train', 'validation')}
  num_val = int(val_x.shape[0])
  for i in range(schedule.steps):
    loss, train_accuracy = step(
        sample(rng, train_x.shape[0], schedule.train_batch_size))
    if i % schedule.eval_step_interval and i + 1 != schedule.steps:
      continue
    logging.info('Step %d: Train accuracy = %.1f%%', i, train_accuracy * 100)
    logging.info('Step %d: Cross entropy = %f', i, loss)
    scalars = {'train': {'accuracy': train_accuracy, 'cross_entropy': loss}}
    if num_val:
      indices = sample(rng, num_val, schedule.validation_batch_size)
      val_loss, val_accuracy = evaluate(indices)
      logging.info('Step %d: Validation accuracy = %.1f%% (N=%d)', i,
                   val_accuracy * 100, len(indices))
      scalars['validation'] = {'accuracy': val_accuracy,
                               'cross_entropy': val_loss}
    if writers:
      for name, values in scalars.items():
        with writers[name].as_default():
          for tag, value in values.items():
            tf.summary.write(tag, tf.cast(value, tf.float32), step=i,
                             metadata=_SCALAR_METADATA)
  if writers:
    for writer in writers.values():
      writer.close()
  return Head(weights.numpy(), biases.numpy())


def _tensors(split):
  vectors, labels = split
  return (tf.constant(vectors, tf.float32),
          tf.constant(np.asarray(labels, np.int32)))


def _accuracy(logits, labels):
  predictions = tf.argmax(logits, axis=1, output_type=tf.int32)
  return tf.reduce_mean(tf.cast(tf.equal(predictions, labels), tf.float32))


def sample(rng, count, batch_size):
  """Indices of an evaluation sample, as retrain.py drew them.

  Args:
    rng: a numpy Generator.
    count: size of the set.
    batch_size: -1 for the whole set in order, else this many drawn at random
      with replacement. A sample as large as the set is the whole set: drawing
      100 from 3 validation photos (retrain.py did) only adds noise.

  Returns:
    int numpy array [count] or [batch_size].
  """
  if batch_size == -1 or batch_size >= count:
    return np.arange(count)
  return rng.integers(0, count, batch_size)
