"""The cache stage: bottleneck vectors, computed once per photo and kept in HDF5.

A vector is keyed by the SHA-256 of the photo's bytes, in a file of its own for
each backbone identity, so an edited photo is recomputed, a renamed or moved one
is reused, and two backbones never mix:

  <bottleneck_dir>/<backbone slug>-<identity[:16]>.seg-<n>.h5  (and .journal)

See `store` for the files' layout, why a killed run cannot damage them, and
why a run that adds k photos writes O(k) bytes whatever the cache holds.
Vectors of photos that have been deleted stay in the file (4 bytes a feature:
5 KB for MobileNetV2's last layer, 8.7 KB for its `auto` layers) and are
simply not read.
"""

import collections
import concurrent.futures
import dataclasses
import os
import re
import time

from absl import logging
import numpy as np

from bottleneck import config
from bottleneck.data import decode
from bottleneck import errors
from bottleneck import progress
from bottleneck.features import store


@dataclasses.dataclass
class CacheResult:
  """What the cache stage produced.

  The counts are of distinct contents (SHA-256 of the bytes), the unit the
  cache and the backbone work in: reused + computed + undecodable is the
  number of distinct photos, and `duplicates` photos more share their bytes
  with one of them.

  Attributes:
    photos: the photos that have a vector, in input order.
    vectors: float32 [len(photos), feature_dim], row i for photos[i]: a
      numpy array, or above the memory budget a lazy
      `segments.StoredVectors` (index it with arrays; `np.asarray` reads it
      whole; its `blocks()` a block at a time).
    skipped: list of (path, reason) for photos that could not be decoded.
    reused: distinct contents whose vector was already cached.
    computed: distinct contents whose vector this run computed.
    undecodable: distinct contents that could not be decoded.
    duplicates: photos whose bytes an earlier photo of the input has too.
    engine: `Engine.summary()` of what computed the vectors; None if none
      was computed.
  """
  photos: list
  vectors: np.ndarray
  skipped: list
  reused: int
  computed: int
  undecodable: int
  duplicates: int
  engine: dict = None

  @property
  def counts(self):
    """The counts as metrics.json records them: {name: int}."""
    distinct = self.reused + self.computed + self.undecodable
    return {'photos': distinct + self.duplicates, 'distinct': distinct,
            'reused': self.reused, 'computed': self.computed,
            'could_not_decode': self.undecodable,
            'duplicates': self.duplicates}


@dataclasses.dataclass(frozen=True)
class Engine:
  """How the cache stage runs a backbone on this machine (see `probe`).

  Attributes:
    runtime: 'tensorflow', or 'litert' for a .tflite copy run by LiteRT.
    features: function, float32 numpy [batch, height, width, 3] in [0, 1] ->
      [batch, feature_dim] (a Tensor or float32 numpy), the backbone's own
      features or, within `runtimes.TOLERANCE`, those of a verified copy.
    batch_size: images per call of `features`.
    decode_threads: threads that decode photos while the backbone runs.
    backbone_threads: threads of each LiteRT interpreter; 0 for TensorFlow,
      which runs on its own thread pool.
    workers: batches run at once (LiteRT: as many interpreters, so that
      `features` is a `tflite.RunnerPool`); 1 for TensorFlow.
    chosen_by: how the settings were chosen, for the log.
  """
  runtime: str
  features: object
  batch_size: int
  decode_threads: int = 2
  backbone_threads: int = 0
  workers: int = 1
  chosen_by: str = 'given'

  def summary(self):
    """{name: value} of the settings, as metrics.json records them."""
    return {'runtime': self.runtime, 'batch_size': self.batch_size,
            'decode_threads': self.decode_threads,
            'backbone_threads': self.backbone_threads,
            'workers': self.workers, 'chosen_by': self.chosen_by}


# The journal takes the vectors computed since its last write once there are
# this many, or this many seconds after that write: each write syncs the disk
# (milliseconds), which would cost more than a fast backbone's batch of one,
# and a killed run recomputes at most these.
JOURNAL_VECTORS = 32
JOURNAL_SECONDS = 1.0
# Passes of the cache stage: each one after the first follows a segment found
# damaged, so more than a few means a failing disk.
_ATTEMPTS = 4


def cache_path(bottleneck_dir, backbone):
  """Path of the HDF5 file that holds `backbone`'s vectors."""
  slug = re.sub(r'[^A-Za-z0-9]+', '_', backbone.name).strip('_')[-48:]
  return os.path.join(bottleneck_dir, f'{slug}-{backbone.identity[:16]}.h5')


def sibling_path(bottleneck_dir, backbone, suffix):
  """A file kept beside `backbone`'s vectors: its cache path + suffix."""
  return cache_path(bottleneck_dir, backbone)[:-len('.h5')] + suffix


def cache_bottlenecks(photos, backbone, bottleneck_dir, *, batch_size=0,
                      engine=None, what='Bottlenecks',
                      memory_mb=config.DEFAULT_VECTOR_MEMORY_MB, stage=None):
  """Makes sure every photo's vector is cached, and returns them all.

  Each distinct photo (by digest) that is not cached yet is decoded in a thread
  pool, while the backbone runs on the previous batch, and its vector appended
  to the store's journal (JOURNAL_VECTORS at a time); the journal is folded
  into a new segment at the end (see `store`). A segment found damaged when
  its vectors are read is set aside, and its photos computed again.

  Args:
    photos: list of `images.Photo` with digests set.
    backbone: a `backbones.Backbone`.
    bottleneck_dir: folder of the HDF5 files.
    batch_size: images per backbone call, when `engine` is None.
    engine: None to run `backbone.features` at `batch_size`; else a function
      from the paths of the photos to compute (a non-empty list) to the
      `Engine` that computes them, called only if there are such photos (so
      a run with nothing new never converts or measures anything).
    what: what the vectors are, for the log ('Bottlenecks').
    memory_mb: above this many MiB of float32 vectors, `CacheResult.vectors`
      is a lazy `segments.StoredVectors` read from the store in blocks (its
      checksums checked once here), not an array.
    stage: None to decode and run the backbone in this process; else an
      object that computes them elsewhere (`beam_stage.BeamStage`): its
      recover(store) is called once the store is open, and its
      compute(todo, store, engine) -> ({digest: failure reason}, engine
      summary) stores the vectors of the photos to compute.

  Returns:
    A `CacheResult`.
  """
  if engine is None and batch_size < 1:
    raise ValueError(f'batch_size is {batch_size}; pass one >= 1 or an engine')
  vectors = store.VectorStore(cache_path(bottleneck_dir, backbone), backbone)
  distinct = {p.digest for p in photos}
  failed, computed, chosen, summary = {}, 0, None, None
  try:
    if stage:
      stage.recover(vectors)
    for _ in range(_ATTEMPTS):
      missing = set(vectors.missing(sorted(distinct - set(failed))))
      todo = list({p.digest: p for p in reversed(photos)
                   if p.digest in missing}.values())[::-1]
      if todo and chosen is None:
        chosen = (engine([p.path for p in todo]) if engine else
                  Engine('tensorflow', backbone.features, batch_size))
        summary = chosen.summary()
      if todo and stage:
        failed_now, summary = stage.compute(todo, vectors, chosen)
      else:
        failed_now = _compute(todo, backbone, vectors, chosen, what)
      failed.update(failed_now)
      computed += len(todo) - len(failed_now)
      vectors.commit()
      ok = [p for p in photos if p.digest not in failed]
      if vectors.missing([p.digest for p in ok]):
        continue  # A compaction found a segment damaged.
      try:
        wanted = [p.digest for p in ok]
        if len(wanted) * backbone.feature_dim * 4 > memory_mb * 2**20:
          found = vectors.vectors(wanted, check=True)
        else:
          found = vectors.read(wanted)
        break
      except store.DamagedVectors:
        continue  # Set aside: its photos are computed again.
    else:
      raise errors.DataError(
          f'The bottleneck cache in {bottleneck_dir} was found damaged '
          f'{_ATTEMPTS} times in a row; check its disk.')
  finally:
    vectors.close()
  skipped = [(p.path, failed[p.digest]) for p in photos if p.digest in failed]
  result = CacheResult(ok, found, skipped,
                       reused=len(distinct) - computed - len(failed),
                       computed=computed, undecodable=len(failed),
                       duplicates=len(photos) - len(distinct),
                       engine=summary)
  logging.info('%s: %s photos (%s distinct): reused %s, computed %s, could not '
               'decode %s; %s duplicate(s) of another photo\'s bytes.', what,
               *(f'{result.counts[name]:,}' for name in (
                   'photos', 'distinct', 'reused', 'computed',
                   'could_not_decode', 'duplicates')))
  return result


def _compute(todo, backbone, vectors, engine, what):
  """Computes and stores vectors for `todo`; returns {digest: failure reason}."""
  failed = {}
  if not todo:
    return failed
  report = progress.Progress(len(todo), f'Caching {what.lower()}',
                             unit='images')
  unsaved_digests, unsaved, saved = [], [], time.monotonic()
  for rows, computed in compute_vectors([p.path for p in todo],
                                        backbone.image_size, engine):
    if isinstance(computed, errors.DecodeError):
      failed[todo[rows].digest] = computed.reason
      report.clear()
      logging.warning('Skipping %s', computed)
      report.update()
      continue
    unsaved.append(computed)
    unsaved_digests.extend(todo[i].digest for i in rows)
    if (len(unsaved_digests) >= JOURNAL_VECTORS or
        time.monotonic() - saved >= JOURNAL_SECONDS):
      vectors.append(unsaved_digests, np.concatenate(unsaved))
      report.update(len(unsaved_digests))
      unsaved_digests, unsaved, saved = [], [], time.monotonic()
  if unsaved_digests:
    vectors.append(unsaved_digests, np.concatenate(unsaved))
    report.update(len(unsaved_digests))
  report.close()
  return failed


def compute_vectors(paths, size, engine):
  """Decodes photos and runs a backbone on them, each stage kept busy.

  `engine.decode_threads` threads decode ahead (see `decode.load_images`)
  while `engine.workers` threads run `engine.features` on the batches before,
  one batch each, and one more batch waits for them.

  Args:
    paths: list of photo paths.
    size: (height, width) of the backbone's input.
    engine: an `Engine`.

  Yields:
    (rows, float32 numpy [len(rows), feature_dim]): the vectors of the photos
    paths[i] for i in the list `rows`, batch by batch in order; and, as they
    are met, (i, `errors.DecodeError`) for a photo that cannot be decoded.
  """
  with concurrent.futures.ThreadPoolExecutor(engine.workers) as pool:
    waiting, rows, pixels = collections.deque(), [], []

    def submit():
      batch = np.stack(pixels).astype(np.float32) / 255.0
      waiting.append((list(rows), pool.submit(engine.features, batch)))
      rows.clear()
      pixels.clear()

    for i, decoded in enumerate(decode.load_images(
        paths, size, threads=engine.decode_threads)):
      if isinstance(decoded, errors.DecodeError):
        yield i, decoded
        continue
      rows.append(i)
      pixels.append(decoded)
      if len(rows) == engine.batch_size:
        submit()
        while len(waiting) > engine.workers:
          done, future = waiting.popleft()
          yield done, np.asarray(future.result(), np.float32)
    if rows:
      submit()
    while waiting:
      done, future = waiting.popleft()
      yield done, np.asarray(future.result(), np.float32)
