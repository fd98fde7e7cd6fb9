"""The cache stage's runtime, batch size and threads, measured on this machine.

Which runtime and batch size run a backbone fastest depends on the CPU (its
vector units, caches and cores) and on the backbone: on one AMD EPYC,
TensorFlow ran MobileNetV2 fastest at batch 4 and LiteRT's float32 copy 2.5x
faster; on an Intel Xeon, TensorFlow wanted batch 32 (README.md, Performance).
So with --backbone_runtime auto and --cache_batch_size 0 (the defaults) a
short measurement decides, once per backbone, runtime flag, CPU model and
core count, and is kept in

  <bottleneck_dir>/machine.json

(delete it to measure again). It measures, in a few seconds:

1. every runtime the flags allow (TensorFlow; the float32 LiteRT copy of
   `runtimes`; for --backbone_precision int8, the int8 copy), on generated
   images at batch sizes 1, 2, 4, ... with every core: images/s. The batch
   grows until a call takes CALL_SECONDS or the rate falls twice in a row.
   The fastest runtime and batch win; a --cache_batch_size given takes the
   fastest runtime at that batch.
2. for the winner, how to share the cores between the backbone and the
   threads that decode photos, on up to SPLIT_PHOTOS of the run's own photos
   decoded and run as the cache stage runs them: LiteRT as one interpreter
   on every core with as many decoding threads, on one core fewer with one
   decoding thread (an interpreter's threads spin while they wait), or as
   one single-threaded interpreter per core running batches side by side
   (small batches leave a multi-threaded interpreter's threads waiting on
   each other); TensorFlow keeps its own pool, so only the decoding threads
   vary. A run with fewer photos to compute keeps the default split and
   leaves this to a later run.

Nothing is measured when the flags give both the runtime and the batch size,
nor in a run with no photo to compute.
"""

import json
import os
import time

from absl import logging
import numpy as np

from bottleneck import errors
from bottleneck import publish
from bottleneck.data import decode
from bottleneck.features import cache
from bottleneck.features import runtimes
from bottleneck.features import tflite

BATCHES = (1, 2, 4, 8, 16, 32)
# A batch whose call takes longer than this is the last one tried: larger
# ones would make the measurement long for little gain.
CALL_SECONDS = 0.5
# How long each (runtime, batch) is timed, after one call to warm it up.
RATE_SECONDS = 0.3
# Photos of the run that time each split of the cores (two rounds each).
SPLIT_PHOTOS = 48
DEFAULT_DECODE_THREADS = 2


def cpu_model():
  """The CPU's model name, family and model number, from /proc/cpuinfo.

  Virtual machines often give a bare 'AMD EPYC' as the name; the family and
  model numbers tell its generations apart. 'unknown CPU' without the file.
  """
  fields = {}
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        key, _, value = line.partition(':')
        if not line.strip():
          break  # The first core's block is enough.
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  name = fields.get('model name', 'unknown CPU')
  if 'cpu family' in fields and 'model' in fields:
    name += f' (family {fields["cpu family"]}, model {fields["model"]})'
  return name


def for_config(config, backbone):
  """`chooser` for a backbone, as a run's `config.RetrainConfig` asks."""
  return chooser(backbone, runtime=config.backbone_runtime,
                 batch_size=config.cache_batch_size,
                 bottleneck_dir=config.bottleneck_dir)


def chooser(backbone, *, runtime, batch_size, bottleneck_dir):
  """The `engine` argument of `cache.cache_bottlenecks` for a run's flags.

  Args:
    backbone: the `backbones.Backbone` whose vectors are cached (float32, or
      an int8 copy with `tflite_model`).
    runtime: one of config.RUNTIMES.
    batch_size: images per call; 0 to measure.
    bottleneck_dir: folder of the cache, where machine.json is kept.

  Returns:
    A function from a non-empty list of photo paths (those to compute) to a
    `cache.Engine`.

  Raises (from the function):
    errors.ModelError: --backbone_runtime litert, and the backbone has no
      float32 copy that converts and passes the check of `runtimes`.
  """
  def choose(paths):
    runners = _runners(backbone, runtime, bottleneck_dir, paths)
    cores = tflite.default_threads()
    if runtime != 'auto' and batch_size:
      return _engine(runners, runtime, batch_size, None, cores, 'given')
    path = os.path.join(bottleneck_dir, 'machine.json')
    key = f'{backbone.identity[:16]} {runtime} {cpu_model()} {cores} cores'
    kept = _read(path)
    entry = kept.get(key)
    if not _usable(entry, runners):
      entry = {'backbone': backbone.name, 'cpu': cpu_model(), 'cores': cores,
               'rates': _rates(runners, backbone.image_size, cores),
               'measured': time.strftime('%Y-%m-%dT%H:%M:%S%z')}
      chosen_by = 'measured now'
    else:
      chosen_by = f'measured on {entry["measured"]}'
    rates = entry['rates']
    name = runtime if runtime != 'auto' else max(
        rates, key=lambda r: max(rates[r].values()))
    batch = batch_size or int(max(rates[name], key=rates[name].get))
    split = entry.get('split')
    if split and (split.get('runtime'), split.get('batch_size')) != (name,
                                                                    batch):
      split = None  # Measured for another runtime or batch size.
    if not split and len(paths) >= SPLIT_PHOTOS:
      split = entry['split'] = _split(runners[name], name, batch,
                                      paths[:SPLIT_PHOTOS],
                                      backbone.image_size, cores)
      chosen_by = 'measured now'
    if chosen_by == 'measured now':
      kept[key] = entry
      publish.write_file(path, json.dumps(kept, indent=2).encode())
    engine = _engine(runners, name, batch, split, cores,
                     f'{chosen_by}, kept in {path}')
    best = {r: max(v.values()) for r, v in rates.items()}
    logging.info('Backbone runtime %s, batch %d, %s; %s (images/s at the best '
                 'batch: %s).', name, batch, _threads(engine),
                 engine.chosen_by, ', '.join(f'{r} {v:.0f}'
                                             for r, v in best.items()))
    return engine
  return choose


def _runners(backbone, runtime, bottleneck_dir, paths):
  """{runtime: function(threads, workers) -> features function} the flags
  allow (`cache.Engine` says what threads and workers are)."""
  if backbone.precision != 'float32':  # A LiteRT copy already (`quantize`).
    return {'litert': _litert(backbone.tflite_model, backbone.name)}
  runners = {}
  if runtime in ('auto', 'tensorflow'):
    runners['tensorflow'] = lambda threads, workers: backbone.features
  if runtime in ('auto', 'litert'):
    try:
      if not runtimes.convertible(backbone):
        raise errors.ModelError(f'{backbone.name} has no function that the '
                                'TFLite converter can convert.')
      data = runtimes.float_copy(backbone, bottleneck_dir,
                                 lambda: _check_images(paths, backbone))
      runners['litert'] = _litert(data,
                                  runtimes.copy_path(bottleneck_dir, backbone))
    except errors.ModelError as e:
      if runtime == 'litert':
        raise
      logging.warning('%s The cache stage runs TensorFlow.', e)
  return runners


def _litert(model, name):
  """The runner factory of a .tflite model (see `_runners`)."""
  def runner(threads, workers):
    if workers > 1:
      return tflite.RunnerPool(model, name=name, threads=threads,
                               count=workers)
    return tflite.Runner(model, name=name, threads=threads)
  return runner


def _check_images(paths, backbone):
  """float32 [n, h, w, 3]: decoded photos among `paths` for `runtimes`'s
  check; generated ones if none of the first photos decodes."""
  images = [p for p in decode.load_images(paths[:4 * runtimes.CHECK_PHOTOS],
                                          backbone.image_size)
            if not isinstance(p, errors.DecodeError)]
  if not images:
    return np.random.default_rng(0).random(
        (runtimes.CHECK_PHOTOS, *backbone.image_size, 3), dtype=np.float32)
  return np.stack(images[:runtimes.CHECK_PHOTOS]).astype(np.float32) / 255


def _rates(runners, size, cores):
  """{runtime: {batch (str): images/s}} on generated images, every core."""
  images = np.random.default_rng(0).random((max(BATCHES), *size, 3),
                                           dtype=np.float32)
  rates = {}
  for name, runner in runners.items():
    features, rates[name], falls = runner(cores, 1), {}, 0
    for batch in BATCHES:
      rate, call = _rate(features, images[:batch])
      falls = falls + 1 if rates[name] and rate < min(
          rates[name].values()) else 0
      rates[name][str(batch)] = round(rate, 1)
      if call > CALL_SECONDS or falls == 2:
        break
  return rates


def _rate(features, images):
  """(images/s, seconds of the slowest call) of `features` on `images`."""
  np.asarray(features(images))  # Warms up: traces, allocates, packs weights.
  calls, slowest, start = 0, 0.0, time.perf_counter()
  while calls < 2 or time.perf_counter() - start < RATE_SECONDS:
    begin = time.perf_counter()
    np.asarray(features(images))
    slowest = max(slowest, time.perf_counter() - begin)
    calls += 1
  return calls * len(images) / (time.perf_counter() - start), slowest


def _split(runner, name, batch, paths, size, cores):
  """The fastest split of the cores, timed on the photos of `paths`."""
  if name == 'tensorflow':  # (threads, workers, decoding threads)
    options = {(0, 1, 1), (0, 1, DEFAULT_DECODE_THREADS), (0, 1, cores)}
  else:
    options = {(cores, 1, cores), (max(cores - 1, 1), 1, 1),
               (1, cores, cores), (1, max(cores - 1, 1), 1)}
  options = sorted(options)
  rates = dict.fromkeys(options, 0.0)
  for _ in range(2):  # Two rounds, the best of each: one may be disturbed.
    for option in options:
      threads, workers, decoders = option
      engine = cache.Engine(name, runner(threads or cores, workers), batch,
                            decode_threads=decoders, workers=workers)
      start, count = time.perf_counter(), 0
      for rows, _ in cache.compute_vectors(paths, size, engine):
        count += len(rows) if isinstance(rows, list) else 0
      rates[option] = max(rates[option],
                          count / (time.perf_counter() - start))
  threads, workers, decoders = max(rates, key=rates.get)
  return {'runtime': name, 'batch_size': batch, 'backbone_threads': threads,
          'workers': workers, 'decode_threads': decoders,
          'rates': {f'{t}x{w}+{d}': round(r, 1)
                    for (t, w, d), r in rates.items()}}


def _engine(runners, name, batch, split, cores, chosen_by):
  """The `cache.Engine` of a runtime, batch and split (None: the default)."""
  threads = split['backbone_threads'] if split else (
      0 if name == 'tensorflow' else cores)
  workers = split['workers'] if split else 1
  decoders = split['decode_threads'] if split else DEFAULT_DECODE_THREADS
  return cache.Engine(name, runners[name](threads or cores, workers), batch,
                      decode_threads=decoders, backbone_threads=threads,
                      workers=workers, chosen_by=chosen_by)


def _threads(engine):
  backbone = ('TensorFlow\'s own threads' if not engine.backbone_threads else
              f'{engine.workers} interpreter(s) of '
              f'{engine.backbone_threads} thread(s)')
  return f'{backbone} and {engine.decode_threads} decoding thread(s)'


def _usable(entry, runners):
  """Whether a kept entry has rates of exactly these runtimes, well formed."""
  try:
    return (set(entry['rates']) == set(runners) and
            all(int(b) and float(r) > 0 for rates in entry['rates'].values()
                for b, r in rates.items()) and
            all(entry['rates'].values()) and
            (entry.get('split') is None or
             {'runtime', 'batch_size', 'backbone_threads', 'workers',
              'decode_threads'} <= set(entry['split'])))
  except (TypeError, KeyError, ValueError, AttributeError):
    return False


def _read(path):
  """The measurements kept in machine.json; {} if none or unreadable."""
  try:
    with open(path, 'rb') as f:
      kept = json.loads(f.read())
  except (OSError, ValueError):
    return {}
  return kept if isinstance(kept, dict) else {}
