"""Tests of the softmax head on vectors made for the purpose."""

import dataclasses
import logging
import sys

import conftest
import numpy as np
import pytest

from bottleneck import config
from bottleneck.train import head as head_lib
from bottleneck.train import recipes

SCHEDULE = head_lib.Schedule(steps=400, learning_rate=0.5, train_batch_size=50,
                             eval_step_interval=100, validation_batch_size=-1)

clusters = conftest.clusters
accuracy = conftest.head_accuracy


def test_learns_separable_classes_and_logs_like_retrain_py(caplog):
  caplog.set_level(logging.INFO)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 800)
  vectors = clusters(rng, labels)
  head = head_lib.train_head((vectors[:600], labels[:600]),
                             (vectors[600:700], labels[600:700]),
                             num_classes=4, schedule=SCHEDULE, seed=0)
  assert head.weights.shape == (16, 4) and head.biases.shape == (4,)
  assert accuracy(head, vectors[700:], labels[700:]) >= 0.9
  probabilities = head.probabilities(vectors[:5])
  np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
  for line in ('Step 0: Train accuracy = ', 'Step 399: Cross entropy = ',
               'Step 100: Validation accuracy = ', '(N=100)'):
    assert line in caplog.text


def test_random_labels_stay_near_chance():
  rng = np.random.default_rng(1)
  vectors = clusters(rng, rng.integers(0, 4, 800))
  labels = rng.integers(0, 4, 800)  # Unrelated to the vectors.
  head = head_lib.train_head((vectors[:600], labels[:600]),
                             (vectors[600:700], labels[600:700]),
                             num_classes=4, schedule=SCHEDULE, seed=0)
  assert accuracy(head, vectors[700:], labels[700:]) < 0.5


def test_seed_decides_the_result(tmp_path):
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 4, 300)
  vectors = clusters(rng, labels)
  schedule = head_lib.Schedule(steps=20, learning_rate=0.5, train_batch_size=10,
                               eval_step_interval=10, validation_batch_size=5)
  runs = [head_lib.train_head((vectors, labels), (vectors, labels),
                              num_classes=4, schedule=schedule, seed=seed,
                              summaries_dir=str(tmp_path / str(i)))
          for i, seed in enumerate((7, 7, 8))]
  np.testing.assert_array_equal(runs[0].weights, runs[1].weights)
  assert not np.array_equal(runs[0].weights, runs[2].weights)
  for name in ('train', 'validation'):
    [events] = (tmp_path / '0' / name).glob('events.out.tfevents.*')
    scalars = read_scalars(events)
    assert sorted(scalars) == ['accuracy', 'cross_entropy']
    assert [step for step, _ in scalars['accuracy']] == [0, 10, 19]
    assert all(0 <= value <= 1 for _, value in scalars['accuracy'])


def read_scalars(path):
  """{tag: [(step, value)]} as TensorBoard's scalar plugin reads them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scalars = {}
  for event in tf.compat.v1.train.summary_iterator(str(path)):
    for value in event.summary.value:
      assert value.metadata.plugin_data.plugin_name == 'scalars'
      scalars.setdefault(value.tag, []).append(
          (event.step, float(tf.make_ndarray(value.tensor))))
  return scalars


def test_a_step_follows_tensorflows_gradient():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 3, 40)
  vectors = rng.normal(0, 1, (40, 8)).astype(np.float32)
  one_step = head_lib.Schedule(steps=1, learning_rate=0.5, train_batch_size=40,
                               eval_step_interval=10, validation_batch_size=-1)
  start = head_lib.train_head((vectors, labels), (vectors[:0], labels[:0]),
                              num_classes=3, seed=4,
                              schedule=dataclasses.replace(one_step, steps=0))
  after = head_lib.train_head((vectors, labels), (vectors[:0], labels[:0]),
                              num_classes=3, schedule=one_step, seed=4)
  weights, biases = tf.Variable(start.weights), tf.Variable(start.biases)
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, vectors @ weights + biases))
  d_weights, d_biases = tape.gradient(loss, [weights, biases])
  np.testing.assert_allclose(after.weights, start.weights - 0.5 * d_weights,
                             atol=1e-6)
  np.testing.assert_allclose(after.biases, start.biases - 0.5 * d_biases,
                             atol=1e-6)
  assert np.abs(start.weights).max() <= 0.002  # Truncated at 2 stddev.


def test_retrain_recipe_is_the_old_head_bit_for_bit(caplog):
  """--head_recipe retrain runs this module's train_head, unchanged.

  The figures were printed by train_head at commit 20f0c04, before the
  standard recipe existed, with these data, schedule and seed.
  """
  caplog.set_level(logging.INFO)
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 3, 60)
  vectors = rng.normal(0, 1, (60, 8)).astype(np.float32) + labels[:, None]
  split = dict(train=(vectors[:40], labels[:40]),
               validation=(vectors[40:], labels[40:]), num_classes=3)
  run = config.RetrainConfig(
      image_dir='-', head_recipe='retrain', how_many_training_steps=50,
      learning_rate=0.1, train_batch_size=10, eval_step_interval=10,
      validation_batch_size=20, random_seed=3)
  head = recipes.train_head(run, **split)
  recipe_log = caplog.text
  caplog.clear()
  direct = head_lib.train_head(**split, seed=3, schedule=head_lib.Schedule(
      steps=50, learning_rate=0.1, train_batch_size=10, eval_step_interval=10,
      validation_batch_size=20))
  np.testing.assert_array_equal(head.weights, direct.weights)
  np.testing.assert_array_equal(head.biases, direct.biases)
  assert recipe_log == caplog.text and 'Step 49: Cross entropy' in recipe_log
  np.testing.assert_allclose(head.weights[:2], [
      [-0.2630281448364258, -0.010222852230072021, 0.2740268111228943],
      [-0.35428574681282043, 0.1676517128944397, 0.1853979378938675]],
                             rtol=1e-5)
  np.testing.assert_allclose(head.biases, [
      0.6527917981147766, -0.017254352569580078, -0.6355375051498413],
                             rtol=1e-5)


def test_sample_takes_the_whole_set_when_asked_for_as_many():
  rng = np.random.default_rng(0)
  assert head_lib.sample(rng, 3, 100).tolist() == [0, 1, 2]
  assert head_lib.sample(rng, 5, -1).tolist() == [0, 1, 2, 3, 4]
  drawn = head_lib.sample(rng, 50, 10)
  assert len(drawn) == 10 and drawn.max() < 50


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
