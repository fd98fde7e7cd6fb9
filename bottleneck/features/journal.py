"""The store's journal: the vectors computed since the store's last commit.

  <stem>.journal   a header (HEADER_MAGIC and the backbone's identity), then
                   records [MAGIC, 32-byte digest, vector, CRC-32 of the
                   digest and vector], appended and fsynced a group at a time
                   (`cache.JOURNAL_VECTORS`); never rewritten.

A run killed while appending leaves at most one torn record at the end: it
fails its length or CRC check, and `Journal.records` drops it and whatever
follows it (what follows a torn write cannot be trusted). `store.VectorStore`
folds the good records into a new segment and then removes the journal.
"""

import os
import zlib

from absl import logging
import numpy as np

from bottleneck.features import segments

MAGIC = b'BNV1'
HEADER_MAGIC = b'BNJ1'


class Journal:
  """One backbone's journal file; see the module docstring.

  Attributes:
    path: the journal's path.
  """

  def __init__(self, path, backbone):
    """path: '<stem>.journal'; backbone: a `backbones.Backbone`."""
    self.path = path
    dtype = np.dtype(backbone.vector_dtype).newbyteorder('<')
    self._record = np.dtype([('magic', 'S4'), ('digest', 'u1', (32,)), (
        'vector', dtype, (backbone.feature_dim,)), ('crc', '<u4')])
    self._header = HEADER_MAGIC + backbone.identity.encode('ascii')
    self._file = None

  def exists(self):
    return os.path.exists(self.path)

  def append(self, digests, vectors):
    """Durably appends [len(digests), dim] vectors (write + fsync).

    Returns:
      The bytes written.
    """
    written = 0
    if self._file is None:
      self._file = open(self.path, 'ab')  # pylint: disable=consider-using-with
      if self._file.tell() == 0:
        self._file.write(self._header)
        written += len(self._header)
    records = np.zeros(len(digests), self._record)
    records['magic'] = MAGIC
    records['digest'] = np.frombuffer(
        bytes.fromhex(''.join(digests)), np.uint8).reshape(-1, 32)
    records['vector'] = vectors
    records['crc'] = [_crc(r) for r in records]
    self._file.write(records.tobytes())
    self._file.flush()
    os.fsync(self._file.fileno())
    return written + records.nbytes

  def close(self):
    if self._file is not None:
      self._file.close()
      self._file = None

  def remove(self):
    """Closes and deletes the journal (once its records are in a segment)."""
    self.close()
    if self.exists():
      os.remove(self.path)

  def records(self):
    """(block, row, hex digest) of each good record, the first of a digest.

    Reading stops at the first damaged record, with a warning. Only digests
    are kept in memory, not vectors.
    """
    good, seen = [], set()
    for b, block in enumerate(self._blocks()):
      for i, record in enumerate(block):
        if record['magic'] != MAGIC or _crc(record) != record['crc']:
          logging.warning('%s: a damaged record after %d good ones; dropping '
                          'it and the rest (their photos are computed again).',
                          self.path, b * segments.BLOCK_ROWS + i)
          return good
        digest = record['digest'].tobytes().hex()
        if digest not in seen:
          seen.add(digest)
          good.append((b, i, digest))
    return good

  def vectors(self, records):
    """Yields the vectors of `records` (a subset of `records()`), in order."""
    rows_by_block = {}
    for block, row, _ in records:
      rows_by_block.setdefault(block, []).append(row)
    for block, found in enumerate(self._blocks()):
      rows = rows_by_block.get(block)
      if rows:
        yield found['vector'][rows]

  def _blocks(self):
    """Yields the whole records in blocks; nothing if not this backbone's."""
    try:
      f = open(self.path, 'rb')  # pylint: disable=consider-using-with
    except FileNotFoundError:
      return
    with f:
      if f.read(len(self._header)) != self._header:
        logging.warning('Ignoring %s: it is not a journal of this backbone.',
                        self.path)
        return
      rows = segments.BLOCK_ROWS
      while True:
        data = f.read(rows * self._record.itemsize)
        whole = len(data) // self._record.itemsize
        if whole:
          yield np.frombuffer(data[:whole * self._record.itemsize],
                              self._record)
        if whole < rows:
          return


def _crc(record):
  """CRC-32 of a journal record's digest and vector."""
  return zlib.crc32(record.tobytes()[4:-4])
