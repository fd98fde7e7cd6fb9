"""The store's immutable segment files: writing, checking, reading, merging.

A segment is one HDF5 file that is written once, beside its final name, then
fsynced and renamed, and never changed after:

  <stem>.h5          segment 0: the single file of caches before segments
                     (format 2), read as it is, so old caches keep working
  <stem>.seg-<n>.h5  segment n >= 1 (format 3; format 2 before it)
      attrs:     format, backbone, identity, image_size, feature_dim,
                 preprocessing; merged: int64 [m], the segments it replaces
                 (a compaction's output), else empty
      digests:   uint8 [rows, 32]       SHA-256 of each photo's bytes (format
                 3; format 2: |S64 [rows], the same in hex)
      order:     int64 [rows]           the rows in ascending digest order
                 (format 3), so that opening sorts nothing (`digest_index`;
                 format 2 has none: its digests are sorted when opened)
      vectors:   [rows, dim] float16 (format 3, `config.STORE_VECTOR_DTYPE`)
                 or float32 (format 2, or a segment float16 cannot hold:
                 `NotFloat16`); row i is the vector of digests[i]
      (all chunked with Fletcher-32 checksums: a flipped byte fails the
      read instead of serving a wrong vector)

Float16 keeps 11 significant bits: a vector read back differs from the one
computed by at most 2**-11 (4.9e-4) of each value, or of its largest value
for values below 6.1e-5; a segment whose vectors float16 cannot keep so
(a value beyond +-65504, a vector whose largest value is below 6.1e-5, as
untrained backbones give) is written as float32 instead. On the flower photos'
2,176-wide vectors that changed no test accuracy or unknown rate measured
(README.md, The bottleneck cache).

`StoredVectors` is a lazy [n, dim] matrix of rows of segments, read a block
at a time in the order of the files.
"""

import dataclasses
import os
import re

import h5py
import numpy as np

from bottleneck import errors
from bottleneck import publish
from bottleneck.features import digest_index
from bottleneck.features import disk_errors

FORMAT_VERSION = 3
BLOCK_ROWS = 4096  # Rows read or copied at a time: memory stays bounded.
_CHUNK_ROWS = 64


class NotFloat16(ValueError):
  """Float16 would change a vector by more than 2**-11 of its largest value.

  A finite value beyond float16's range (+-65504) would become inf; a vector
  whose largest value is below float16's smallest normal number (6.1e-5)
  would be rounded by more than 2**-11 of it (or become zeros).
  """


class DamagedVectors(errors.DataError):
  """A segment failed its checksums when read: it has been set aside.

  Attributes:
    path: the segment's path before it was set aside.
  """

  def __init__(self, path, error):
    super().__init__(
        f'The bottleneck cache segment {path} failed its checksums when read '
        f'({error}); it was set aside. Run again: the next run computes its '
        'vectors again.')
    self.path = path


def segment_paths(path):
  """{number: path} of the segments of the store whose segment 0 is `path`."""
  folder, name = os.path.split(path)
  stem = re.escape(name[:-len('.h5')])
  found = {}
  for entry in os.listdir(folder or '.'):
    if entry == name:
      found[0] = path
    else:
      match = re.fullmatch(rf'{stem}\.seg-(\d+)\.h5', entry)
      if match:
        found[int(match.group(1))] = os.path.join(folder, entry)
  return dict(sorted(found.items()))


def is_leftover(path, entry):
  """True for a file that a killed write of a segment of `path` left."""
  stem = re.escape(os.path.basename(path)[:-len('.h5')])
  return re.fullmatch(rf'{stem}(\.seg-\d+)?\.h5\.tmp\d+', entry) is not None


def new_path(path, number):
  return f'{path[:-len(".h5")]}.seg-{number}.h5'


@dataclasses.dataclass
class Segment:
  """A checked segment: its number, path, digests and what it replaced."""
  number: int
  path: str
  index: digest_index.SortedDigests  # Its digests, ascending, and their rows.
  merged: tuple


def check(number, path, backbone):
  """Opens a segment and checks all but its vectors' bytes.

  The vectors' checksums are checked when they are read (`StoredVectors`),
  so that a run reads only the vectors it needs, once.

  Returns:
    A `Segment`.

  Raises:
    ValueError, KeyError, UnicodeDecodeError, OSError: the file is damaged or
      the machine cannot read it (`disk_errors.errno_of` tells them apart).
  """
  with h5py.File(path, 'r') as f:
    if f.attrs.get('identity') != backbone.identity:
      raise ValueError(f'it holds vectors of another backbone '
                       f'({f.attrs.get("backbone")})')
    stored = f['digests'][:]
    vectors = f['vectors']
    if vectors.shape != (len(stored), backbone.feature_dim):
      raise ValueError(f'{vectors.shape[0]} vectors of {vectors.shape[1]} '
                       f'for {len(stored)} digests of {backbone.feature_dim}')
    if stored.ndim == 1:  # Format 2: hex.
      digests = digest_index.from_hex_array(stored)
    elif stored.shape[1:] == (32,) and stored.dtype == np.uint8:
      digests = np.ascontiguousarray(stored).view('S32').reshape(-1)
    else:
      raise ValueError(f'digests of {stored.dtype} {stored.shape}')
    order = f['order'][:] if 'order' in f else None
    merged = tuple(int(n) for n in f.attrs.get('merged', ()))
  return Segment(number, path, digest_index.SortedDigests(digests, order),
                 merged)


def write(path, backbone, digests, blocks, merged=(), dtype=None,
          order=None):
  """Writes a segment durably: beside `path`, fsync, rename, fsync folder.

  Args:
    path: its final path.
    backbone: the `backbones.Backbone` of the vectors.
    digests: |S32 [rows] numpy array, the digests' bytes, all distinct.
    blocks: iterable of [r, dim] arrays, the rows in order (sum of r = rows).
    merged: the numbers of the segments this one replaces (a compaction).
    dtype: of the vectors on disk: 'float16' or 'float32'; None for the
      backbone's vector_dtype.
    order: int [rows], the rows in ascending digest order, if the caller
      has it (`digest_index.SortedDigests.rows`); None to sort them here.

  Returns:
    The bytes written.

  Raises:
    NotFloat16: float16 cannot hold the vectors within 2**-11 of their
      largest values (nothing is left on disk; write them as float32).
  """
  tmp = f'{path}.tmp{os.getpid()}'
  count, dim = len(digests), backbone.feature_dim
  order = digest_index.sort_order(digests) if order is None else order
  if len(order) != count or count > 1 and not np.all(
      digests[order[1:]] > digests[order[:-1]]):
    raise AssertionError('a digest is twice among a segment\'s rows')
  dtype = np.dtype(dtype or backbone.vector_dtype).newbyteorder('<')
  try:
    # libver='latest': the file format with checksums on its metadata too.
    with h5py.File(tmp, 'w', libver='latest') as out:
      out.attrs.update(format=FORMAT_VERSION, backbone=backbone.name,
                       identity=backbone.identity,
                       image_size=list(backbone.image_size),
                       feature_dim=dim, preprocessing=backbone.preprocessing,
                       merged=np.asarray(merged, np.int64))
      # Bytes, not strings: numpy and HDF5 strings drop trailing zero bytes.
      out.create_dataset(
          'digests', data=np.frombuffer(np.ascontiguousarray(digests).tobytes(),
                                        np.uint8).reshape(count, 32),
          chunks=(min(count, 4096) or 1, 32), maxshape=(None, 32),
          fletcher32=True)
      out.create_dataset('order', data=order.astype('<i8'),
                         chunks=(min(count, 4096) or 1,), maxshape=(None,),
                         fletcher32=True)
      vectors = out.create_dataset(
          'vectors', (count, dim), dtype,
          chunks=(min(count, _CHUNK_ROWS) or 1, dim),
          maxshape=(None, dim), fletcher32=True)
      at = 0
      for block in blocks:
        vectors[at:at + len(block)] = _cast(block, dtype)
        at += len(block)
      if at != count:
        raise AssertionError(f'{at} vectors written for {count} digests')
    with open(tmp, 'rb') as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
    publish.fsync_dir(os.path.dirname(path))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return os.path.getsize(path)


def _cast(block, dtype):
  """[r, dim] block as dtype; NotFloat16 rather than a vector float16 spoils."""
  block = np.asarray(block)
  if dtype.itemsize == 2 and block.dtype != np.float16 and block.size:
    largest = np.abs(block).max(axis=1)
    info = np.finfo(np.float16)
    wrong = ((largest > info.max) & np.isfinite(largest) |
             (largest > 0) & (largest < info.tiny))
    if wrong.any():
      raise NotFloat16(
          f'a vector whose largest value is {largest[wrong][0]:g}, which '
          f'float16 cannot keep within 2**-11 (its normal numbers are '
          f'{info.tiny:.2g} to {info.max:g})')
  return block.astype(dtype)


class StoredVectors:
  """A lazy [n, dim] float32 matrix: rows of segments, read on demand.

  Indexing with an array of row indices gives another `StoredVectors`;
  `np.asarray` reads it whole; `blocks` reads it a block at a time.
  """

  def __init__(self, paths, segment, row, dtype, dim):
    """paths: the segments' paths; segment, row: int arrays [n]."""
    self._paths, self._segment, self._row = paths, segment, row
    self._dtype, self.shape = dtype, (len(row), dim)
    self.dtype = np.dtype(np.float32)

  def __len__(self):
    return self.shape[0]

  @property
  def nbytes(self):
    return self.shape[0] * self.shape[1] * 4

  def __getitem__(self, index):
    index = np.arange(len(self))[index]
    return StoredVectors(self._paths, self._segment[index], self._row[index],
                         self._dtype, self.shape[1])

  def __array__(self, dtype=None, copy=None):
    del copy
    out = np.empty(self.shape, np.float32)
    for positions, block in self.blocks():
      out[positions] = block
    return out if dtype is None else out.astype(dtype)

  def blocks(self, rows=None):
    """Yields (positions int [r], float32 [r, dim]) in the files' order.

    Each segment is read in windows of `rows` rows, and only the windows
    that hold a wanted row: memory holds one window and its selection.

    Raises:
      DamagedVectors: a chunk failed its Fletcher-32 sum (not set aside here;
        `store.VectorStore` sets it aside when it reads).
      errors.UsageError: the machine cannot read a segment.
    """
    rows = rows or BLOCK_ROWS
    order = np.lexsort((self._row, self._segment))
    segments, rows_sorted = self._segment[order], self._row[order]
    bounds = np.flatnonzero(np.diff(segments)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(order)]):
      if lo == hi:
        continue
      path = self._paths[segments[lo]]
      wanted = rows_sorted[lo:hi]
      with disk_errors.machine_errors(path, 'read'), h5py.File(
          path, 'r') as f:
        vectors = f['vectors']
        at = 0
        while at < len(wanted):
          start = wanted[at]
          end = int(np.searchsorted(wanted, start + rows, 'left'))
          try:
            window = vectors[start:wanted[end - 1] + 1]
          except OSError as e:
            if disk_errors.errno_of(e):
              raise
            raise DamagedVectors(path, e) from e
          yield (order[lo + at:lo + end],
                 window[wanted[at:end] - start].astype(np.float32))
          at = end
