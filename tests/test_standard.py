"""Tests of the standard head recipe (train/standard.py) and --head_recipe."""

import json
import logging
import os
import sys
import types

import conftest
import numpy as np
from PIL import Image
import pytest

from bottleneck import config
from bottleneck import errors
from bottleneck.export import formats
from bottleneck.run import fingerprint
from bottleneck.train import head as head_lib
from bottleneck.train import lbfgs
from bottleneck.train import recipes
from bottleneck.train import scaling
from bottleneck.train import standard

SCHEDULE = head_lib.Schedule(steps=500, learning_rate=0.01, train_batch_size=100,
                             eval_step_interval=10, validation_batch_size=100)

clusters = conftest.clusters
accuracy = conftest.head_accuracy


def train(train_split, validation, num_classes, **kwargs):
  return standard.train_head(train_split, validation, num_classes=num_classes,
                             schedule=SCHEDULE, seed=0, **kwargs)


def chosen_strength(messages):
  [line] = [m for m in messages if m.startswith('Chose L2 strength')]
  return float(line.split()[3].rstrip(','))


def test_learns_separable_classes_and_logs_like_retrain_py(caplog):
  caplog.set_level(logging.INFO)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 800)
  vectors = clusters(rng, labels)
  head = train((vectors[:600], labels[:600]),
               (vectors[600:700], labels[600:700]), 4)
  assert head.weights.shape == (16, 4) and head.weights.dtype == np.float32
  assert head.biases.shape == (4,) and head.biases.dtype == np.float32
  assert accuracy(head, vectors[700:], labels[700:]) >= 0.9
  for line in ('Step 0: Train accuracy = ', 'Step 0: Cross entropy = ',
               'Step 0: Validation accuracy = ', '(N=100)',
               'chosen on 100 validation photos', 'Chose L2 strength'):
    assert line in caplog.text


def test_random_labels_stay_near_chance():
  rng = np.random.default_rng(1)
  vectors = clusters(rng, rng.integers(0, 4, 800))
  labels = rng.integers(0, 4, 800)  # Unrelated to the vectors.
  head = train((vectors[:600], labels[:600]),
               (vectors[600:700], labels[600:700]), 4)
  assert accuracy(head, vectors[700:], labels[700:]) < 0.5


def test_folding_the_standardization_into_the_head_is_exact():
  rng = np.random.default_rng(2)
  # Offsets and scales far apart, and a constant feature (std 0).
  vectors = (rng.normal(0, 1, (50, 6)) * [1e-3, 1, 1e3, 5, 0, 2] +
             [0, 100, -5, 0, 7, 0.5]).astype(np.float32)
  stats = scaling.Standardization.of(vectors)
  assert stats.scale[4] == 1.0  # Constant: left unscaled, sent to 0.
  weights, biases = rng.normal(0, 1, (6, 3)), rng.normal(0, 1, 3)
  logits = ((vectors - stats.mean) / stats.scale) @ weights + biases
  expected = np.exp(logits - logits.max(axis=1, keepdims=True))
  expected /= expected.sum(axis=1, keepdims=True)
  folded = scaling.fold(weights, biases, stats)
  np.testing.assert_allclose(folded.probabilities(vectors), expected,
                             atol=1e-5)
  np.testing.assert_allclose(scaling.Standardization.of(vectors).apply(
      vectors)[:, 4], 0)


def test_each_layer_has_the_same_total_variance_and_folds_exactly():
  rng = np.random.default_rng(11)
  groups = (2, 6, 4)  # Widths of three layers side by side.
  vectors = (rng.normal(0, 1, (60, 12)) * rng.uniform(0.01, 100, 12) +
             rng.normal(0, 10, 12)).astype(np.float32)
  stats = scaling.Standardization.of(vectors, groups)
  x = stats.apply(vectors).astype(np.float64)
  variances = [x[:, a:b].var(axis=0).sum()
               for a, b in ((0, 2), (2, 8), (8, 12))]
  np.testing.assert_allclose(variances, [12 / 3] * 3, rtol=1e-4)
  # One layer: plain standardization, as before layers were weighed.
  np.testing.assert_allclose(scaling.layer_weights((12,), 12), 1)
  np.testing.assert_allclose(
      scaling.Standardization.of(vectors, (12,)).scale,
      scaling.Standardization.of(vectors).scale)
  weights, biases = rng.normal(0, 1, (12, 3)), rng.normal(0, 1, 3)
  logits = x @ weights + biases
  expected = np.exp(logits - logits.max(axis=1, keepdims=True))
  expected /= expected.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(
      scaling.fold(weights, biases, stats).probabilities(vectors), expected,
      atol=1e-5)
  with pytest.raises(ValueError, match=r'\(2, 6\) \(sum 8\) do not split '
                     'vectors of 12'):
    scaling.layer_weights((2, 6), 12)


def test_a_narrow_informative_layer_is_not_drowned_by_a_wide_one(caplog):
  """4 features that tell the classes, beside 400 of noise, weighed alike."""
  caplog.set_level(logging.INFO)
  rng = np.random.default_rng(12)
  labels = rng.integers(0, 4, 700)
  vectors = np.concatenate([clusters(rng, labels, dim=4, spread=1.5),
                            rng.normal(0, 1, (700, 400)).astype(np.float32)],
                           axis=1)
  data = ((vectors[:300], labels[:300]), (vectors[300:400], labels[300:400]))
  weighed = train(*data, 4, groups=(4, 400))
  plain = train(*data, 4)
  assert 'each of 2 layers weighted alike' in caplog.text
  assert (accuracy(weighed, vectors[400:], labels[400:]) >
          accuracy(plain, vectors[400:], labels[400:]))


def objective_gradient(head, vectors, labels, strength, stats):
  """Largest gradient of cross entropy + L2 on standardized vectors."""
  # Unfold: the weights and biases on standardized vectors.
  weights = head.weights.astype(np.float64) * stats.scale[:, None]
  biases = head.biases + (stats.mean / stats.scale) @ weights
  x = (vectors - stats.mean) / stats.scale
  logits = x @ weights + biases
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  p[np.arange(len(labels)), labels] -= 1
  d_weights = x.T @ p / len(labels) + 2 * strength * weights
  assert np.abs(weights).max() > 0.1  # Not stuck at the start.
  return max(np.abs(d_weights).max(), np.abs(p.mean(axis=0)).max())


def test_reaches_the_minimum_of_its_objective(caplog):
  """At the head it returns, the gradient of cross entropy + L2 is ~0."""
  caplog.set_level(logging.INFO)
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 3, 300)
  vectors = clusters(rng, labels, dim=20, num_classes=3, spread=1.0)
  stats = scaling.Standardization.of(vectors[:240])
  # Without validation photos: the default strength.
  head = train((vectors[:240], labels[:240]), (vectors[:0], labels[:0]), 3)
  assert objective_gradient(head, vectors[:240], labels[:240],
                            config.DEFAULT_L2, stats) < 1e-3
  # With them: the chosen strength, on the training photos only.
  head = train((vectors[:240], labels[:240]), (vectors[240:], labels[240:]), 3)
  strength = chosen_strength(caplog.messages)
  assert objective_gradient(head, vectors[:240], labels[:240], strength,
                            stats) < 1e-3


def test_lbfgs_finds_the_minimum_of_an_ill_conditioned_quadratic():
  rng = np.random.default_rng(10)
  curvature = np.logspace(-3, 3, 50)  # Condition number 1e6.
  target = rng.normal(0, 1, 50)

  def function(theta):
    d = theta - target
    return 0.5 * np.sum(curvature * d * d), curvature * d, None

  lines = []
  theta, steps, _ = lbfgs.minimize(function, np.zeros(50), max_steps=1000,
                                   report=lambda *args: lines.append(args))
  assert len(lines) == steps < 1000 and lines[-1][-1]  # Converged, last.
  assert function(theta)[0] < 1e-6 * function(np.zeros(50))[0]


@pytest.mark.parametrize('dim,num_classes', [(3000, 2), (3000, 5), (64, 120)])
def test_fits_wide_mixed_features_and_many_classes(dim, num_classes):
  rng = np.random.default_rng(4)
  n = max(400, 10 * num_classes)
  labels = rng.integers(0, num_classes, 2 * n)
  # As a network's features: many correlated numbers driven by a few latent
  # ones (here 32, where the classes differ), plus noise of their own.
  latent = clusters(rng, labels, dim=32, num_classes=num_classes)
  basis = rng.normal(0, 1, (32, dim)) / 4
  vectors = latent @ basis + rng.normal(0, 1, (2 * n, dim))
  # Blocks of features with scales 1e-3 ... 1e3 and offsets, as layers of a
  # network side by side; a few constant features.
  vectors = vectors * np.logspace(-3, 3, dim) + np.linspace(0, 50, dim)
  vectors[:, -3:] = 4.0
  vectors = vectors.astype(np.float32)
  val = slice(n, n + n // 4)
  head = train((vectors[:n], labels[:n]), (vectors[val], labels[val]),
               num_classes)
  assert accuracy(head, vectors[n + n // 4:], labels[n + n // 4:]) >= 0.9


def test_strength_is_chosen_on_the_validation_photos(caplog):
  caplog.set_level(logging.INFO)
  rng = np.random.default_rng(5)
  # Training labels that are noise: every fit only learns the noise, so the
  # validation photos must pick one of the strongest strengths, which learn
  # least (the strongest few are tied to a thousandth).
  vectors = rng.normal(0, 1, (300, 40)).astype(np.float32)
  noise = rng.integers(0, 3, 300)
  train((vectors[:200], noise[:200]), (vectors[200:], noise[200:]), 3)
  assert chosen_strength(caplog.messages) >= 1.0
  # Clean, plentiful data: a weak strength fits best.
  caplog.clear()
  labels = rng.integers(0, 3, 3000)
  vectors = clusters(rng, labels, dim=40, num_classes=3, spread=1.5)
  train((vectors[:2000], labels[:2000]), (vectors[2000:], labels[2000:]), 3)
  assert chosen_strength(caplog.messages) <= 1e-2


def test_without_validation_photos_the_default_strength_is_used(caplog):
  caplog.set_level(logging.INFO)
  rng = np.random.default_rng(6)
  labels = rng.integers(0, 4, 200)
  vectors = clusters(rng, labels)
  head = train((vectors, labels), (vectors[:0], labels[:0]), 4)
  assert accuracy(head, vectors, labels) >= 0.9
  assert (f'L2 strength {config.DEFAULT_L2:.0e}, the default (no validation '
          'photos') in caplog.text
  assert 'Validation accuracy' not in caplog.text


def test_same_data_same_head_and_tensorboard_scalars(tmp_path):
  rng = np.random.default_rng(7)
  labels = rng.integers(0, 4, 300)
  vectors = clusters(rng, labels)
  heads = [train((vectors[:200], labels[:200]),
                 (vectors[200:], labels[200:]), 4,
                 summaries_dir=str(tmp_path / str(i))) for i in range(2)]
  np.testing.assert_array_equal(heads[0].weights, heads[1].weights)
  np.testing.assert_array_equal(heads[0].biases, heads[1].biases)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for name in ('train', 'validation'):
    [events] = (tmp_path / '0' / name).glob('events.out.tfevents.*')
    steps = {}
    for event in tf.compat.v1.train.summary_iterator(str(events)):
      for value in event.summary.value:
        steps.setdefault(value.tag, []).append(event.step)
    assert sorted(steps) == ['accuracy', 'cross_entropy']
    assert steps['accuracy'][0] == 0 and len(steps['accuracy']) > 3
    assert steps['accuracy'] == sorted(steps['accuracy'])


def test_retrain_only_flags_are_named_when_the_standard_recipe_ignores_them(
    caplog):
  rng = np.random.default_rng(8)
  labels = rng.integers(0, 4, 200)
  vectors = clusters(rng, labels)
  run = config.RetrainConfig(image_dir='-', learning_rate=0.5,
                             train_batch_size=32)
  recipes.train_head(run, (vectors, labels), (vectors[:20], labels[:20]),
                     num_classes=4)
  assert ('--learning_rate, --train_batch_size only apply to --head_recipe '
          'retrain; the standard recipe ignores them.') in caplog.text
  with pytest.raises(errors.UsageError, match='--head_recipe is .sgd.'):
    config.RetrainConfig(image_dir='-', head_recipe='sgd')


def test_the_recipe_counts_in_the_fingerprint():
  backbone = types.SimpleNamespace(identity='b')
  prints = {recipe: fingerprint.run_fingerprint(
      config.RetrainConfig(image_dir='-', head_recipe=recipe), backbone,
      ['a', 'b'], []) for recipe in config.HEAD_RECIPES}
  assert len(set(prints.values())) == len(config.HEAD_RECIPES)


def exported_accuracy(outputs):
  with open(os.path.join(outputs['saved_model_dir'], 'assets',
                         formats.METADATA_FILE)) as f:
    return json.load(f)['test_accuracy']


def test_retrain_py_with_the_standard_recipe(tmp_path, hub_module, outputs,
                                             caplog):
  caplog.set_level(logging.INFO)
  conftest.write_photos(tmp_path / 'photos', per_class=40)
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module, **outputs) == 0
  assert exported_accuracy(outputs) >= 0.9
  assert 'Head: standard recipe' in caplog.text


def test_retrain_py_with_random_labels_fails_the_floor(tmp_path, hub_module,
                                                        outputs):
  rng = np.random.default_rng(9)
  colours = list(conftest.COLOURS.values())
  for name in ('first', 'second', 'third'):
    os.makedirs(tmp_path / 'photos' / name)
    for i in range(40):  # Each photo's colour is drawn apart from its class.
      colour = np.array(colours[rng.integers(0, 3)])
      pixels = np.clip(colour + rng.normal(0, 20, (48, 64, 3)), 0, 255)
      Image.fromarray(pixels.astype(np.uint8)).save(
          tmp_path / 'photos' / name / f'photo_{i:03d}.jpg')
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module, **outputs) == 0
  assert exported_accuracy(outputs) < 0.7


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
