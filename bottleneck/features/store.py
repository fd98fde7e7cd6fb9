"""A crash-safe store of one backbone's vectors: immutable segments + a journal.

HDF5 is not crash-safe when a file is written in place: a process killed
while h5py updates its B-trees can leave a file that no longer opens. So no
HDF5 file is ever written in place, and a run that adds k photos to a cache
of N writes O(k) bytes, not O(N):

  <stem>.journal      vectors computed since the last commit, appended and
                      fsynced a group at a time (see `journal`).
  <stem>.seg-<n>.h5   immutable segments (see `segments`): `commit` folds the
                      journal's new vectors into one new segment, written
                      beside its name, fsynced and renamed.
  <stem>.h5           the single file of caches made before segments: read
                      as segment 0, so they keep working.

Opening reads each segment's digests and the order that sorts them (format 3)
and sorts nothing; finding a digest is a binary search in each segment, the
largest first (`digest_index.locate`). A digest is in one segment at most:
a commit writes only digests the store does not hold, and a merge replaces
its inputs.

Compaction (LSM stores' and Lucene's size-tiered merging): a segment's level
is floor(log_F(rows)) for F = `config.STORE_MERGE_FACTOR`; when F segments
share a level, they are merged into one new segment of the next level. A
vector is rewritten once per level, O(log N) times in all, and at most F - 1
segments share a level. The merged segment records the numbers of those it
replaces (`merged`); they are removed after its rename, and a run killed in
between leaves them to the next run, which removes them on opening.

A run killed at any moment loses at most the vectors computed since the
journal's last write: the journal's torn last record fails its length or CRC
check and is dropped, and the next run folds the good records into a new
segment. Opening checks each segment's metadata and digests; its vectors'
Fletcher-32 sums are checked as they are read, so a run reads only the
vectors it uses. A damaged segment (truncated, flipped bytes, another
backbone's) is renamed to `<its name>.damaged-<time>` with a warning, and only
its vectors are computed again (`cache` asks for them).

A file the machine cannot read (permissions, an I/O error) is not damaged: it
is left where it is, and the run ends with `errors.UsageError` (exit code 2, as
for any path that cannot be read), naming the file and what to do (see
`disk_errors`).
"""

import math
import os
import time

from absl import logging
import numpy as np

from bottleneck import config
from bottleneck import publish
from bottleneck.features import digest_index
from bottleneck.features import disk_errors
from bottleneck.features import journal as journal_lib
from bottleneck.features import segments

DamagedVectors = segments.DamagedVectors


class VectorStore:
  """One backbone's vectors; see the module docstring.

  Usage: open, `append` batches, `commit` (folds the journal into a new
  segment, then compacts), then `read` or `vectors`. The caller must hold the
  bottleneck folder's lock.

  Attributes:
    bytes_written: bytes this object wrote (journal and segments).
  """

  def __init__(self, path, backbone, *, merge_factor=None):
    """Opens (or creates) the store, recovering what a killed run left.

    Args:
      path: segment 0, '<stem>.h5'; the journal is '<stem>.journal'.
      backbone: the `backbones.Backbone` whose vectors it holds.
      merge_factor: F, segments of a level that are merged (>= 2); None for
        `config.STORE_MERGE_FACTOR`.
    """
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    self.path = path
    self.bytes_written = 0
    self._merge_factor = merge_factor or config.STORE_MERGE_FACTOR
    self._backbone = backbone
    self._dim = backbone.feature_dim
    self._dtype = np.dtype(backbone.vector_dtype).newbyteorder('<')
    self._disk_dtype = ('float16' if backbone.vector_dtype == 'float16' else
                        config.STORE_VECTOR_DTYPE)
    self._journal = journal_lib.Journal(
        os.path.splitext(path)[0] + '.journal', backbone)
    folder = os.path.dirname(self.path) or '.'
    for name in os.listdir(folder):
      if segments.is_leftover(self.path, name):
        os.remove(os.path.join(folder, name))
    self._segments = self._load_segments()
    self._pending = set()
    if self._journal.exists():
      self.commit()  # Folds in what a killed run computed.

  def __contains__(self, digest):
    return digest in self._pending or bool(self._find([digest])[0][0])

  def __len__(self):
    return sum(self.segment_rows.values()) + len(self._pending)

  def missing(self, digests):
    """The digests of the list that the store does not hold, in order."""
    found = self._find(digests)[0]
    return [digests[i] for i in np.flatnonzero(~found)
            if digests[i] not in self._pending]

  @property
  def segment_rows(self):
    """{segment number: rows} of the live segments."""
    return {n: len(s.index) for n, s in self._segments.items()}

  def append(self, digests, vectors):
    """Durably stores [len(digests), dim] vectors (journal + fsync)."""
    self.bytes_written += self._journal.append(digests, vectors)
    self._pending.update(digests)

  def commit(self):
    """Folds the journal into a new segment, then compacts (module doc)."""
    self.close()
    fresh = self._new(self._journal.records())
    if fresh:
      digests = digest_index.from_hex([d for _, _, d in fresh])
      number = self._next_number()
      path = segments.new_path(self.path, number)
      index = digest_index.SortedDigests(digests)
      self.bytes_written += self._write(
          path, digests, index, lambda: self._journal.vectors(fresh))
      self._segments[number] = segments.Segment(number, path, index, ())
    self._journal.remove()
    self._pending.clear()
    self._compact()

  def read(self, digests):
    """[len(digests), dim] vectors of committed digests, as vector_dtype.

    Read in blocks of `segments.BLOCK_ROWS` rows, in the files' order:
    memory holds the result and one block.

    Raises:
      DamagedVectors: a segment failed its checksums; it has been set aside,
        and its digests are no longer in the store.
    """
    lazy = self.vectors(digests)
    result = np.empty(lazy.shape, self._dtype)
    for positions, block in self._blocks(lazy):
      result[positions] = block
    return result

  def vectors(self, digests, *, check=False):
    """A lazy float32 [len(digests), dim] `segments.StoredVectors`.

    Args:
      digests: committed digests.
      check: read it through once, so that a damaged segment is found (and
        set aside: `DamagedVectors`) now rather than by whoever reads it.
    """
    found, segment, row, paths = self._find(digests)
    if not found.all():
      raise KeyError(f'{np.sum(~found)} digests are not in the store')
    lazy = segments.StoredVectors(paths, segment, row, self._dtype, self._dim)
    if check:
      for _ in self._blocks(lazy):
        pass
    return lazy

  def close(self):
    self._journal.close()

  def _blocks(self, lazy):
    """lazy.blocks(), setting a damaged segment aside before raising."""
    try:
      yield from lazy.blocks()
    except DamagedVectors as e:
      number = next(n for n, s in self._segments.items() if s.path == e.path)
      self._set_aside(self._segments.pop(number).path, e)
      raise

  def _load_segments(self):
    """{number: `segments.Segment`} of the good segments."""
    live = {}
    for number, path in segments.segment_paths(self.path).items():
      try:
        live[number] = segments.check(number, path, self._backbone)
      except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        if disk_errors.errno_of(e):  # The machine's error: keep the file.
          raise disk_errors.cannot_use(path, 'read', e) from e
        self._set_aside(path, e)
    replaced = {n for s in live.values() for n in s.merged} & set(live)
    for number in sorted(replaced):  # A compaction killed before removing.
      os.remove(live.pop(number).path)
    if replaced:
      publish.fsync_dir(os.path.dirname(self.path))
    return live

  def _set_aside(self, path, error):
    damaged = f'{path}.damaged-{time.strftime("%Y%m%d-%H%M%S")}'
    os.replace(path, damaged)
    logging.warning('The bottleneck cache %s is damaged (%s); moved it to %s '
                    'and computing its vectors again.', path, error, damaged)

  def _find(self, digests):
    """Where hex digests are: (found, segment, row, paths).

    Returns:
      found: bool [n]; segment: int64 [n], an index into `paths` (-1 where
      not found); row: int64 [n], the row in that segment; paths: list of
      the live segments' paths.
    """
    live = sorted(self._segments.values(), key=lambda s: -len(s.index))
    segment, row = digest_index.locate([s.index for s in live], digests)
    return segment >= 0, segment, row, [s.path for s in live]

  def _next_number(self):
    used = [0] + list(self._segments) + [
        n for s in self._segments.values() for n in s.merged]
    return max(used) + 1

  def _compact(self):
    """Merges F segments of a level until no level holds F (module doc)."""
    while True:
      levels = {}
      for number, rows in self.segment_rows.items():
        level = int(math.log(max(rows, 1), self._merge_factor))
        levels.setdefault(level, []).append(number)
      full = [group for _, group in sorted(levels.items())
              if len(group) >= self._merge_factor]
      if not full:
        return
      if not self._merge(full[0]):
        return

  def _merge(self, group):
    """Writes the rows of the segments `group` into one; False if damaged."""
    inputs = [self._segments[n] for n in group]
    # Each input's rows in its file's order, so that reading is sequential.
    rows, digests = zip(*[s.index.in_file_order() for s in inputs])
    lazy = segments.StoredVectors(
        [s.path for s in inputs],
        np.repeat(np.arange(len(inputs)), [len(r) for r in rows]),
        np.concatenate(rows), self._dtype, self._dim)
    digests = np.concatenate(digests)
    index = digest_index.SortedDigests(digests)
    number = self._next_number()
    path = segments.new_path(self.path, number)
    try:
      self.bytes_written += self._write(
          path, digests, index,
          lambda: (block for _, block in self._blocks(lazy)), merged=group)
    except DamagedVectors:
      return False  # Set aside; its photos are computed again.
    for n in group:
      os.remove(self._segments.pop(n).path)
    publish.fsync_dir(os.path.dirname(self.path))
    self._segments[number] = segments.Segment(number, path, index,
                                              tuple(group))
    return True

  def _write(self, path, digests, index, blocks, merged=()):
    """segments.write at the store's dtype, float32 if float16 cannot hold it.

    Args:
      path, digests, merged: as for `segments.write`.
      index: the digests' `digest_index.SortedDigests` (its order is written
        with them, so that they are sorted once).
      blocks: function -> a new iterable of the rows' blocks (called again if
        float16 cannot hold them).

    Returns:
      The bytes written.
    """
    dtype = self._disk_dtype
    while True:
      try:
        with disk_errors.machine_errors(path, 'write'):
          return segments.write(path, self._backbone, digests, blocks(),
                                merged=merged, dtype=dtype, order=index.rows)
      except segments.NotFloat16 as e:
        logging.warning('%s: %s; this segment keeps its vectors as float32.',
                        path, e)
        dtype = 'float32'

  def _new(self, records):
    """The journal's records (block, row, digest) whose digest is not stored."""
    found = self._find([d for _, _, d in records])[0]
    return [r for r, f in zip(records, found) if not f]
