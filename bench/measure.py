"""What the benchmark measures, one function per figure.

Every function returns plain numbers; bench/run.py repeats them, takes medians
and prints the table. Throughputs are images per second.
"""

import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from unittest import mock

from absl import logging
import numpy as np
import tensorflow as tf

from bottleneck.features import cache
from bottleneck import config
from bottleneck.data import decode
from bottleneck.data import images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The real data every benchmark reads by default (../shared/data/README.md).
SHARED = os.path.join(ROOT, '..', 'shared', 'data')
FLOWERS = os.path.join(SHARED, 'flower_photos')
WEIGHTS = os.path.join(SHARED, 'weights',
                       'mobilenet_v2_1.0_224_no_top.weights.h5')


def timed(function, record):
  """function, wrapped to call record(seconds) after each call, also when
  it raises (for mock.patch: the time of one step inside a whole stage)."""
  def wrapper(*args, **kwargs):
    start = time.perf_counter()
    try:
      return function(*args, **kwargs)
    finally:
      record(time.perf_counter() - start)
  return wrapper


# seconds: the whole stage; compute_seconds: the part of it that computes the
# photos not cached yet; result: its `cache.CacheResult`.
Stage = collections.namedtuple('Stage', 'seconds compute_seconds result')


def cores():
  """The number of CPU cores this process may run on."""
  return len(os.sched_getaffinity(0))


def cache_stage(folder, backbone, bottleneck_dir, *, engine, choose=None):
  """The cache stage as retrain.py runs it: list, hash, look up, compute.

  The computing of the photos not cached yet (decode, backbone, journal:
  `cache._compute`) is also timed on its own, from inside the stage; the
  rest is listing, hashing, look-ups and folding the journal into the file.

  Args:
    folder: the photos.
    backbone: the `backbones.Backbone` whose vectors are cached.
    bottleneck_dir: the cache.
    engine: the `cache.Engine` to compute them with (as chosen once, before
      the measurement, by `probe`).
    choose: instead of `engine`, the `engine` argument of
      `cache.cache_bottlenecks` (`probe.chooser`): choosing is then timed.

  Returns:
    A `Stage`.
  """
  compute_seconds = []
  timed_compute = timed(cache._compute,  # pylint: disable=protected-access
                        compute_seconds.append)
  start = time.perf_counter()
  with mock.patch.object(cache, '_compute', timed_compute):
    _, photos = images.find_photos(folder)
    photos, _ = images.digest_photos(photos)
    result = cache.cache_bottlenecks(photos, backbone, bottleneck_dir,
                                     engine=choose or (lambda paths: engine))
  seconds = time.perf_counter() - start
  assert len(compute_seconds) == 1, compute_seconds  # The stage changed.
  return Stage(seconds, compute_seconds[0], result)


def backbone_limit(features, pixels, *, batch_size, images=320):
  """Speed and CPU cost of the backbone alone on decoded, resized batches.

  Args:
    features: a backbone's function, float32 [batch, height, width, 3] in
      [0, 1] -> vectors (`backbones.Backbone.features`, a `tflite.Runner`).
    pixels: uint8 [n, height, width, 3] decoded photos, cycled through.
    batch_size: images per call, as the cache stage uses.
    images: how many images to time (after one untimed warm-up call).

  Returns:
    (images/s, CPU milliseconds per image summed over all cores).
  """
  floats = pixels.astype(np.float32) / 255.0
  batch_list = [np.take(floats, range(i * batch_size, (i + 1) * batch_size),
                        axis=0, mode='wrap')
                for i in range(max(1, images // batch_size))]
  np.asarray(features(batch_list[0]))
  start, cpu = time.perf_counter(), time.process_time()
  for batch in batch_list:
    np.asarray(features(batch))
  count = len(batch_list) * batch_size
  return (count / (time.perf_counter() - start),
          (time.process_time() - cpu) * 1000 / count)


def decode_cpu(paths, size):
  """CPU milliseconds per image of the cache stage's decoder, one thread.

  The files are read before the clock starts: this is the decoder alone.
  """
  datas = []
  for path in paths:
    with open(path, 'rb') as f:
      datas.append(f.read())
  cpu = time.process_time()
  for data in datas:
    decode.decode_image(data, size)
  return (time.process_time() - cpu) * 1000 / len(datas)


def one_at_a_time(backbone, paths):
  """Images/s of retrain.py's way: full decode, resize, backbone, per image."""
  height, width = backbone.image_size

  def one(path):
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32)[tf.newaxis] / 255.0,
                            [height, width])
    return backbone.features(image).numpy()

  one(paths[0])
  start = time.perf_counter()
  for path in paths:
    one(path)
  return len(paths) / (time.perf_counter() - start)


def vectors_of(backbone, paths, *, reduced,
               batch_size=config.DEFAULT_BATCH_SIZE):
  """float32 [len(paths), feature_dim] vectors, with or without JPEG draft."""
  out, batch = [], []
  for pixels in decode.load_images(paths, backbone.image_size, reduced=reduced):
    if isinstance(pixels, Exception):
      raise pixels
    batch.append(pixels)
    if len(batch) == batch_size:
      out.append(backbone.features(np.stack(batch) / np.float32(255)).numpy())
      batch = []
  if batch:
    out.append(backbone.features(np.stack(batch) / np.float32(255)).numpy())
  return np.concatenate(out)


def label_folder(model, paths, *, top_k=5):
  """Images/s of label_image's batched labelling of `paths`."""
  from bottleneck import predict  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  count = sum(1 for _ in predict.label_images(model, paths, top_k=top_k))
  assert count == len(paths), (count, len(paths))
  return len(paths) / (time.perf_counter() - start)


def wall_time(args, *, env=None):
  """Seconds a command takes, from start to exit; raises if it fails."""
  start = time.perf_counter()
  proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, **(env or {})))
  seconds = time.perf_counter() - start
  if proc.returncode:
    raise RuntimeError(f'{" ".join(args)} exited with {proc.returncode}:\n'
                       f'{proc.stderr[-3000:]}')
  return seconds, proc


def child_cache_stage(folder, bottleneck_dir, backbone_args):
  """Runs the cache stage in a fresh process; returns its report (a dict).

  The report has seconds, photos, computed and peak_rss_bytes (the child's
  peak resident memory: TensorFlow, the backbone and the cache stage).
  """
  _, proc = wall_time([sys.executable, '-m', 'bench.child', folder,
                       bottleneck_dir, *backbone_args])
  return json.loads(proc.stdout)


def peak_rss_bytes():
  """Peak resident memory of this process so far (Linux's VmHWM).

  Not getrusage's ru_maxrss: Linux carries that over from the parent through
  fork and exec, so a child started by a 1.5 GB parent would report 1.5 GB.
  """
  with open('/proc/self/status', encoding='ascii') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) * 1024  # In kB.
  raise RuntimeError('/proc/self/status has no VmHWM line (not Linux?).')


def accuracy(head, vectors, labels):
  """Fraction of float32 [n, features] vectors that `head` labels right."""
  return float(np.mean(head.probabilities(vectors).argmax(axis=1) == labels))


@contextlib.contextmanager
def logs_to_devnull():
  """Sends absl's log lines to /dev/null inside a `with` block.

  They are still formatted, as in a run; they are just not shown.
  """
  handler = logging.get_absl_handler().python_handler
  old = handler.stream
  with open(os.devnull, 'w', encoding='utf-8') as devnull:
    handler.stream = devnull
    try:
      yield
    finally:
      handler.stream = old
