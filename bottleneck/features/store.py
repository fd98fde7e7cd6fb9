"""A crash-safe store of one backbone's bottleneck vectors: HDF5 plus a journal.

HDF5 is not crash-safe when a file is written in place: a process killed
while h5py updates its B-trees can leave a file that no longer opens. So the
HDF5 file is never written in place. Two files per backbone identity:

  <stem>.h5       the vectors of earlier runs; replaced only whole, by
                  writing a new file beside it, fsync, and rename.
      attrs:      format, backbone, identity, image_size, feature_dim,
                  preprocessing
      digests:    |S64 [n]             hex SHA-256 of each photo's bytes
      vectors:    [n, dim] of the backbone's vector_dtype (float32, or
                  float16 for records): row i is the vector of digests[i]
                  (both chunked with Fletcher-32 checksums: a flipped byte
                  fails the read instead of serving a wrong vector)
  <stem>.journal  vectors computed since: an append-only file of records
                  [b'BNV1', 32-byte digest, float32[dim], CRC-32], written and
                  fsynced a group at a time (`cache.JOURNAL_VECTORS`).

A run killed at any moment loses at most the vectors computed since the
journal's last write (a group of `cache.JOURNAL_VECTORS`): the journal's torn
last record fails its length or CRC check and is dropped, and
the next run folds the good records into a new HDF5 file. A damaged HDF5 file
(truncated, flipped bytes, another backbone's) is renamed to
`<stem>.h5.damaged-<time>` with a warning and rebuilt from scratch.

A file the machine cannot read (permissions, an I/O error) is not damaged: it
is left where it is, and the run ends with `errors.UsageError` (exit code 2, as
for any path that cannot be read), naming the file and what to do (see
`disk_errors`).
"""

import os
import time
import zlib

import h5py
from absl import logging
import numpy as np

from bottleneck import publish
from bottleneck.features import disk_errors


FORMAT_VERSION = 2
_MAGIC = b'BNV1'
_HEADER_MAGIC = b'BNJ1'
_BLOCK_ROWS = 4096  # Rows read or copied at a time: memory stays bounded.
_CHUNK_ROWS = 64


class VectorStore:
  """One backbone's vectors; see the module docstring.

  Usage: open, `append` batches, `commit` (folds the journal into the HDF5
  file), then `read`. The caller must hold the bottleneck folder's lock.
  """

  def __init__(self, path, backbone):
    """Opens (or creates) the store, recovering what a killed run left.

    Args:
      path: the HDF5 file, '<stem>.h5'; the journal is '<stem>.journal'.
      backbone: the `backbones.Backbone` whose vectors it holds.
    """
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    self.path = path
    self._journal_path = os.path.splitext(path)[0] + '.journal'
    self._backbone = backbone
    self._dim = backbone.feature_dim
    self._dtype = np.dtype(backbone.vector_dtype).newbyteorder('<')
    self._record = np.dtype([('magic', 'S4'), ('digest', 'u1', (32,)), (
        'vector', self._dtype, (self._dim,)), ('crc', '<u4')])
    self._header = _HEADER_MAGIC + backbone.identity.encode('ascii')
    for name in os.listdir(os.path.dirname(self.path) or '.'):
      if name.startswith(os.path.basename(self.path) + '.tmp'):
        os.remove(os.path.join(os.path.dirname(self.path), name))
    self._digests = self._load_h5()
    self._rows = {d: i for i, d in enumerate(self._digests)}
    self._journal = None
    self._pending = set()
    if os.path.exists(self._journal_path):
      self.commit()  # Folds in what a killed run computed.

  def __contains__(self, digest):
    return digest in self._rows or digest in self._pending

  def __len__(self):
    return len(self._rows) + len(self._pending)

  def append(self, digests, vectors):
    """Durably stores [len(digests), dim] vectors (journal + fsync)."""
    if self._journal is None:
      self._journal = open(self._journal_path, 'ab')  # pylint: disable=consider-using-with
      if self._journal.tell() == 0:
        self._journal.write(self._header)
    records = np.zeros(len(digests), self._record)
    records['magic'] = _MAGIC
    records['digest'] = np.frombuffer(
        bytes.fromhex(''.join(digests)), np.uint8).reshape(-1, 32)
    records['vector'] = vectors
    records['crc'] = [_crc(r) for r in records]
    self._journal.write(records.tobytes())
    self._journal.flush()
    os.fsync(self._journal.fileno())
    self._pending.update(digests)

  def commit(self):
    """Folds the journal into a new HDF5 file that replaces the old one."""
    if self._journal is not None:
      self._journal.close()
      self._journal = None
    fresh = self._journal_records()
    if fresh:
      with disk_errors.machine_errors(self.path, 'write'):
        self._rewrite(fresh)
    if os.path.exists(self._journal_path):
      os.remove(self._journal_path)
    self._pending.clear()

  def read(self, digests):
    """[len(digests), dim] vectors of committed digests, as vector_dtype.

    Read in blocks of _BLOCK_ROWS rows: memory holds the result and one block.
    """
    rows = np.array([self._rows[d] for d in digests], np.int64)
    result = np.empty([len(rows), self._dim], self._dtype)
    if not len(rows):
      return result
    order = np.argsort(rows, kind='stable')
    sorted_rows = rows[order]
    with disk_errors.machine_errors(self.path, 'read'), h5py.File(
        self.path, 'r') as f:
      vectors = f['vectors']
      for start in range(0, vectors.shape[0], _BLOCK_ROWS):
        lo, hi = np.searchsorted(sorted_rows, [start, start + _BLOCK_ROWS])
        if hi > lo:
          block = vectors[start:start + _BLOCK_ROWS]
          result[order[lo:hi]] = block[sorted_rows[lo:hi] - start]
    return result

  def close(self):
    if self._journal is not None:
      self._journal.close()
      self._journal = None

  def _load_h5(self):
    """Digests of the HDF5 file, checked end to end; [] if none or damaged."""
    if not os.path.exists(self.path):
      return []
    try:
      with h5py.File(self.path, 'r') as f:
        if f.attrs.get('identity') != self._backbone.identity:
          raise ValueError(f'it holds vectors of another backbone '
                           f'({f.attrs.get("backbone")})')
        digests = [d.decode('ascii') for d in f['digests'][:]]
        vectors = f['vectors']
        if vectors.shape != (len(digests), self._dim):
          raise ValueError(f'{vectors.shape[0]} vectors of {vectors.shape[1]} '
                           f'for {len(digests)} digests of {self._dim}')
        for start in range(0, len(digests), _BLOCK_ROWS):
          vectors[start:start + _BLOCK_ROWS]  # Checks the Fletcher-32 sums.
        return digests
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
      if disk_errors.errno_of(e):  # The machine's error: keep the file.
        raise disk_errors.cannot_use(self.path, 'read', e) from e
      damaged = f'{self.path}.damaged-{time.strftime("%Y%m%d-%H%M%S")}'
      os.replace(self.path, damaged)
      logging.warning('The bottleneck cache %s is damaged (%s); moved it to %s '
                      'and computing its vectors again.', self.path, e, damaged)
      return []

  def _journal_blocks(self):
    """Yields the journal's whole records in blocks; None if not this store's."""
    try:
      f = open(self._journal_path, 'rb')  # pylint: disable=consider-using-with
    except FileNotFoundError:
      return
    with f:
      if f.read(len(self._header)) != self._header:
        logging.warning('Ignoring %s: it is not a journal of this backbone.',
                        self._journal_path)
        return
      while True:
        data = f.read(_BLOCK_ROWS * self._record.itemsize)
        whole = len(data) // self._record.itemsize
        if whole:
          yield np.frombuffer(data[:whole * self._record.itemsize],
                              self._record)
        if whole < _BLOCK_ROWS:
          return

  def _journal_records(self):
    """(block, row) of each good journal record not in the HDF5 file yet.

    Reading stops at the first damaged record: what follows a torn write
    cannot be trusted. Only digests are kept in memory, not vectors.
    """
    good, seen = [], set(self._rows)
    for b, block in enumerate(self._journal_blocks()):
      for i, record in enumerate(block):
        if record['magic'] != _MAGIC or _crc(record) != record['crc']:
          logging.warning('%s: a damaged record after %d good ones; dropping '
                          'it and the rest (their photos are computed again).',
                          self._journal_path, b * _BLOCK_ROWS + i)
          return good
        digest = record['digest'].tobytes().hex()
        if digest not in seen:
          seen.add(digest)
          good.append((b, i, digest))
    return good

  def _rewrite(self, fresh):
    """Writes old rows + fresh [(block, row, digest)] to a new HDF5 file."""
    tmp = f'{self.path}.tmp{os.getpid()}'
    digests = self._digests + [d for _, _, d in fresh]
    count = len(digests)
    b = self._backbone
    try:
      # libver='latest': the file format with checksums on its metadata too.
      with h5py.File(tmp, 'w', libver='latest') as out:
        out.attrs.update(format=FORMAT_VERSION, backbone=b.name,
                         identity=b.identity, image_size=list(b.image_size),
                         feature_dim=b.feature_dim,
                         preprocessing=b.preprocessing)
        out.create_dataset('digests', data=np.array(digests, 'S64'),
                           chunks=(min(count, 1024),), fletcher32=True)
        vectors = out.create_dataset(
            'vectors', (count, self._dim), self._dtype,
            chunks=(min(count, _CHUNK_ROWS), self._dim), fletcher32=True)
        at = len(self._digests)
        if at:
          with h5py.File(self.path, 'r') as old:
            for start in range(0, at, _BLOCK_ROWS):
              end = min(start + _BLOCK_ROWS, at)
              vectors[start:end] = old['vectors'][start:end]
        rows_by_block = {}
        for block, row, _ in fresh:
          rows_by_block.setdefault(block, []).append(row)
        for block, records in enumerate(self._journal_blocks()):
          rows = rows_by_block.get(block)
          if rows:
            vectors[at:at + len(rows)] = records['vector'][rows]
            at += len(rows)
      with open(tmp, 'rb') as f:
        os.fsync(f.fileno())
      os.replace(tmp, self.path)
      publish.fsync_dir(os.path.dirname(self.path))
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    self._digests = digests
    self._rows = {d: i for i, d in enumerate(digests)}


def _crc(record):
  """CRC-32 of a journal record's digest and vector."""
  return zlib.crc32(record.tobytes()[4:-4])
