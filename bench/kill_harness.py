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

Every fifth trial also damages a segment of the cache before the recovery run
(cut in half, or one random byte flipped), which must be detected, set aside and
rebuilt, unless the flipped byte lies where the file keeps nothing it reads
(the file then reads back exactly as before).

`run_trials(plan=...)` chooses each trial's kind instead, as 'KILL' or
'KILL+DAMAGE': KILL is a stage (killed at a random moment of it) or 'journal'
(killed as soon as its journal holds two vectors: mid cache stage, with
vectors written and not yet folded into a segment) or 'compaction' (killed
at a random moment of a merge of segments: while it writes, or after its
rename and before its inputs are removed; the trial adds as many photos as
the smallest segment holds, so that a merge certainly happens). Every run
merges as soon as two segments share a level (MERGE_FACTOR), and its merges
are slowed by COMPACTION_SECONDS so that a kill can land in them. DAMAGE
(to the largest segment file) is 'cut',
'flip', 'flip_chunk' (a byte inside a chunk of vectors, which the file's
Fletcher-32 sums must catch) or, after a journal kill, 'tear' (the journal cut
inside its last record, as a kill inside write() leaves it: the recovery must
keep the records before it and compute the rest). Every damage but a random
'flip' must really change what the file reads and must be caught.
tests/test_kill_harness.py runs a few trials of a fixed plan in CI.
"""

import os
import random
import re
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
from bottleneck.features import journal
from bottleneck.features import runtimes
from bottleneck.features import segments
from bottleneck.features import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Log lines that start the stages a trial can kill in.
STAGES = {'cache': 'Backbone ', 'training': 'Photos: ',
          'export': 'Final test accuracy'}
CLASSES = ('red', 'green', 'blue')
SIZE = 96
# Journal records the store must hold before a 'journal' trial kills the run.
JOURNAL_RECORDS = 2
# Every run merges segments as soon as two share a level, so that compactions
# are frequent; a compaction is slowed down (by its blocks and the moment
# after its rename, before its inputs are removed) for a 'compaction' trial
# to kill it at a random moment of it. The child is retrain.py, run by this.
MERGE_FACTOR = 2
COMPACTION_MARKER = 'HARNESS: merging'
COMPACTION_SECONDS = 0.3
_CHILD = f"""
import sys, time
from bottleneck import config
from bottleneck.features import segments
config.STORE_MERGE_FACTOR = {MERGE_FACTOR}
real_write = segments.write

def slow_write(path, backbone, digests, blocks, merged=(), **kwargs):
  if not merged:
    return real_write(path, backbone, digests, blocks, **kwargs)
  print({COMPACTION_MARKER!r}, file=sys.stderr, flush=True)
  def slow():
    for block in blocks:
      yield block
    time.sleep({COMPACTION_SECONDS / 2})
  written = real_write(path, backbone, digests, slow(), merged, **kwargs)
  time.sleep({COMPACTION_SECONDS / 2})  # Renamed; its inputs not removed yet.
  return written
segments.write = slow_write
sys.argv[0] = 'retrain.py'
import retrain
from absl import app
from bottleneck.run import cli
app.run(retrain.main, flags_parser=cli.parse_flags)
"""


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
    # The journal beside the HDF5 file, and its layout (see store): a header,
    # then records of magic, digest, float32 vector and CRC-32.
    self.journal = os.path.splitext(
        cache.cache_path(self.cache_dir, self.backbone))[0] + '.journal'
    magic = journal.HEADER_MAGIC
    self.journal_header = len(magic) + len(self.backbone.identity)
    self.journal_record = 4 + 32 + 4 * self.backbone.feature_dim + 4

  def start(self):
    return subprocess.Popen([sys.executable, '-c', _CHILD, *self.flags],
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
    marker = COMPACTION_MARKER if stage == 'compaction' else STAGES[stage]
    for line in proc.stderr:
      if timer is None and marker in line:
        timer = threading.Timer(delay, proc.send_signal, [signal.SIGKILL])
        timer.start()
    code = proc.wait()
    if timer:
      timer.cancel()
    return code == -signal.SIGKILL

  def killed_in_journal(self):
    """Starts retrain.py; kills it once its journal holds JOURNAL_RECORDS.

    Returns:
      The number of whole records the killed run left in its journal; 0 if
      it ended first.
    """
    assert not os.path.exists(self.journal), 'a journal left from before'
    proc = self.start()
    want = self.journal_header + JOURNAL_RECORDS * self.journal_record

    def kill_once_written():
      while proc.poll() is None:
        if (os.path.exists(self.journal) and
            os.path.getsize(self.journal) >= want):
          proc.send_signal(signal.SIGKILL)
          return
        time.sleep(0.001)

    watcher = threading.Thread(target=kill_once_written)
    watcher.start()
    for _ in proc.stderr:  # Drained, so that the run never blocks on it.
      pass
    code = proc.wait()
    watcher.join()
    if code != -signal.SIGKILL or not os.path.exists(self.journal):
      return 0
    return ((os.path.getsize(self.journal) - self.journal_header)
            // self.journal_record)

  def tear_journal(self):
    """Cuts the journal inside its last whole record; returns records kept."""
    whole = ((os.path.getsize(self.journal) - self.journal_header)
             // self.journal_record)
    with open(self.journal, 'r+b') as f:
      f.truncate(self.journal_header + (whole - 1) * self.journal_record
                 + self.journal_record // 2)
    return whole - 1

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
      # The store keeps float16: rounded by at most 2**-11 of each value.
      if not np.allclose(vector, self.reference[photo.digest],
                         rtol=runtimes.STORE_ROUNDING, atol=1e-5):
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

  def segment_rows(self):
    """{path: rows} of the store's segments."""
    found = {}
    for path in segments.segment_paths(
        cache.cache_path(self.cache_dir, self.backbone)).values():
      try:
        with h5py.File(path, 'r') as f:
          found[path] = len(f['digests'])
      except OSError:
        pass
    return found

  def photos_for_a_merge(self):
    """New photos whose segment certainly merges with one in place: as many
    as the smallest segment holds (the same level); 0 if there is none."""
    rows = self.segment_rows()
    return min(rows.values()) if rows else 0

  def damage_cache(self, how):
    """Damages the largest segment file.

    Args:
      how: 'cut' (in half), 'flip' (one random byte) or 'flip_chunk' (one
        random byte of a random chunk of vectors).

    Returns:
      The undamaged file's contents {name: array or attribute}, or None if
      there is no file to damage.
    """
    rows = self.segment_rows()
    if not rows:
      return None
    path = self.damaged = max(rows, key=rows.get)
    before = _h5_contents(path)
    if how == 'cut':
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
      return before
    if how == 'flip_chunk':
      with h5py.File(path, 'r') as f:
        chunks = f['vectors'].id
        chunk = chunks.get_chunk_info(
            self.random.randrange(chunks.get_num_chunks()))
      at = chunk.byte_offset + self.random.randrange(chunk.size)
    else:
      at = self.random.randrange(os.path.getsize(path))
    with open(path, 'r+b') as f:
      f.seek(at)
      byte = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([byte[0] ^ 0xff]))
    return before

  def recover(self):
    """Runs retrain.py unkilled; returns (exit code, stderr)."""
    proc = subprocess.run([sys.executable, '-c', _CHILD, *self.flags], cwd=ROOT,
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


def default_plan(trials):
  """Each stage in turn; every fifth trial also cuts or flips the HDF5 file."""
  plan = []
  for trial in range(trials):
    kind = list(STAGES)[trial % len(STAGES)]  # Each stage as often.
    if trial % 5 == 4:
      kind += '+cut' if trial % 2 else '+flip'
    plan.append(kind)
  return plan


def _computed(stderr):
  """The 'computed N' count of a run's Bottlenecks line; None if none."""
  found = re.search(r'Bottlenecks: .*?computed ([\d,]+)', stderr)
  return int(found.group(1).replace(',', '')) if found else None


def run_trials(trials, work_dir, *, seed=0, photos_per_trial=150, log=print,
               plan=None):
  """Runs the trials; returns a dict of counts (see `main` for its use).

  Args:
    trials: how many.
    work_dir: an empty folder.
    seed: seed of the photos, moments and damage.
    photos_per_trial: new photos before each trial's run.
    log: called with a line per trial.
    plan: the kind of each trial ('KILL' or 'KILL+DAMAGE', see the module
      docstring); default_plan(trials) if None.
  """
  plan = default_plan(trials) if plan is None else plan
  assert len(plan) == trials, (trials, plan)
  harness = Harness(work_dir, seed)
  add_photos(harness.photos, 300, harness.rng)
  durations = harness.calibrate()
  log('calibration run, seconds per stage: ' + ', '.join(
      f'{stage} {seconds:.1f}' for stage, seconds in durations.items()))
  counts = dict(trials=0, killed=0, corrupted_caches=0, lost_models=0,
                failed_recoveries=0, damage_detected=0, damage_harmless=0,
                damaged=0, journal_kills=0, compaction_kills=0)
  for trial, kind in enumerate(plan):
    stage, _, damage = kind.partition('+')
    harness.damaged = None
    new = photos_per_trial
    if stage == 'compaction':
      new = harness.photos_for_a_merge() or photos_per_trial
    add_photos(harness.photos, new, harness.rng)
    problems = []
    if stage == 'journal':
      delay = 0
      records = harness.killed_in_journal()
      killed = records > 0
      if killed:
        counts['journal_kills'] += 1
      else:
        problems.append('the run ended before its journal held '
                        f'{JOURNAL_RECORDS} vectors')
    elif stage == 'compaction':
      delay = harness.random.uniform(0, COMPACTION_SECONDS)
      killed = harness.killed_run(stage, delay)
      counts['compaction_kills'] += killed
      if not killed:
        problems.append('the run ended before it was killed in a compaction')
    else:
      delay = harness.random.uniform(0, durations[stage])
      killed = harness.killed_run(stage, delay)
    cache_problems = harness.check_cache()
    counts['corrupted_caches'] += bool(cache_problems)
    model_problems = harness.check_model()
    counts['lost_models'] += bool(model_problems)
    problems += cache_problems + model_problems
    before = kept = None
    if damage == 'tear' and killed:
      kept = harness.tear_journal()
    elif damage in ('cut', 'flip', 'flip_chunk'):
      before = harness.damage_cache(damage)
    elif damage:
      problems.append(f'cannot {damage} after this run')
    damaged = before is not None or kept is not None
    path = getattr(harness, 'damaged', None)
    read_back = _h5_contents(path) if before is not None else None
    unreadable = before is not None and read_back is None
    unchanged = before is not None and read_back == before
    code, stderr = harness.recover()
    if damaged:
      counts['damaged'] += 1
      if kept is not None:
        # Caught if the records before the cut were kept and only the rest
        # of this trial's photos computed again.
        if _computed(stderr) == new - kept:
          counts['damage_detected'] += 1
        else:
          problems.append(f'the journal kept {kept} of this trial\'s '
                          f'{new} vectors, but the recovery '
                          f'computed {_computed(stderr)}')
      elif 'is damaged' in stderr and (unreadable or damage == 'flip'):
        counts['damage_detected'] += 1
      elif unchanged and damage == 'flip':  # A byte the file does not use.
        counts['damage_harmless'] += 1
      elif not unreadable and damage != 'flip':
        problems.append(f'{damage} left the cache file readable')
      else:
        problems.append('damaged cache file not detected')
    after = harness.check_cache(complete=True) + harness.check_model()
    if code != 0 or after:
      counts['failed_recoveries'] += 1
      problems.append(f'recovery run exited {code}; after it: {after}; its '
                      f'last lines: {stderr[-1500:] if code else ""}')
    counts['trials'] += 1
    counts['killed'] += killed
    moment = ('once its journal held vectors' if stage == 'journal' else
              f'{delay:.2f} s into {stage}')
    log(f'trial {trial + 1:2d}: {"killed" if killed else "ended first"} '
        f'{moment}{f", then {damage}" if damaged else ""}: '
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
