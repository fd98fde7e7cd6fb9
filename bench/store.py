r"""The store and the head at 20,000 and 200,000 photos, with synthetic vectors.

  .venv/bin/python -m bench.store [--work_dir /work/tmp-store]
      [--sizes 20000,200000] [--memory_mb 1024 64]

No backbone: vectors are random float32 of MobileNetV2's `auto` width (2,176
features, 8.7 KB a photo as computed and in the journal, 4.4 KB in a float16
segment), digests random. For each cache size N, a store of N vectors is
written as one segment (as after a compaction; not measured),
then each case runs in a fresh child process, as a nightly run would:

  add:   open the store, find the k new digests among all N + k, append their
         vectors to the journal 32 at a time (as the cache stage does),
         commit (a new segment, and any compaction);
  head:  the vectors of all N + k photos (in memory at or below
         --vector_memory_mb, else streamed from the store), split 80/10/10,
         the standard head recipe trained on them and tested.

Printed: the seconds and bytes written of the add part (the store's count
and the kernel's /proc/self/io write_bytes), the head's seconds, and the peak
RSS (VmHWM) of the whole child, with each ratio 200k/20k (large/small for
other --sizes). The add part's seconds are the median of ADD_ROUNDS runs of
it (those of each budget's child, and more children that only add): one run
of a tenth of a second moves by half of it on a shared machine. Two add runs at each size:

  add 1%     k = N / 100 new photos: 200 at 20,000, 2,000 at 200,000.
  add 200    k = 200 (1% of the small size) at both sizes.

Which ratios are judged against issue 14's 1.5, and why. Adding 1% at 200,000
adds ten times as many photos as at 20,000, so the add-1% run's raw seconds
and bytes are about 10x for any store: they are printed, not judged. Its
seconds and bytes PER NEW PHOTO are what the 1.5 target is judged on: the
cost of a new photo must not grow with the cache. That ratio alone cannot
tell O(k) from O(N), though (a store that rewrote all N vectors would write
N / k = 100 vectors per new photo at both sizes, a flat 1.0 ratio), so two
more figures are printed: the add-1% run's write amplification (bytes the
store wrote over the bytes of the new float32 vectors: about 1.5 when a run
writes O(k), since each new vector goes to the journal (float32) and then to
a segment (float16), plus any compaction that run triggers; about 50 when it
rewrites O(N)), and the
add-200 run, whose raw figures are judged against 1.5 (the same k at both
sizes: flat only for O(k) work). Peak RSS is judged against 1.5 in every run.
The head is trained with one L2 strength and --how_many_training_steps 5 so
that the streamed case (each step reads every vector) takes seconds, not an
hour: its figures are those of a shortened fit, not of a default run.

The files (1.9 GB at 200,000) go to --work_dir and are deleted afterwards.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from bottleneck import config
from bottleneck.features import probe
from bottleneck.features import segments
from bottleneck.features import store

DIM = 2176
CLASSES = 5
SIZES = (20_000, 200_000)  # --sizes; the add-1% run is judged per new photo.
ADD_ROUNDS = 5  # Runs of the add part whose median seconds are printed.


def fake_backbone():
  return types.SimpleNamespace(
      name='synthetic', identity='5' * 64, image_size=(224, 224),
      feature_dim=DIM, preprocessing='none', vector_dtype='float32',
      groups=())


def digest_of(i):
  """A random-looking but reproducible digest for photo i."""
  return hashlib.sha256(i.to_bytes(8, 'little')).hexdigest()


def label_of(i):
  return i % CLASSES


def vectors_of(start, count):
  """float32 [count, DIM]: pooled-ReLU-like features with a class signal."""
  rng = np.random.default_rng([start, count])
  x = np.abs(rng.normal(size=(count, DIM))).astype(np.float32)
  labels = np.array([label_of(i) for i in range(start, start + count)])
  x[np.arange(count), labels * 7] += 3.0  # A feature that tells the class.
  return x


def build(path, n):
  """Writes a store of photos 0..n-1 as one segment."""
  digests = np.frombuffer(bytes.fromhex(''.join(
      digest_of(i) for i in range(n))), 'S32')
  blocks = (vectors_of(s, min(4096, n - s)) for s in range(0, n, 4096))
  segments.write(segments.new_path(path, 1), fake_backbone(), digests, blocks,
                 dtype=config.STORE_VECTOR_DTYPE)


def child(path, n, k, memory_mb):
  """One nightly run; prints a JSON line of its figures (memory_mb 0: the add
  part alone)."""
  from bottleneck.train import head as head_lib  # pylint: disable=import-outside-toplevel
  from bottleneck.train import standard  # pylint: disable=import-outside-toplevel
  config.L2_STRENGTHS = (config.DEFAULT_L2,)
  photos = [digest_of(i) for i in range(n + k)]  # The run's photo list.
  io_before = _io_write_bytes()
  start = time.monotonic()
  s = store.VectorStore(path, fake_backbone())
  new = s.missing(photos)
  index = {d: i for i, d in enumerate(photos[n:], n)}
  for at in range(0, len(new), 32):
    group = new[at:at + 32]
    s.append(group, np.concatenate([vectors_of(index[d], 1) for d in group]))
  s.commit()
  add_seconds = time.monotonic() - start
  io_written = _io_write_bytes() - io_before
  if not memory_mb:
    print(json.dumps({'add_seconds': add_seconds}))
    return
  start = time.monotonic()
  if (n + k) * DIM * 4 > memory_mb * 2**20:
    vectors = s.vectors(photos, check=True)
  else:
    vectors = s.read(photos)
  s.close()
  labels = np.array([label_of(i) for i in range(n + k)])
  cut = np.random.default_rng(0).permutation(n + k)
  train, val, test = np.split(cut, [int(0.8 * (n + k)), int(0.9 * (n + k))])
  schedule = head_lib.Schedule(steps=5, learning_rate=0.01,
                               train_batch_size=100, eval_step_interval=10,
                               validation_batch_size=-1)
  head = standard.train_head((vectors[train], labels[train]),
                             (vectors[val], labels[val]), num_classes=CLASSES,
                             schedule=schedule, seed=0)
  accuracy = float(np.mean(head_lib.predicted_classes(head, vectors[test]) ==
                           labels[test]))
  print(json.dumps({
      'add_seconds': add_seconds, 'store_bytes': s.bytes_written,
      'io_bytes': io_written, 'head_seconds': time.monotonic() - start,
      'streamed': not isinstance(vectors, np.ndarray),
      'peak_rss': _peak_rss(), 'accuracy': accuracy,
      'segments': s.segment_rows}))


def _short(n):
  """20000 -> '20k'."""
  return f'{n // 1000}k' if n % 1000 == 0 else f'{n:,}'


def _io_write_bytes():
  with open('/proc/self/io', encoding='ascii') as f:
    return int(next(line for line in f if line.startswith('write_bytes'))
               .split()[1])


def _peak_rss():
  """VmHWM in bytes (not ru_maxrss, which fork carries over from a parent)."""
  with open('/proc/self/status', encoding='ascii') as f:
    line = next(line for line in f if line.startswith('VmHWM:'))
  return int(line.split()[1]) * 1024


def run_case(path, n, k, memory_mb):
  out = subprocess.run(
      [sys.executable, '-m', 'bench.store', '--child', path, str(n), str(k),
       str(memory_mb)], cwd=ROOT, check=True, capture_output=True, text=True)
  for name in os.listdir(os.path.dirname(path)):  # Back to the N-vector store.
    if '.seg-1.h5' not in name:
      os.remove(os.path.join(os.path.dirname(path), name))
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(work_dir, memory_budgets, sizes=SIZES):
  print(f'CPU: {probe.cpu_model()}; {os.cpu_count()} cores.')
  print(shutil.disk_usage(os.path.dirname(work_dir) or '/').free // 2**30,
        'GiB free where the files go.')
  results = {}
  try:
    for n in sizes:
      folder = os.path.join(work_dir, str(n))
      shutil.rmtree(folder, ignore_errors=True)
      os.makedirs(folder)
      path = os.path.join(folder, 'v.h5')
      build(path, n)
      for k in sorted({n // 100, sizes[0] // 100}):
        adds = [run_case(path, n, k, 0)['add_seconds']
                for _ in range(max(0, ADD_ROUNDS - len(memory_budgets)))]
        for budget in memory_budgets:
          results[n, k, budget] = run_case(path, n, k, budget)
          adds.append(results[n, k, budget]['add_seconds'])
        for budget in memory_budgets:  # The same add part in each child.
          results[n, k, budget]['add_seconds'] = float(np.median(adds))
          results[n, k, budget]['add_range'] = (min(adds), max(adds))
          results[n, k, budget]['add_runs'] = len(adds)
      shutil.rmtree(folder)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  small, large = sizes
  print(f'\n| case | N = {small:,} | N = {large:,} | ratio {_short(large)}/'
        f'{_short(small)} | target |')
  print('|---|---|---|---|---|')
  rows = []
  for budget in memory_budgets:
    for label, k_small, k_large in (('add 1%', small // 100, large // 100),
                                    (f'add {small // 100}', small // 100,
                                     small // 100)):
      a, b = results[small, k_small, budget], results[large, k_large, budget]
      # Raw totals of the add-1% run grow with k; judged per new photo.
      raw_target = None if k_small != k_large else 1.5
      rows += [
          (f'{label} (k = {k_small:,} / {k_large:,}): seconds (open, find '
           f'new, journal, commit; median of {a["add_runs"]} runs)',
           a['add_seconds'], b['add_seconds'], '{:.3f} s', raw_target),
          (f'{label}: bytes the store wrote', a['store_bytes'],
           b['store_bytes'], '{:,.0f}', raw_target),
          (f'{label}: bytes written (/proc/self/io)', a['io_bytes'],
           b['io_bytes'], '{:,.0f}', None),
          (f'{label}, budget {budget:g} MiB: head seconds (5 L-BFGS steps)',
           a['head_seconds'], b['head_seconds'], '{:.1f} s', None),
          (f'{label}, budget {budget:g} MiB: peak RSS of the whole run',
           a['peak_rss'] / 2**20, b['peak_rss'] / 2**20, '{:.0f} MiB', 1.5),
      ]
      if k_small != k_large and budget == memory_budgets[0]:
        rows += [
            (f'{label}: seconds per new photo', a['add_seconds'] / k_small,
             b['add_seconds'] / k_large, '{:.5f} s', 1.5),
            (f'{label}: bytes the store wrote per new photo',
             a['store_bytes'] / k_small, b['store_bytes'] / k_large,
             '{:,.0f}', 1.5),
            (f'{label}: bytes written (/proc/self/io) per new photo',
             a['io_bytes'] / k_small, b['io_bytes'] / k_large, '{:,.0f}',
             1.5),
            (f'{label}: write amplification (store bytes / new float32 '
             'vectors\' bytes; ~1.5 for O(k): journal + float16 segment; ~50 '
             'for O(N))',
             a['store_bytes'] / (k_small * DIM * 4),
             b['store_bytes'] / (k_large * DIM * 4), '{:.2f}', None),
        ]
      print(f'<!-- {label}, budget {budget:g}: streamed {a["streamed"]} / '
            f'{b["streamed"]}; test accuracy {a["accuracy"]:.3f} / '
            f'{b["accuracy"]:.3f}; segments {a["segments"]} / '
            f'{b["segments"]}; add seconds, {a["add_runs"]} runs, from '
            f'{a["add_range"][0]:.3f}-{a["add_range"][1]:.3f} / '
            f'{b["add_range"][0]:.3f}-{b["add_range"][1]:.3f} -->')
  for name, a, b, fmt, target in rows:
    ratio = b / a if a else float('nan')
    verdict = '' if target is None else (
        f'<= {target} {"yes" if ratio <= target else "**no**"}')
    print(f'| {name} | {fmt.format(a)} | {fmt.format(b)} | {ratio:.2f} | '
          f'{verdict} |')


if __name__ == '__main__':
  if sys.argv[1:2] == ['--child']:
    child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
  else:
    import argparse  # pylint: disable=g-import-not-at-top
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work_dir', default='/work/tmp-store')
    parser.add_argument(
        '--sizes', default=','.join(map(str, SIZES)),
        type=lambda s: tuple(int(n) for n in s.split(',')),
        help='the two cache sizes N, small,large (each at least 100)')
    parser.add_argument('--memory_mb', type=float, nargs='+',
                        default=[1024, 64],  # > 0: 0 means the add part alone.
                        help='--vector_memory_mb values to run each case at')
    flags = parser.parse_args()
    if len(flags.sizes) != 2 or not 100 <= flags.sizes[0] < flags.sizes[1]:
      parser.error(f'--sizes {",".join(map(str, flags.sizes))}: give two '
                   'sizes, small,large, each at least 100 (so that 1% is a '
                   'photo or more)')
    main(flags.work_dir, flags.memory_mb, flags.sizes)
