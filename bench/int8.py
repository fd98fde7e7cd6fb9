"""The int8 rows of the benchmark (--backbone_precision int8, .tflite exports).

Measured side by side, in interleaved rounds: the float backbone's limit under
TensorFlow (batch 4 and batch 1), the int8 copy alone on the same decoded
tensors, the float32 TFLite copy alone (to show where the speed comes from),
and the int8 cache stage on the flower photos. Then the test accuracy of heads
trained on float and on int8 vectors, a whole int8 retrain.py run with nothing
cached (it converts the backbone) and both .tflite exports (its metrics.json
measures every exported form), and label_image over a folder with the int8
.tflite.
"""

import collections
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from unittest import mock

import numpy as np

from bench import measure
from bottleneck import config
from bottleneck.train import head as head_lib
from bottleneck import predict
from bottleneck.features import quantize
from bottleneck.run import release
from bottleneck.features import tflite

_FORMS = (('saved_model', 'SavedModel'), ('frozen_graph', 'frozen graph'),
          ('tflite_float32', 'TFLite float32'), ('tflite_int8', 'TFLite int8'))


class _TfliteBackbone:  # pylint: disable=too-few-public-methods
  """Just what `measure.backbone_limit` calls: `features`."""

  def __init__(self, data):
    self.features = tflite.Runner(data, name='float32 TFLite backbone')


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


def run(table, *, backbone, flowers_dir, flowers, split, pixels, work_dir,
        repeats, float_head, float_accuracy, schedule, retrain_args,
        label_paths, decode_paths, cores):
  """Measures the int8 rows and adds them to `table` (a `report.Table`).

  Args:
    table: the `report.Table`.
    backbone: the float32 `backbones.Backbone` of the benchmark.
    flowers_dir: the flower photos' folder.
    flowers: its `images.Photo`s, with digests.
    split: `images.split_photos` of them (10% test, 10% validation).
    pixels: uint8 [n, 224, 224, 3] decoded photos for the backbone limits.
    work_dir: folder for caches and models.
    repeats: rounds of the speed figures (medians are reported).
    float_head: the `head.Head` trained on the float vectors.
    float_accuracy: its test accuracy, in [0, 1].
    schedule: the `head.Schedule` it was trained with.
    retrain_args: function(image_dir, name) -> retrain.py's argument list.
    label_paths: photos for label_image's throughput.
    decode_paths: flower photos of every class, for the decoder's CPU cost.
    cores: the CPU cores the benchmark may run on.
  """
  batch = config.DEFAULT_BATCH_SIZE
  model_dir = _fresh(os.path.join(work_dir, 'caches', 'int8_model'))
  int8, convert_seconds, calibration_used = convert(
      backbone, split['training'], model_dir)
  float_tflite = _TfliteBackbone(quantize.to_tflite(
      backbone.features.get_concrete_function(), name=backbone.name))
  distinct = len({p.digest for p in flowers})

  samples = collections.defaultdict(list)
  for r in range(repeats):
    print(f'int8 round {r + 1} of {repeats}...', file=sys.stderr, flush=True)
    for name, model, size in (('float_limit', backbone, batch),
                              ('float_limit1', backbone, 1),
                              ('int8_limit', int8, batch),
                              ('tflite_float_limit', float_tflite, batch)):
      rate, cpu = measure.backbone_limit(model, pixels, batch_size=size)
      samples[name].append(rate)
      samples[name + '_cpu'].append(cpu)
    seconds, _, cached = measure.cache_stage(
        flowers_dir, int8, _fresh(os.path.join(work_dir, 'caches', 'int8')))
    assert cached.computed == distinct, (cached.computed, distinct)
    samples['int8_cache'].append(distinct / seconds)
  med = {name: statistics.median(v) for name, v in samples.items()}
  limit = med['float_limit']
  table.speed(f'float32 backbone limit (TensorFlow), batch {batch}, measured '
              'between the int8 runs', limit)
  table.speed('float32 backbone limit (TensorFlow), batch 1, same rounds',
              med['float_limit1'])
  table.speed(f'int8 backbone alone (LiteRT, XNNPACK), decoded tensors, batch '
              f'{batch}', med['int8_limit'], limit, 'float limit')
  table.speed('float32 TFLite backbone alone (LiteRT, XNNPACK), batch '
              f'{batch}, for comparison', med['tflite_float_limit'], limit,
              'float limit')
  table.speed(f'int8 cache stage, {len(flowers):,} flower photos '
              f'({distinct:,} distinct)', med['int8_cache'], limit,
              f'float limit (batch {batch})', 3.0)
  table.ratio('int8 cache stage / float limit at batch 1', med['int8_cache'],
              med['float_limit1'], None)
  # The profile behind that ratio, as for the float cache stage: the cores
  # cannot run more than cores * 1000 / (backbone + decode CPU ms) images/s.
  int8_cpu = med['int8_limit_cpu']
  decode_cpu = measure.decode_cpu(decode_paths, backbone.image_size)
  table.speed(f'CPU bound, int8, flower photo: {cores} cores / (int8 backbone '
              f'{int8_cpu:.1f} + decode {decode_cpu:.1f} CPU ms per image)',
              cores * 1000 / (int8_cpu + decode_cpu), limit, 'float limit')
  table.seconds(f'int8 conversion, calibrated on {calibration_used} training '
                'photos (once per backbone; one run)', convert_seconds)

  # Accuracy: the same schedule and seed on float and on int8 vectors.
  rows = {p.digest: v for p, v in zip(cached.photos, cached.vectors)}
  def vectors(members):
    return (np.stack([rows[p.digest] for p in members]),
            np.array([p.label for p in members], np.int32))
  with tempfile.TemporaryDirectory() as logs, measure.logs_to_devnull():
    int8_head = head_lib.train_head(
        vectors(split['training']), vectors(split['validation']),
        num_classes=int(float_head.biases.shape[0]), schedule=schedule, seed=0,
        summaries_dir=logs)
  test_x, test_y = vectors(split['testing'])
  table.accuracy(f'final test accuracy, flower test photos (N={len(test_y)})',
                 float_accuracy, measure.accuracy(int8_head, test_x, test_y),
                 names=('float32 vectors', 'int8 vectors'))

  # A whole run with every export, from an empty --bottleneck_dir: it
  # converts the backbone and computes every vector. Its metrics.json
  # measures each exported form.
  name = 'flowers_int8'
  run_dir = _fresh(os.path.join(work_dir, 'caches', name))
  args = [a for a in retrain_args(flowers_dir, name)
          if not a.startswith('--bottleneck_dir=')] + [
              f'--bottleneck_dir={run_dir}', '--backbone_precision=int8',
              '--tflite_output_file='
              f'{os.path.join(work_dir, name, "model.tflite")}',
              '--tflite_int8_output_file='
              f'{os.path.join(work_dir, name, "model_int8.tflite")}']
  _fresh(os.path.join(work_dir, name))
  seconds = measure.wall_time(args)[0]
  assert os.path.exists(quantize.model_path(run_dir, backbone)), run_dir
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
  tflite_path = os.path.join(work_dir, name, 'model_int8.tflite')
  model = predict.load_tflite(tflite_path)
  table.speed(f'label_image over a folder, int8 .tflite, {len(label_paths)} '
              'photos (one run)', measure.label_folder(model, label_paths),
              limit, 'float limit')
  # Without TensorFlow: predict imports it only for the other forms.
  args = [sys.executable, 'label_image.py', f'--image={label_paths[0]}',
          f'--tflite_model={tflite_path}']
  table.seconds('label_image.py --tflite_model, one photo (whole process)',
                statistics.median(measure.wall_time(args)[0]
                                  for _ in range(repeats)))
