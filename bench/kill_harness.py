r"""Kills real retrain.py runs at random moments and checks what they leave.

  .venv/bin/python bench/kill_harness.py --trials 30

Each trial adds new photos to a folder (so that every run has cache work),
starts `retrain.py` on it, and SIGKILLs it at a random moment of one stage
(cache, training and export in turn); the stages' lengths come from one
calibration run. After each kill it checks:

  cache:     a copy of the bottleneck folder opens without being found
             damaged, and every vector it serves equals the vector of the
             photo with that digest, computed afresh;
  model:     the published model (if one was published before) loads and
             labels a photo; the labels file and frozen graph load and agree;
  recovery:  retrain.py run again, unkilled, exits 0 and caches every photo.

Every fifth trial also damages the HDF5 cache before the recovery run (cut in
half, or one random byte flipped), which must be detected, set aside and
rebuilt, unless the flipped byte lies where the file keeps nothing it reads
(the file then reads back exactly as before).
tests/test_kill_harness.py runs a few trials in CI.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from bottleneck.run import cli  # pylint: disable=unused-import  (TF log level)
from absl import app
from absl import flags
import h5py
import numpy as np
from PIL import Image
import tensorflow as tf

from bottleneck.features import backbones
from bottleneck.features import cache
from bottleneck.data import decode
from bottleneck.data import images
from bottleneck import predict
from bottleneck.features import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Log lines that start the stages a trial can kill in.
STAGES = {'cache': 'Backbone ', 'training': 'Photos: ',
          'export': 'Final test accuracy'}
CLASSES = ('red', 'green', 'blue')
SIZE = 96


def make_backbone(path):
  """A small conv net with the TF Hub feature-vector contract, saved."""
  class Features(tf.Module):

    def __init__(self):
      super().__init__()
      rng = tf.random.Generator.from_seed(0)
      self.k1 = tf.Variable(rng.normal([3, 3, 3, 32]) * 0.3)
      self.k2 = tf.Variable(rng.normal([3, 3, 32, 32]) * 0.1)

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3],
                                                 tf.float32)])
    def __call__(self, images_):
      x = tf.nn.relu(tf.nn.conv2d(images_, self.k1, 1, 'SAME'))
      x = tf.nn.relu(tf.nn.conv2d(x, self.k2, 1, 'SAME'))
      return tf.reduce_mean(x, axis=[1, 2])

  tf.saved_model.save(Features(), path)
  return path


def add_photos(folder, count, rng):
  """Writes `count` new noisy solid-colour JPEGs, spread over the classes."""
  colours = {'red': (200, 40, 40), 'green': (40, 190, 40),
             'blue': (40, 40, 210)}
  for i in range(count):
    name = CLASSES[i % len(CLASSES)]
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    pixels = np.clip(np.array(colours[name]) + rng.normal(0, 25, (48, 64, 3)),
                     0, 255).astype(np.uint8)
    path = os.path.join(folder, name, f'{rng.integers(1 << 62):x}.jpg')
    Image.fromarray(pixels).save(path)


class Harness:
  """The work folder, the commands, and the checks."""

  def __init__(self, work_dir, seed):
    self.work = work_dir
    self.photos = os.path.join(work_dir, 'photos')
    self.cache_dir = os.path.join(work_dir, 'bottlenecks')
    self.model = os.path.join(work_dir, 'model')
    self.labels = os.path.join(work_dir, 'labels.txt')
    self.graph = os.path.join(work_dir, 'graph.pb')
    self.rng = np.random.default_rng(seed)
    self.random = random.Random(seed)
    module = make_backbone(os.path.join(work_dir, 'backbone'))
    self.backbone = backbones.load_backbone(module)
    self.flags = [f'--image_dir={self.photos}', f'--tfhub_module={module}',
                  f'--bottleneck_dir={self.cache_dir}',
                  f'--saved_model_dir={self.model}',
                  f'--output_labels={self.labels}',
                  f'--output_graph={self.graph}', '--summaries_dir=',
                  '--how_many_training_steps=3000', '--learning_rate=0.5']
    self.reference = {}  # digest -> vector computed afresh.

  def start(self):
    return subprocess.Popen([sys.executable, 'retrain.py', *self.flags],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            errors='replace', stdout=subprocess.DEVNULL)

  def calibrate(self):
    """Runs retrain.py once, unkilled; returns {stage: seconds}."""
    seen = {}
    proc = self.start()
    for line in proc.stderr:
      for stage, marker in STAGES.items():
        if marker in line and stage not in seen:
          seen[stage] = time.monotonic()
    assert proc.wait() == 0, 'the calibration run failed'
    end = time.monotonic()
    order = list(STAGES)
    return {stage: (seen[order[i + 1]] if i + 1 < len(order) else end)
                   - seen[stage] for i, stage in enumerate(order)}

  def killed_run(self, stage, delay):
    """Starts retrain.py and kills it `delay` s after `stage` starts.

    Returns:
      True if it was killed, False if it ended first.
    """
    proc = self.start()
    timer = None
    for line in proc.stderr:
      if timer is None and STAGES[stage] in line:
        timer = threading.Timer(delay, proc.send_signal, [signal.SIGKILL])
        timer.start()
    code = proc.wait()
    if timer:
      timer.cancel()
    return code == -signal.SIGKILL

  def check_cache(self, *, complete=False):
    """Problems with a copy of the cache as the killed run left it.

    Args:
      complete: also require a vector for every photo (after a recovery).
    """
    copy = os.path.join(self.work, 'cache_copy')
    shutil.rmtree(copy, ignore_errors=True)
    if not os.path.isdir(self.cache_dir):
      return []
    # The store's own files; not those a recovery already set aside.
    shutil.copytree(self.cache_dir, copy, ignore=shutil.ignore_patterns(
        '*.damaged-*'))
    vectors = store.VectorStore(cache.cache_path(copy, self.backbone),
                                self.backbone)
    vectors.commit()
    problems = [f'cache set aside as damaged: {name}'
                for name in os.listdir(copy) if '.damaged-' in name]
    _, photos = images.find_photos(self.photos)
    photos, _ = images.digest_photos(photos)
    cached = [p for p in photos if p.digest in vectors]
    got = vectors.read([p.digest for p in cached])
    vectors.close()
    if complete and len(cached) < len(photos):
      problems.append(f'{len(photos) - len(cached)} photos not cached')
    for photo, vector in zip(cached, got):
      if photo.digest not in self.reference:
        pixels = decode.load_image(photo.path, self.backbone.image_size)
        self.reference[photo.digest] = self.backbone.features(
            pixels[np.newaxis].astype(np.float32) / 255).numpy()[0]
      if not np.allclose(vector, self.reference[photo.digest], atol=1e-5):
        problems.append(f'wrong vector served for {photo.path}')
    return problems

  def check_model(self):
    """Problems with the published model and the files beside it."""
    problems = []
    try:
      model = predict.load_saved_model(self.model)
      probe = next(iter(images.find_photos(self.photos)[1])).path
      [(_, result)] = list(predict.label_images(model, [probe], top_k=1))
      if isinstance(result, Exception):
        problems.append(f'the published model cannot label a photo: {result}')
      graph = predict.load_frozen_graph(self.graph, self.labels)
      if len(graph.labels) != len(model.labels):
        problems.append('labels file and frozen graph disagree')
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f'published model lost or unreadable: {e}')
    return problems

  def damage_cache(self, trial):
    """Cuts the HDF5 file in half or flips one random byte of it.

    Returns:
      The undamaged file's contents {name: array or attribute}, or None if
      there is no file to damage.
    """
    path = cache.cache_path(self.cache_dir, self.backbone)
    if not os.path.exists(path):
      return None
    before = _h5_contents(path)
    with open(path, 'r+b') as f:
      if trial % 2:
        f.truncate(os.path.getsize(path) // 2)
      else:
        f.seek(self.random.randrange(os.path.getsize(path)))
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xff]))
    return before

  def recover(self):
    """Runs retrain.py unkilled; returns (exit code, stderr)."""
    proc = subprocess.run([sys.executable, 'retrain.py', *self.flags], cwd=ROOT,
                          capture_output=True, text=True, errors='replace')
    return proc.returncode, proc.stderr


def _h5_contents(path):
  """{name: bytes} of an HDF5 cache's attributes and datasets; None if it
  cannot be read whole."""
  try:
    with h5py.File(path, 'r') as f:
      contents = {f'attr {k}': np.asarray(v).tobytes()
                  for k, v in f.attrs.items()}
      contents.update({name: f[name][:].tobytes() for name in f})
      return contents
  except (OSError, ValueError, KeyError):
    return None


def run_trials(trials, work_dir, *, seed=0, photos_per_trial=150, log=print):
  """Runs the trials; returns a dict of counts (see `main` for its use)."""
  harness = Harness(work_dir, seed)
  add_photos(harness.photos, 300, harness.rng)
  durations = harness.calibrate()
  log('calibration run, seconds per stage: ' + ', '.join(
      f'{stage} {seconds:.1f}' for stage, seconds in durations.items()))
  counts = dict(trials=0, killed=0, corrupted_caches=0, lost_models=0,
                failed_recoveries=0, damage_detected=0, damage_harmless=0,
                damaged=0)
  for trial in range(trials):
    add_photos(harness.photos, photos_per_trial, harness.rng)
    stage = list(STAGES)[trial % len(STAGES)]  # Each stage as often.
    delay = harness.random.uniform(0, durations[stage])
    killed = harness.killed_run(stage, delay)
    problems = harness.check_cache()
    counts['corrupted_caches'] += bool(problems)
    model_problems = harness.check_model()
    counts['lost_models'] += bool(model_problems)
    problems += model_problems
    before = harness.damage_cache(trial) if trial % 5 == 4 else None
    damaged = before is not None
    path = cache.cache_path(harness.cache_dir, harness.backbone)
    unchanged = damaged and _h5_contents(path) == before
    code, stderr = harness.recover()
    if damaged:
      counts['damaged'] += 1
      if 'is damaged' in stderr:
        counts['damage_detected'] += 1
      elif unchanged:  # The flipped byte was in space the file does not use.
        counts['damage_harmless'] += 1
      else:
        problems.append('damaged cache file not detected')
    after = harness.check_cache(complete=True) + harness.check_model()
    if code != 0 or after:
      counts['failed_recoveries'] += 1
      problems.append(f'recovery run exited {code}; after it: {after}; its '
                      f'last lines: {stderr[-1500:] if code else ""}')
    counts['trials'] += 1
    counts['killed'] += killed
    log(f'trial {trial + 1:2d}: {"killed" if killed else "ended first"} '
        f'{delay:.2f} s into {stage}{", cache damaged" if damaged else ""}: '
        + ('; '.join(problems) if problems else 'ok'))
  return counts


def main(argv):
  del argv
  work = os.path.join(ROOT, 'bench', '_work', 'kill')
  shutil.rmtree(work, ignore_errors=True)
  os.makedirs(work)
  counts = run_trials(FLAGS.trials, work, seed=FLAGS.seed)
  print(f'{counts["trials"]} trials ({counts["killed"]} killed mid-run): '
        f'{counts["corrupted_caches"]} corrupted caches, '
        f'{counts["lost_models"]} lost published models, '
        f'{counts["failed_recoveries"]} failed recoveries; '
        f'{counts["damage_detected"]} of {counts["damaged"]} damaged cache '
        'files detected and rebuilt, '
        f'{counts["damage_harmless"]} damaged where nothing is read.')
  bad = (counts['corrupted_caches'] or counts['lost_models'] or
         counts['failed_recoveries'] or
         counts['damage_detected'] + counts['damage_harmless'] !=
         counts['damaged'])
  return 1 if bad else 0


if __name__ == '__main__':
  flags.DEFINE_integer('trials', 30, 'Runs to kill.')
  flags.DEFINE_integer('seed', 0, 'Seed of the photos, stages and moments.')
  FLAGS = flags.FLAGS
  app.run(main)
