"""The int8 rows of the benchmark (--backbone_precision int8, .tflite exports).

The speeds come from the rounds of bench/rounds.py, side by side with the float
backbone's limits and cache stage: the int8 copy alone on the same decoded
tensors, the float32 TFLite copy alone (to show where the speed comes from),
and the int8 cache stage on the flower photos. Then the test accuracy of heads
trained on float and on int8 vectors, and a whole int8 retrain.py run with
nothing cached (it converts the backbone) and both .tflite exports; its
metrics.json measures every exported form. label_image with the int8 .tflite
is measured with the other label_image rows (bench/run.py).
"""

import json
import os
import shutil
import tempfile
import time
from unittest import mock

import numpy as np

from bench import measure
from bench import rounds
from bottleneck.train import recipes
from bottleneck.features import quantize
from bottleneck.run import release

_FORMS = (('saved_model', 'SavedModel'), ('frozen_graph', 'frozen graph'),
          ('tflite_float32', 'TFLite float32'), ('tflite_int8', 'TFLite int8'))


def _fresh(path):
  shutil.rmtree(path, ignore_errors=True)
  return path


def convert(backbone, training, model_dir):
  """Converts the backbone to int8 as a run does, in a fresh `model_dir`.

  Args:
    backbone: the float32 `backbones.Backbone`.
    training: the training `images.Photo`s (the run's calibration source).
    model_dir: a folder with no int8 copy in it (so that it converts).

  Returns:
    (int8 `backbones.Backbone`, seconds, the number of calibration photos the
    converter was given: those `quantize.calibration_photos` chose that could
    be decoded).
  """
  used = []
  pixels_of = quantize._calibration_pixels  # pylint: disable=protected-access
  def counted(paths, size):
    pixels = pixels_of(paths, size)
    used.append(len(pixels))
    return pixels
  start = time.perf_counter()
  with mock.patch.object(quantize, '_calibration_pixels', counted):
    int8 = quantize.int8_backbone(backbone, model_dir, lambda: (
        quantize.calibration_photos(training)))
  seconds = time.perf_counter() - start
  assert len(used) == 1, used  # It converted, once.
  return int8, seconds, used[0]


def speed_rows(table, med, *, photos, distinct, cores, convert_seconds,
               calibration_used, engine):
  """The int8 speed rows, from the medians of bench/rounds.py.

  Args:
    table: the `report.Table`.
    med: `rounds.run`'s medians.
    photos: how many flower photos the cache stages ran on.
    distinct: how many of them are distinct.
    cores: CPU cores of the benchmark.
    convert_seconds: the conversion's time.
    calibration_used: the calibration photos it used.
    engine: the int8 cache stage's `cache.Engine`.
  """
  _, best = rounds.tensorflow_best(med)
  float_rate = distinct / med['flowers']
  int8_rate = distinct / med['int8_cache']
  table.speed(f'int8 backbone alone (LiteRT, XNNPACK), decoded tensors, batch '
              f'{engine.batch_size}, {engine.backbone_threads} threads',
              med['int8_limit'], best, 'TensorFlow at its best batch')
  table.speed(f'int8 cache stage ({rounds.describe(engine)}), {photos:,} '
              f'flower photos ({distinct:,} distinct)', int8_rate, best,
              'TensorFlow at its best batch', 3.0)
  # The cores cannot run more than cores * 1000 / (backbone + decode CPU ms)
  # images/s; the backbone's cost is its run on one thread (no waiting).
  int8_cpu, decode_cpu = med['int8_one_cpu'], med['decode_flower']
  bound = cores * 1000 / (int8_cpu + decode_cpu)
  table.speed(f'CPU bound, int8, flower photo: {cores} cores / (int8 backbone '
              f'{int8_cpu:.1f} + decode {decode_cpu:.1f} CPU ms per image)',
              bound, med['int8_limit'], 'int8 backbone alone')
  table.ratio('int8 cache stage / its CPU bound', int8_rate, bound, 0.8)
  table.ratio('int8 cache stage / int8 backbone alone', int8_rate,
              med['int8_limit'], None)
  table.ratio('int8 cache stage / default cache stage', int8_rate, float_rate,
              None)
  table.seconds(f'int8 conversion, calibrated on {calibration_used} training '
                'photos (once per backbone; one run)', convert_seconds)


def accuracy_and_run(table, *, cached, split, float_head, float_accuracy,
                     run_config, backbone, flowers_dir, work_dir, retrain_args):
  """The int8 accuracy rows and a whole int8 run; returns its int8 .tflite.

  Args:
    table: the `report.Table`.
    cached: the int8 cache stage's `CacheResult` on the flower photos.
    split: `images.split_photos` of them (10% test, 10% validation).
    float_head: the `head.Head` trained on the float vectors.
    float_accuracy: its test accuracy, in [0, 1].
    run_config: the `config.RetrainConfig` whose head recipe trained it.
    backbone: the float32 `backbones.Backbone`.
    flowers_dir: the flower photos' folder.
    work_dir: folder for caches and models.
    retrain_args: function(image_dir, name) -> retrain.py's argument list.
  """
  # Accuracy: the same recipe and seed on float and on int8 vectors.
  rows = {p.digest: v for p, v in zip(cached.photos, cached.vectors)}
  def vectors(members):
    return (np.stack([rows[p.digest] for p in members]),
            np.array([p.label for p in members], np.int32))
  with tempfile.TemporaryDirectory() as logs, measure.logs_to_devnull():
    int8_head = recipes.train_head(
        run_config, vectors(split['training']), vectors(split['validation']),
        num_classes=int(float_head.biases.shape[0]), summaries_dir=logs,
        groups=backbone.groups)
  test_x, test_y = vectors(split['testing'])
  table.accuracy(f'final test accuracy, flower test photos (N={len(test_y)})',
                 float_accuracy, measure.accuracy(int8_head, test_x, test_y),
                 names=('float32 vectors', 'int8 vectors'))

  # A whole run with every export, from an empty --bottleneck_dir: it
  # converts the backbone and computes every vector. Its metrics.json
  # measures each exported form.
  name = 'flowers_int8'
  model_dir = _fresh(os.path.join(work_dir, 'caches', name))
  args = [a for a in retrain_args(flowers_dir, name)
          if not a.startswith('--bottleneck_dir=')] + [
              f'--bottleneck_dir={model_dir}', '--backbone_precision=int8',
              '--tflite_output_file='
              f'{os.path.join(work_dir, name, "model.tflite")}',
              '--tflite_int8_output_file='
              f'{os.path.join(work_dir, name, "model_int8.tflite")}']
  _fresh(os.path.join(work_dir, name))
  seconds = measure.wall_time(args)[0]
  assert os.path.exists(quantize.model_path(model_dir, backbone)), model_dir
  table.seconds('whole retrain.py run, int8, nothing cached yet (converts the '
                'backbone, computes every vector), both .tflite exports (one '
                'run)', seconds)
  with open(os.path.join(work_dir, name, 'model', release.METRICS_FILE)) as f:
    metrics = json.load(f)
  # Only the int8 .tflite computes the features the head was trained on;
  # the others run the float backbone, and their gap is reported, not judged.
  for form, title in _FORMS:
    e = metrics['exports'][form]
    table.accuracy(f'exported {title} ({e["features"]} features), head '
                   'trained on int8 vectors', metrics['test_accuracy'],
                   e['test_accuracy'], names=('head', 'export'),
                   target=1.0 if e['features'] == 'int8' else None)
  return os.path.join(work_dir, name, 'model_int8.tflite')
