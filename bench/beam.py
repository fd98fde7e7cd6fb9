r"""The Beam cache stage against the local one, and a projection to 1,000,000.

  /work/beamvenv/bin/python bench/beam.py     # a venv with requirements-beam.txt

On the flower photos, with the backbone of the main job (keras:mobilenet_v2,
its `auto` layers, the weights in ../shared/data), from empty caches:

1. the local cache stage, as retrain.py runs it (runtime, batch and threads
   chosen by `probe` on this machine, on every core);
2. the same photos through the Beam stage on the DirectRunner with --workers
   worker processes (multi_processing), the same runtime and batch, its LiteRT
   copy and machine.json copied from 1 so that nothing is converted again;
3. the Beam stage on half of the photos (one of every two, each class alike):
   the difference between 2 and 3 is the cost of the other half, without the
   fixed cost (start the workers, load the model in each, commit); a run on a
   handful of photos would estimate that fixed cost worse, its start-up
   varying by seconds from run to run on a shared machine.

It prints the CPU, both stages' times, the overhead ratio (Beam / local on
the same cores), that the two caches hold the same vectors (within
runtimes.tolerance(2): TOLERANCE and the float16 rounding of each cache), and
a PROJECTION for --target photos on N workers:
fixed cost + target x (worker-seconds per photo) / N for the pipeline, plus
what stays on the driver (listing and hashing every photo, folding the
shards), at the rates measured here. A projection assumes workers as fast as
these cores, photos like these (about 0.2 MP JPEGs), storage that keeps up
and linear scaling; it is not a measurement. Each figure is the median of
--repeats rounds of the three runs, interleaved; about 5 minutes on 2 quiet
cores. On a shared machine the figures move by 2x from run to run (the
runtime's measurement too): rerun when they matter.
"""

import collections
import os
import shutil
import statistics
import sys
import time
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from bottleneck.run import cli  # Sets the TF log level before TF loads.
from absl import app
from absl import flags
from absl import logging
import numpy as np

from bench import data
from bench import measure
from bench import report
from bottleneck import config
from bottleneck.data import images
from bottleneck.features import backbones
from bottleneck.features import beam_stage
from bottleneck.features import cache
from bottleneck.features import probe
from bottleneck.features import runtimes
from bottleneck.features import shards

flags.DEFINE_string('work_dir', os.path.join(measure.ROOT, 'bench', '_work',
                                             'beam'),
                    'Folder for the caches (emptied at every run).')
flags.DEFINE_string('flowers', measure.FLOWERS,
                    'The photos.')
flags.DEFINE_string('weights', measure.WEIGHTS,
                    'MobileNetV2 weights file.')
flags.DEFINE_integer('workers', 2, 'Beam worker processes.')
flags.DEFINE_integer('repeats', 3, 'Rounds of the three runs (medians).')
flags.DEFINE_integer('target', 1_000_000, 'Photos of the projection.')
flags.DEFINE_list('project_workers', ['1', '2', '16', '64', '256'],
                  'Worker counts of the projection.')
FLAGS = flags.FLAGS


def beam_run(folder, backbone, bottleneck_dir, workers):
  """The cache stage with the Beam stage; (seconds, {part: seconds}, result).

  Parts: 'pipeline' (start to end of the Beam pipeline) and 'fold' (the
  shards into the journal), timed from inside the stage.
  """
  parts = {'fold': 0.0}

  def add_fold(seconds):
    parts['fold'] += seconds

  timed_fold = measure.timed(shards.fold, add_fold)
  timed_pipeline = measure.timed(
      beam_stage._run_pipeline,  # pylint: disable=protected-access
      lambda seconds: parts.update(pipeline=seconds))

  stage = beam_stage.BeamStage(
      backbone, bottleneck_dir, 'DirectRunner',
      f'--direct_num_workers={workers} '
      '--direct_running_mode=multi_processing',
      load_args=dict(name=config.DEFAULT_MODULE, keras_weights=FLAGS.weights,
                     layers=config.DEFAULT_LAYERS))
  chooser = probe.chooser(backbone, runtime='auto', batch_size=0,
                          bottleneck_dir=bottleneck_dir)
  start = time.perf_counter()
  with mock.patch.object(shards, 'fold', timed_fold), mock.patch.object(
      beam_stage, '_run_pipeline', timed_pipeline):
    _, photos = images.find_photos(folder)
    photos, _ = images.digest_photos(photos)
    result = cache.cache_bottlenecks(photos, backbone, bottleneck_dir,
                                     engine=chooser, stage=stage)
  return time.perf_counter() - start, parts, result


def fresh_cache(path, local_dir, backbone):
  """An empty cache folder with the local run's LiteRT copy and choices."""
  shutil.rmtree(path, ignore_errors=True)
  os.makedirs(path)
  copy = runtimes.copy_path(local_dir, backbone)
  for source in (copy, copy + '.json', os.path.join(local_dir,
                                                    'machine.json')):
    if os.path.exists(source):
      shutil.copy(source, os.path.join(path, os.path.basename(source)))
  return path


def vectors_by_digest(result):
  return {p.digest: v for p, v in zip(result.photos, result.vectors)}


def main(argv):
  del argv
  start_all = time.monotonic()
  beam_stage.import_beam()
  logging.set_verbosity(logging.WARNING)
  work = FLAGS.work_dir
  shutil.rmtree(work, ignore_errors=True)
  backbone = backbones.load_backbone(config.DEFAULT_MODULE,
                                     keras_weights=FLAGS.weights,
                                     layers=config.DEFAULT_LAYERS)
  _, photos = images.find_photos(FLAGS.flowers)
  started = time.perf_counter()
  photos, _ = images.digest_photos(photos)
  hash_seconds = time.perf_counter() - started

  # Runtime, batch and threads chosen once, as a first local run would; every
  # cache below starts empty with these choices and the LiteRT copy.
  reference = os.path.join(work, 'reference')
  probe.chooser(backbone, runtime='auto', batch_size=0,
                bottleneck_dir=reference)([p.path for p in photos])
  half_folder = data.linked_subset(
      data.every_class(photos, len(photos) // 2), FLAGS.flowers,
      os.path.join(work, 'half_photos'))
  figures = collections.defaultdict(list)
  for _ in range(FLAGS.repeats):  # Interleaved: the load of others shifts.
    local_dir = fresh_cache(os.path.join(work, 'local'), reference, backbone)
    local = measure.cache_stage(FLAGS.flowers, backbone, local_dir,
                                engine=None, choose=probe.chooser(
                                    backbone, runtime='auto', batch_size=0,
                                    bottleneck_dir=local_dir))
    seconds, parts, in_beam = beam_run(
        FLAGS.flowers, backbone,
        fresh_cache(os.path.join(work, 'beam'), reference, backbone),
        FLAGS.workers)
    _, half_parts, half = beam_run(
        half_folder, backbone,
        fresh_cache(os.path.join(work, 'beam_half'), reference, backbone),
        FLAGS.workers)
    for name, value in (('local', local.compute_seconds),
                        ('local_whole', local.seconds),
                        ('pipeline', parts['pipeline']),
                        ('beam_whole', seconds), ('fold', parts['fold']),
                        ('half', half_parts['pipeline'])):
      figures[name].append(value)
  median = {name: statistics.median(values)
            for name, values in figures.items()}
  n = local.result.computed

  expected, got = vectors_by_digest(local.result), vectors_by_digest(in_beam)
  digests = sorted(expected)
  assert digests == sorted(got), 'the two stages cached other photos'
  a = np.stack([expected[d] for d in digests])
  b = np.stack([got[d] for d in digests])

  table = report.Table(FLAGS.repeats)
  engine = local.result.engine
  table.speed(f'local cache stage: {n:,} photos computed ({engine["runtime"]}, '
              f'batch {engine["batch_size"]}, every core), compute part',
              n / median['local'])
  table.seconds('local cache stage, whole (list, hash, choose, compute, '
                'commit)', median['local_whole'])
  table.speed(f'Beam stage, DirectRunner, {FLAGS.workers} worker processes, '
              'the pipeline (start to end)', n / median['pipeline'],
              n / median['local'], 'local compute part')
  table.seconds('Beam stage, whole (list, hash, pipeline, fold, commit)',
                median['beam_whole'], median['local_whole'], 'local whole')
  table.seconds(f'Beam stage, the pipeline on half the photos '
                f'({half.computed:,})', median['half'])
  table.seconds(f'folding {n:,} vectors from the shards into the journal',
                median['fold'])
  table.vectors_agreement('Beam vectors against the local stage\'s',
                          runtimes.relative_difference(a, b),
                          runtimes.min_cosine(a, b),
                          runtimes.tolerance(stored_sides=2))

  # Worker-seconds per photo, without the fixed cost.
  per_photo = ((median['pipeline'] - median['half']) * FLAGS.workers /
               max(n - half.computed, 1))
  hashing, folding = hash_seconds / len(photos), median['fold'] / n
  driver = FLAGS.target * (hashing + folding)
  table.speed(f'Beam stage, {FLAGS.workers} worker processes, the fixed cost '
              'taken out (the overhead ratio at scale)',
              FLAGS.workers / per_photo, n / median['local'],
              'local compute part')
  table.speed(f'one worker, the fixed cost taken out ({per_photo * 1e3:.1f} '
              'worker-ms per photo)', 1 / per_photo)
  table.speed(f'driver: hashing ({hashing * 1e3:.2f} ms per photo) and '
              f'folding ({folding * 1e3:.2f} ms per photo)',
              1 / (hashing + folding))
  fixed = max(median['half'] - half.computed * per_photo /
              FLAGS.workers, 0.0)
  table.seconds('Beam fixed cost (start, load the model, commit), from the '
                'two runs', fixed)
  for workers in map(int, FLAGS.project_workers):
    total = fixed + FLAGS.target * per_photo / workers
    table.seconds(f'PROJECTION, not measured: {FLAGS.target:,} photos on '
                  f'{workers} worker(s) of this speed: pipeline '
                  f'{total / 3600:.2f} h + driver {driver / 3600:.2f} h',
                  total + driver)
  table.print(machine=report.machine(measure.cores()),
              seconds=time.monotonic() - start_all)
  print(f'\nCPU: {probe.cpu_model()}. The machine is shared with other jobs: '
        'timings are noisy; the projection is a linear extrapolation of them.')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
