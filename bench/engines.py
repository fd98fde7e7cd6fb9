"""The cache stage's settings as retrain.py's defaults choose them, for bench.

`choose` runs the choice once, before the rounds, as a first run would (it
converts and checks the float32 LiteRT copy and measures the runtimes, batch
sizes and threads; `probe`); the rounds then pass the chosen `cache.Engine`s
to every cache stage, as a nightly run reads them from machine.json.
`agreement_row` compares the default's vectors with TensorFlow's over every
flower photo.
"""

import dataclasses
import time

from absl import logging

from bench import measure
from bench import rounds
from bottleneck.features import cache
from bottleneck.features import probe
from bottleneck.features import runtimes
from bottleneck.features import tflite


@dataclasses.dataclass
class Engines:
  """The cache stages' settings, and the LiteRT copies' single-thread runs.

  Attributes:
    default: the `cache.Engine` retrain.py's defaults chose for the float32
      backbone.
    int8: the one chosen for the int8 copy.
    litert: the float32 LiteRT copy at `default`'s batch size, every core
      (whether or not the default chose it).
    litert_one, int8_one: the two copies on one thread: their CPU cost per
      image without threads that wait (for the CPU bounds).
  """
  default: object
  int8: object
  litert: object
  litert_one: object
  int8_one: object


def choose(backbone, int8_backbone, paths, probe_dir, cores):
  """Chooses the default's and int8's settings in `probe_dir`, as a run does.

  Args:
    backbone: the float32 `backbones.Backbone`.
    int8_backbone: its int8 copy.
    paths: the photos a first run would compute.
    probe_dir: an empty folder, the run's --bottleneck_dir.
    cores: CPU cores of the benchmark.

  Returns:
    (`Engines`, seconds the default's choice took: the float32 copy's
    conversion and check, and the measurements).
  """
  start = time.perf_counter()
  default = probe.chooser(backbone, runtime='auto', batch_size=0,
                          bottleneck_dir=probe_dir)(paths)
  seconds = time.perf_counter() - start
  int8 = probe.chooser(int8_backbone, runtime='auto', batch_size=0,
                       bottleneck_dir=probe_dir)(paths)
  copy = runtimes.float_copy(backbone, probe_dir, None)  # Kept: not again.
  return Engines(
      default=default, int8=int8,
      litert=tflite.Runner(copy, name='float32 copy', threads=cores),
      litert_one=tflite.Runner(copy, name='float32 copy', threads=1),
      int8_one=tflite.Runner(int8_backbone.tflite_model, name='int8 copy',
                             threads=1)), seconds


def agreement_row(table, med, *, backbone, engine, flowers_dir, cached_dir,
                  fresh_dir):
  """The default's vectors against TensorFlow's, on every flower photo.

  Args:
    table: the `report.Table`.
    med: `rounds.run`'s medians (for TensorFlow's best batch).
    backbone: the float32 `backbones.Backbone`.
    engine: the default's `cache.Engine`.
    flowers_dir: the flower photos.
    cached_dir: a cache the default filled with every flower photo's vector.
    fresh_dir: an empty folder for TensorFlow's vectors.
  """
  if engine.runtime != 'litert':
    return  # The default is TensorFlow itself.
  logging.info('The LiteRT copy\'s vectors against TensorFlow\'s...')
  best_batch, _ = rounds.tensorflow_best(med)
  by_tensorflow = measure.cache_stage(
      flowers_dir, backbone, fresh_dir,
      engine=cache.Engine('tensorflow', backbone.features, best_batch)).result
  by_default = measure.cache_stage(flowers_dir, backbone, cached_dir,
                                   engine=engine).result
  assert by_default.computed == 0, by_default.computed
  table.vectors_agreement(
      f'default (LiteRT float32) vectors against TensorFlow\'s, '
      f'{len(by_tensorflow.photos):,} flower photos',
      runtimes.relative_difference(by_tensorflow.vectors, by_default.vectors),
      runtimes.min_cosine(by_tensorflow.vectors, by_default.vectors),
      runtimes.tolerance(stored_sides=2))
