"""The interleaved rounds behind the cache stage's speed figures and ratios.

Each round measures, one after the other: the backbone limits (float32 under
TensorFlow at every batch of LIMIT_SIZES; the float32 LiteRT copy and the int8
copy at the batch and threads their cache stages use, and on one thread for
their CPU cost), the decoder's CPU cost, the default (float32) and the int8
cache stages on the flower photos, the default one on 12 MP photos and on 1%
new photos, and the one-image-at-a-time baseline on flower and on 12 MP
photos. Every figure is the median over the same rounds, so that a slow spell
of the shared machine hits both sides of each ratio.

The cache stages run with the settings retrain.py's defaults choose on this
machine (`probe`, measured once before the rounds, as a first run would, and
passed to every round as a nightly run reads them from machine.json).
"""

import collections
import dataclasses
import os
import shutil
import statistics

from absl import logging

from bench import data
from bench import measure

LIMIT_SIZES = (1, 4, 8, 16, 32)


@dataclasses.dataclass
class Sets:
  """What the rounds run on.

  Attributes:
    flowers_dir: the flower photos' folder.
    distinct: how many distinct photos (by digest) it holds.
    large_dir: the 12 MP photos' folder.
    large_count: how many distinct photos it holds.
    pixels: uint8 [n, height, width, 3] decoded photos for the limits.
    baseline_paths: flower photos of the baseline and of the decode cost.
    large_paths: 12 MP photos of the baseline and of the decode cost.
    new_dir: a linked copy of flowers_dir that new photos are added to.
    new_photos: function(round) -> `images.Photo`s under flowers_dir whose
      variants are that round's new photos (distinct from every other's).
  """
  flowers_dir: str
  distinct: int
  large_dir: str
  large_count: int
  pixels: object
  baseline_paths: list
  large_paths: list
  new_dir: str
  new_photos: object


def _fresh(path):
  shutil.rmtree(path, ignore_errors=True)
  return path


def _stage(folder, backbone, bottleneck_dir, expected, engine):
  stage = measure.cache_stage(folder, backbone, bottleneck_dir, engine=engine)
  assert stage.result.computed == expected, (stage.result.computed, expected)
  return stage


def run(sets, *, backbone, int8_backbone, engines, caches, repeats):
  """Measures `repeats` rounds.

  Args:
    sets: the `Sets`.
    backbone: the float32 `backbones.Backbone`.
    int8_backbone: its int8 copy (a `backbones.Backbone`).
    engines: the `engines.Engines`.
    caches: folder of the caches; its subfolders 'flowers', 'int8', 'large'
      and 'new' are rebuilt every round ('flowers' is left with every flower
      photo's default vector).
    repeats: how many rounds.

  Returns:
    (medians, last): medians maps each figure's name to its median over the
    rounds (seconds of cache stages, images/s of limits and baselines, CPU ms
    per image of `*_cpu` and `decode_*`); last maps 'int8' and 'large' to
    those cache stages' `CacheResult`s of the last round.
  """
  samples, last = collections.defaultdict(list), {}
  def add(name, value):
    samples[name].append(value)
  default, int8 = engines.default, engines.int8
  limits = [(f'limit{size}', backbone.features, size) for size in LIMIT_SIZES
           ] + [('default_limit', default.features, default.batch_size),
                ('litert_limit', engines.litert, default.batch_size),
                ('int8_limit', int8.features, int8.batch_size),
                ('litert_one', engines.litert_one, default.batch_size),
                ('int8_one', engines.int8_one, int8.batch_size)]
  for r in range(repeats):
    logging.info('Cache stages and their references, round %d of %d...',
                 r + 1, repeats)
    for name, features, size in limits:
      rate, cpu = measure.backbone_limit(features, sets.pixels,
                                         batch_size=size)
      add(name, rate)
      add(name + '_cpu', cpu)
    add('decode_flower', measure.decode_cpu(sets.baseline_paths,
                                            backbone.image_size))
    add('decode_large', measure.decode_cpu(sets.large_paths,
                                           backbone.image_size))

    flowers = os.path.join(caches, 'flowers')
    stage = _stage(sets.flowers_dir, backbone, _fresh(flowers), sets.distinct,
                   default)
    add('flowers', stage.seconds)
    add('flowers_compute', stage.compute_seconds)
    stage = _stage(sets.flowers_dir, int8_backbone,
                   _fresh(os.path.join(caches, 'int8')), sets.distinct, int8)
    add('int8_cache', stage.seconds)
    last['int8'] = stage.result
    stage = _stage(sets.large_dir, backbone,
                   _fresh(os.path.join(caches, 'large')), sets.large_count,
                   default)
    add('large', stage.seconds)
    last['large'] = stage.result

    # 1% new photos on a store that has every other photo: a copy of the one
    # just filled. Their compute is timed inside the stage (not as the
    # difference of two stage times); they are removed after the round.
    new = os.path.join(caches, 'new')
    shutil.copytree(flowers, _fresh(new))
    photos = sets.new_photos(r)
    paths = data.add_new_photos(photos, sets.flowers_dir, sets.new_dir, f'r{r}')
    stage = _stage(sets.new_dir, backbone, new, len(photos), default)
    add('new', stage.seconds)
    add('new_compute', stage.compute_seconds)
    for path in paths:
      os.remove(path)

    add('baseline', measure.one_at_a_time(backbone, sets.baseline_paths))
    add('large_baseline', measure.one_at_a_time(backbone, sets.large_paths))
  return {k: statistics.median(v) for k, v in samples.items()}, last


def tensorflow_best(med):
  """(batch, images/s) of TensorFlow's fastest batch of LIMIT_SIZES."""
  size = max(LIMIT_SIZES, key=lambda b: med[f'limit{b}'])
  return size, med[f'limit{size}']


def describe(engine):
  """'LiteRT, batch 4, 1 x 2 threads + 2 decoding' for a row's name: the
  interpreters x their threads, and the decoding threads."""
  runtime = {'litert': 'LiteRT', 'tensorflow': 'TensorFlow'}[engine.runtime]
  threads = (f', {engine.workers} x {engine.backbone_threads} threads'
             if engine.backbone_threads else '')
  return (f'{runtime}, batch {engine.batch_size}{threads} + '
          f'{engine.decode_threads} decoding')


def float_rows(table, med, sets, *, photos, cores, engine):
  """The default (float32) cache stage's rows, from `run`'s medians.

  Args:
    table: the `report.Table`.
    med: `run`'s medians.
    sets: the `Sets` they were measured on.
    photos: how many flower photos the cache stages ran on.
    cores: CPU cores of the benchmark.
    engine: the default's `cache.Engine`.
  """
  best_batch, best = tensorflow_best(med)
  limit = med['default_limit']
  distinct, large_count = sets.distinct, sets.large_count
  cache_rate = distinct / med['flowers']
  large_rate = large_count / med['large']
  for size in LIMIT_SIZES:
    table.speed(f'TensorFlow backbone alone: decoded 224x224 tensors, batch '
                f'{size}' + (' (its best)' if size == best_batch else ''),
                med[f'limit{size}'])
  table.speed(f'LiteRT float32 copy alone, batch {engine.batch_size}, '
              f'{cores} threads', med['litert_limit'], best,
              'TensorFlow at its best batch')
  table.speed(f'backbone limit: the default\'s runtime alone '
              f'({describe(engine)})', limit, best,
              'TensorFlow at its best batch')
  table.speed(f'cache stage (defaults: {describe(engine)}), {photos:,} flower '
              f'photos ({distinct:,} distinct)', cache_rate, best,
              'TensorFlow at its best batch', 2.0)
  # The profile behind the cache stage's ratios: CPU time per image. The
  # cores cannot run more than cores * 1000 / (backbone + decode) images/s.
  # The backbone's cost is its run on one thread (LiteRT) or TensorFlow's
  # pool at the default's batch: CPU time that threads spend waiting for
  # each other is not work the cores must do.
  backbone_cpu = (med['litert_one_cpu'] if engine.runtime == 'litert' else
                  med['default_limit_cpu'])
  bounds = {}
  for name, decode_cpu in (('flower', med['decode_flower']),
                           ('12 MP', med['decode_large'])):
    bounds[name] = cores * 1000 / (backbone_cpu + decode_cpu)
    table.speed(f'CPU bound, {name} photo: {cores} cores / (backbone '
                f'{backbone_cpu:.1f} + decode {decode_cpu:.1f} CPU ms per '
                'image)', bounds[name], limit, 'backbone limit')
  table.ratio('cache stage / CPU bound, flowers', cache_rate,
              bounds['flower'], 0.8)
  table.ratio('cache stage / backbone limit, flowers', cache_rate, limit, 0.9)
  table.speed(f'cache stage, {large_count} distinct photos of 12 MP '
              '(4000x3000 JPEG)', large_rate, limit, 'backbone limit', 0.8)
  table.ratio('cache stage / CPU bound, 12 MP', large_rate, bounds['12 MP'],
              None)
  table.speed(f'one image at a time (retrain.py way), '
              f'{len(sets.baseline_paths)} flower photos of every class',
              med['baseline'])
  table.ratio('cache stage / one image at a time, flowers', cache_rate,
              med['baseline'], 1.2)
  table.speed(f'one image at a time, {len(sets.large_paths)} photos of 12 MP '
              'of every class', med['large_baseline'])
  table.ratio('cache stage / one image at a time, 12 MP', large_rate,
              med['large_baseline'], None)
  new = len(sets.new_photos(0))
  table.seconds(f'cache stage, {new} new photos (1%) + {photos:,} cached '
                f'(computes exactly {new})', med['new'])
  table.speed(f'the {new} new photos alone: {new} / their compute time '
              '(decode, backbone, journal) timed inside the stage above',
              new / med['new_compute'], distinct / med['flowers_compute'],
              'cold cache stage, same part')
