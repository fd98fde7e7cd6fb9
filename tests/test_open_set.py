"""The "unknown" score (train/open_set.py), calibration, and both in exports."""

import json
import os

from ai_edge_litert import interpreter as litert
import conftest
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bottleneck import predict
from bottleneck.features import backbones
from bottleneck.features import quantize
from bottleneck.run import release
from bottleneck.train import calibration
from bottleneck.train import head as head_lib
from bottleneck.train import open_set


def gaussian_classes(rng, n, dim, num_classes, correlated=True, spread=4.0):
  """float [n, dim] vectors around num_classes means, a shared covariance."""
  labels = rng.integers(0, num_classes, n)
  means = rng.normal(0, spread, (num_classes, dim))
  mixing = (rng.normal(0, 1, (dim, dim)) / np.sqrt(dim) + np.eye(dim)
            if correlated else np.eye(dim))
  return means[labels] + rng.normal(0, 1, (n, dim)) @ mixing, labels


def exact_distances(vectors, train, alpha):
  """Squared Mahalanobis distance to the nearest class mean, by the book."""
  x, y = train
  means = np.stack([x[y == c].mean(0) for c in range(y.max() + 1)])
  residuals = x - means[y]
  covariance = residuals.T @ residuals / len(x)
  shrunk = (1 - alpha) * covariance + alpha * np.diag(np.diag(covariance))
  precision = np.linalg.inv(shrunk)
  return np.min([np.einsum('nd,de,ne->n', vectors - m, precision, vectors - m)
                 for m in means], axis=0)


def test_the_distance_is_mahalanobis_when_every_direction_is_kept():
  rng = np.random.default_rng(0)
  train = gaussian_classes(rng, 600, 12, 3)
  validation = gaussian_classes(rng, 100, 12, 3)
  fitted = open_set.fit(train, validation, num_classes=3, rank=11)
  alpha = open_set.shrinkage(train[0] - np.stack(
      [train[0][train[1] == c].mean(0) for c in range(3)])[train[1]])
  queries = rng.normal(0, 5, (20, 12))
  np.testing.assert_allclose(fitted.distances(queries),
                             exact_distances(queries, train, alpha), rtol=1e-6)


def test_shrinkage_is_small_for_many_photos_and_large_for_few():
  rng = np.random.default_rng(1)
  mixing = rng.normal(0, 1, (30, 30))
  many = rng.normal(0, 1, (5000, 30)) @ mixing
  few = rng.normal(0, 1, (12, 30)) @ mixing
  assert open_set.shrinkage(many) < 0.05 < 0.3 < open_set.shrinkage(few) <= 1


def test_threshold_turns_away_about_5_percent_in_domain_and_far_points():
  rng = np.random.default_rng(2)
  x, y = gaussian_classes(rng, 3000, 40, 4)
  fitted = open_set.fit((x[:2000], y[:2000]), (x[2000:2400], y[2000:2400]),
                        num_classes=4, rank=8)
  in_domain = open_set.unknown_rate(fitted, x[2400:])
  far = open_set.unknown_rate(fitted, rng.normal(0, 1, (500, 40)) * 3 + 20)
  assert 0.02 <= in_domain <= 0.09 and far == 1.0


def test_too_few_validation_photos_fit_nothing():
  rng = np.random.default_rng(3)
  x, y = gaussian_classes(rng, 200, 5, 2)
  assert open_set.fit((x[:190], y[:190]), (x[190:], y[190:]),
                      num_classes=2) is None


def test_temperature_undoes_an_overconfident_head():
  rng = np.random.default_rng(4)
  x, y = gaussian_classes(rng, 4000, 6, 3, correlated=False, spread=0.6)
  # Unit-variance classes: the true posterior is this linear head; made 5x
  # overconfident, T must come back near 5.
  means = np.stack([x[y == c].mean(0) for c in range(3)])
  fair = head_lib.Head(means.T.astype(np.float32),
                       (-(means ** 2).sum(1) / 2).astype(np.float32))
  loud = calibration.scaled(fair, 0.2)
  calibrated, figures = calibration.calibrate(loud, (x[:2000], y[:2000]),
                                              (x[2000:], y[2000:]))
  assert 4 < figures['temperature'] < 6
  assert figures['ece_after'] < figures['ece_before'] / 2
  assert (calibrated.probabilities(x).argmax(1) ==
          loud.probabilities(x).argmax(1)).all()


def test_ece_is_zero_for_a_perfectly_calibrated_toy_and_large_otherwise():
  # Four photos at 0.75, three of them right: calibrated; none right: not.
  probabilities = np.array([[0.75, 0.25]] * 4)
  assert calibration.expected_calibration_error(
      probabilities, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
  assert calibration.expected_calibration_error(
      probabilities, np.array([1, 1, 1, 1])) == pytest.approx(0.75)


@pytest.fixture(scope='module')
def open_run(tmp_path_factory, layout_module):
  """A run with enough validation photos to fit the score, every output."""
  root = tmp_path_factory.mktemp('open')
  conftest.write_layout_photos(root / 'photos', per_class=40)
  flags = dict(image_dir=str(root / 'photos'), tfhub_module=layout_module,
               validation_percentage=25, **conftest.output_flags(root),
               tflite_output_file=str(root / 'model.tflite'),
               tflite_int8_output_file=str(root / 'model_int8.tflite'))
  assert conftest.run_retrain(**flags) == 0
  return flags, root


def exported_open_set(saved_model_dir):
  """The export's unknown score as numpy: float32 [n, d] -> [n]."""
  reader = tf.train.load_checkpoint(
      os.path.join(saved_model_dir, 'variables', 'variables'))
  get = lambda name: reader.get_tensor(f'{name}/.ATTRIBUTES/VARIABLE_VALUE')
  center, directions, weights, biases, scale = (get(f'unknown_{name}') for name in (
      'center', 'directions', 'class_weights', 'class_biases', 'scale'))

  def score(features):
    x = np.asarray(features, np.float64) - center
    return ((x * x).sum(1) * scale[0] + ((x @ weights + biases).min(1) - (
        (x @ directions) ** 2).sum(1)) * scale[1])
  return score


def test_every_export_returns_the_unknown_score(open_run):
  flags, _ = open_run
  metrics = json.load(open(os.path.join(flags['saved_model_dir'],
                                        release.METRICS_FILE)))
  assert metrics['unknown']['method'] == 'mahalanobis'
  assert 0 <= metrics['unknown']['validation_unknown_rate'] <= 0.1
  assert metrics['calibration']['temperature'] > 0
  backbone = backbones.load_backbone(flags['tfhub_module'])
  rng = np.random.default_rng(5)
  pixels = rng.integers(0, 256, (4, 32, 32, 3), np.uint8)
  images = pixels.astype(np.float32) / 255
  expected = exported_open_set(flags['saved_model_dir'])(
      backbone.features(images))
  assert np.ptp(expected) > 0.1  # Different images, different scores.
  signatures = tf.saved_model.load(flags['saved_model_dir']).signatures
  got = {
      'serving_default': signatures['serving_default'](image_bytes=tf.constant(
          [tf.io.encode_png(p).numpy() for p in pixels]))['unknown_score'],
      'serving_images': signatures['serving_images'](
          images=tf.constant(images))['unknown_score'],
      'classifier.tflite': predict.load_model_folder(
          flags['saved_model_dir'])[0].run(images)[1],
      'tflite float32': predict.load_tflite(
          flags['tflite_output_file']).run(images)[1],
  }
  for form, scores in got.items():
    np.testing.assert_allclose(np.asarray(scores), expected, rtol=1e-3,
                               err_msg=form)
  # A client that reads output 0, as for retrain.py's .tflite, gets the
  # probabilities [batch, classes], whatever order the converter chose.
  for path in (os.path.join(flags['saved_model_dir'], 'classifier.tflite'),
               flags['tflite_output_file'], flags['tflite_int8_output_file']):
    details = litert.Interpreter(model_path=path).get_output_details()
    assert [list(d['shape']) for d in details] == [[1, 3], [1]], path
  int8 = quantize.int8_backbone(backbone, flags['bottleneck_dir'],
                                calibration=lambda: pytest.fail('converted'))
  np.testing.assert_allclose(
      predict.load_tflite(flags['tflite_int8_output_file']).run(images)[1],
      exported_open_set(flags['saved_model_dir'])(int8.features(images)),
      rtol=1e-3)


def test_label_image_says_unknown_for_a_photo_of_nothing_it_knows(
    open_run, capsys, tmp_path):
  flags, root = open_run
  known = sorted((root / 'photos').rglob('*.*'))[0]
  # A photo unlike every class: flat grey.
  odd = tmp_path / 'grey.png'
  Image.new('RGB', (64, 48), (128, 128, 128)).save(odd)
  folder = dict(saved_model_dir=flags['saved_model_dir'])
  capsys.readouterr()
  assert conftest.run_label_image(image=str(odd), **folder) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == 'unknown' and len(lines) == 4  # unknown + 3 labels.
  assert conftest.run_label_image(image=str(odd), unknown_threshold=-1,
                                  **folder) == 0
  assert 'unknown' not in capsys.readouterr().out
  assert conftest.run_label_image(str(known), image=str(odd),
                                  output_format='json', **folder) == 0
  records = json.loads(capsys.readouterr().out)
  assert [r['unknown'] for r in records] == [True, False]
  assert len(records[0]['predictions']) == 3
  assert conftest.run_label_image(image=str(odd), output_format='csv',
                                  **folder) == 0
  rows = capsys.readouterr().out.splitlines()
  assert rows[1].split(',')[:3] == [str(odd), '0', 'unknown']
