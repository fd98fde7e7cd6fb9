"""The interleaved rounds behind the cache stage's speed figures and ratios.

Each round measures, one after the other: the backbone limits (float32 under
TensorFlow at batch 1, the cache stage's batch and 32; the int8 copy and a
float32 TFLite copy at the cache stage's batch), the decoder's CPU cost, the
float32 and the int8 cache stages on the flower photos, the float32 one on 12
MP photos and on 1% new photos, and the one-image-at-a-time baseline on flower
and on 12 MP photos. Every figure is the median over the same rounds, so that
a slow spell of the shared machine hits both sides of each ratio.
"""

import collections
import dataclasses
import os
import shutil
import statistics

from absl import logging

from bench import data
from bench import measure
from bottleneck import config

LIMIT_SIZES = (1, config.DEFAULT_BATCH_SIZE, 32)


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


def _stage(folder, backbone, bottleneck_dir, expected):
  stage = measure.cache_stage(folder, backbone, bottleneck_dir)
  assert stage.result.computed == expected, (stage.result.computed, expected)
  return stage


def run(sets, *, backbone, int8, float_tflite, caches, repeats):
  """Measures `repeats` rounds.

  Args:
    sets: the `Sets`.
    backbone: the float32 `backbones.Backbone`.
    int8: its int8 copy (a `backbones.Backbone`).
    float_tflite: anything with a `features` that runs a float32 TFLite copy.
    caches: folder of the caches; its subfolders 'flowers', 'int8', 'large'
      and 'new' are rebuilt every round ('flowers' is left with every flower
      photo's float32 vector).
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
  limits = [(f'limit{size}', backbone, size) for size in LIMIT_SIZES] + [
      ('int8_limit', int8, config.DEFAULT_BATCH_SIZE),
      ('tflite_limit', float_tflite, config.DEFAULT_BATCH_SIZE)]
  for r in range(repeats):
    logging.info('Cache stages and their references, round %d of %d...',
                 r + 1, repeats)
    for name, model, size in limits:
      rate, cpu = measure.backbone_limit(model, sets.pixels, batch_size=size)
      add(name, rate)
      add(name + '_cpu', cpu)
    add('decode_flower', measure.decode_cpu(sets.baseline_paths,
                                            backbone.image_size))
    add('decode_large', measure.decode_cpu(sets.large_paths,
                                           backbone.image_size))

    flowers = os.path.join(caches, 'flowers')
    stage = _stage(sets.flowers_dir, backbone, _fresh(flowers), sets.distinct)
    add('flowers', stage.seconds)
    add('flowers_compute', stage.compute_seconds)
    stage = _stage(sets.flowers_dir, int8, _fresh(os.path.join(caches, 'int8')),
                   sets.distinct)
    add('int8_cache', stage.seconds)
    last['int8'] = stage.result
    stage = _stage(sets.large_dir, backbone,
                   _fresh(os.path.join(caches, 'large')), sets.large_count)
    add('large', stage.seconds)
    last['large'] = stage.result

    # 1% new photos on a store that has every other photo: a copy of the one
    # just filled. Their compute is timed inside the stage (not as the
    # difference of two stage times); they are removed after the round.
    new = os.path.join(caches, 'new')
    shutil.copytree(flowers, _fresh(new))
    photos = sets.new_photos(r)
    paths = data.add_new_photos(photos, sets.flowers_dir, sets.new_dir, f'r{r}')
    stage = _stage(sets.new_dir, backbone, new, len(photos))
    add('new', stage.seconds)
    add('new_compute', stage.compute_seconds)
    for path in paths:
      os.remove(path)

    add('baseline', measure.one_at_a_time(backbone, sets.baseline_paths))
    add('large_baseline', measure.one_at_a_time(backbone, sets.large_paths))
  return {k: statistics.median(v) for k, v in samples.items()}, last


def float_rows(table, med, sets, *, photos, cores):
  """The float32 cache stage's rows, from `run`'s medians.

  Args:
    table: the `report.Table`.
    med: `run`'s medians.
    sets: the `Sets` they were measured on.
    photos: how many flower photos the cache stages ran on.
    cores: CPU cores of the benchmark.
  """
  batch = config.DEFAULT_BATCH_SIZE
  limit = med[f'limit{batch}']
  distinct, large_count = sets.distinct, sets.large_count
  cache_rate = distinct / med['flowers']
  large_rate = large_count / med['large']
  for size in (batch,) + tuple(s for s in LIMIT_SIZES if s != batch):
    table.speed(f'backbone limit: decoded 224x224 tensors, batch {size}'
                + ('' if size == batch else ' (for comparison)'),
                med[f'limit{size}'])
  table.speed(f'cache stage, {photos:,} flower photos ({distinct:,} '
              'distinct)', cache_rate, limit, 'backbone limit', 0.9)
  table.speed(f'cache stage, {large_count} distinct photos of 12 MP '
              '(4000x3000 JPEG)', large_rate, limit, 'backbone limit', 0.8)
  table.speed(f'one image at a time (retrain.py way), '
              f'{len(sets.baseline_paths)} flower photos of every class',
              med['baseline'])
  table.ratio('cache stage / one image at a time, flowers', cache_rate,
              med['baseline'], 1.2)
  table.speed(f'one image at a time, {len(sets.large_paths)} photos of 12 MP '
              'of every class', med['large_baseline'])
  table.ratio('cache stage / one image at a time, 12 MP', large_rate,
              med['large_baseline'], None)
  # The profile behind the cache stage's ratios: CPU time per image. The
  # cores cannot run more than cores * 1000 / (backbone + decode) images/s.
  backbone_cpu = med[f'limit{batch}_cpu']
  for name, decode_cpu in (('flower photo', med['decode_flower']),
                           ('12 MP photo', med['decode_large'])):
    table.speed(f'CPU bound, {name}: {cores} cores / (backbone '
                f'{backbone_cpu:.1f} + decode {decode_cpu:.1f} CPU ms per '
                'image)', cores * 1000 / (backbone_cpu + decode_cpu), limit,
                'backbone limit')
  new = len(sets.new_photos(0))
  table.seconds(f'cache stage, {new} new photos (1%) + {photos:,} cached '
                f'(computes exactly {new})', med['new'])
  table.speed(f'the {new} new photos alone: {new} / their compute time '
              '(decode, backbone, journal) timed inside the stage above',
              new / med['new_compute'], distinct / med['flowers_compute'],
              'cold cache stage, same part')
