"""The cache stage: bottleneck vectors, computed once per photo and kept in HDF5.

A vector is keyed by the SHA-256 of the photo's bytes, in a file of its own for
each backbone identity, so an edited photo is recomputed, a renamed or moved one
is reused, and two backbones never mix:

  <bottleneck_dir>/<backbone slug>-<identity[:16]>.h5
    attrs:    format, backbone, identity, image_size, feature_dim, preprocessing
    digests:  |S64 [n]             hex SHA-256 of each photo's bytes
    vectors:  float32 [n, features]

Vectors of photos that have been deleted stay in the file (they cost 5 KB each
with MobileNetV2) and are simply not read.
"""

import dataclasses
import os
import re

import h5py
from absl import logging
import numpy as np

from bottleneck import decode
from bottleneck import errors
from bottleneck import progress

FORMAT_VERSION = 1
_READ_ROWS = 4096


@dataclasses.dataclass
class CacheResult:
  """What the cache stage produced.

  Attributes:
    photos: the photos that have a vector, in input order.
    vectors: float32 [len(photos), feature_dim], row i for photos[i].
    skipped: list of (path, reason) for photos that could not be decoded.
    reused: number of photos whose vector was already cached.
    computed: number of vectors computed by this run.
  """
  photos: list
  vectors: np.ndarray
  skipped: list
  reused: int
  computed: int


def cache_path(bottleneck_dir, backbone):
  """Path of the HDF5 file that holds `backbone`'s vectors."""
  slug = re.sub(r'[^A-Za-z0-9]+', '_', backbone.name).strip('_')[-48:]
  return os.path.join(bottleneck_dir, f'{slug}-{backbone.identity[:16]}.h5')


class VectorStore:
  """One backbone's vectors in one HDF5 file, with an in-memory index."""

  def __init__(self, path, backbone):
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    self._file = h5py.File(path, 'a')
    f = self._file
    if 'vectors' not in f:
      f.attrs.update(format=FORMAT_VERSION, backbone=backbone.name,
                     identity=backbone.identity,
                     image_size=list(backbone.image_size),
                     feature_dim=backbone.feature_dim,
                     preprocessing=backbone.preprocessing)
      f.create_dataset('digests', (0,), dtype='S64', maxshape=(None,),
                       chunks=(1024,))
      f.create_dataset('vectors', (0, backbone.feature_dim), dtype='float32',
                       maxshape=(None, backbone.feature_dim),
                       chunks=(64, backbone.feature_dim))
    elif f.attrs.get('identity') != backbone.identity:
      raise errors.ModelError(
          f'{path} holds vectors of another backbone '
          f'({f.attrs.get("backbone")}); move it away and run again.')
    self._rows = {d.decode('ascii'): i for i, d in enumerate(f['digests'][:])}

  def __contains__(self, digest):
    return digest in self._rows

  def __len__(self):
    return len(self._rows)

  def append(self, digests, vectors):
    """Stores float32 [len(digests), feature_dim] vectors and flushes."""
    start = len(self._rows)
    end = start + len(digests)
    self._file['vectors'].resize(end, axis=0)
    self._file['vectors'][start:end] = vectors
    self._file['digests'].resize(end, axis=0)
    self._file['digests'][start:end] = [d.encode('ascii') for d in digests]
    self._file.flush()
    self._rows.update((d, start + i) for i, d in enumerate(digests))

  def read(self, digests):
    """float32 [len(digests), feature_dim] vectors of cached digests.

    The file is read in blocks of _READ_ROWS rows, so that memory holds the
    result and one block, however many vectors the file has.
    """
    dataset = self._file['vectors']
    rows = np.array([self._rows[d] for d in digests], np.int64)
    result = np.empty([len(rows), dataset.shape[1]], np.float32)
    order = np.argsort(rows, kind='stable')
    for start in range(0, dataset.shape[0], _READ_ROWS):
      lo, hi = np.searchsorted(rows[order], [start, start + _READ_ROWS])
      if hi > lo:
        block = dataset[start:min(start + _READ_ROWS, dataset.shape[0])]
        result[order[lo:hi]] = block[rows[order[lo:hi]] - start]
    return result

  def close(self):
    self._file.close()


def cache_bottlenecks(photos, backbone, bottleneck_dir, *, batch_size):
  """Makes sure every photo's vector is cached, and returns them all.

  Each distinct photo (by digest) that is not cached yet is decoded in a thread
  pool, while the backbone runs on the previous batch, and its vector appended
  to the store batch by batch.

  Args:
    photos: list of `images.Photo` with digests set.
    backbone: a `backbones.Backbone`.
    bottleneck_dir: folder of the HDF5 files.
    batch_size: images per backbone call.

  Returns:
    A `CacheResult`.
  """
  store = VectorStore(cache_path(bottleneck_dir, backbone), backbone)
  try:
    reused = sum(p.digest in store for p in photos)
    todo = list({p.digest: p for p in reversed(photos)
                 if p.digest not in store}.values())[::-1]
    failed = _compute(todo, backbone, store, batch_size)
    ok = [p for p in photos if p.digest not in failed]
    skipped = [(p.path, failed[p.digest]) for p in photos if p.digest in failed]
    vectors = (store.read([p.digest for p in ok]) if ok else
               np.zeros([0, backbone.feature_dim], np.float32))
  finally:
    store.close()
  computed = len(todo) - len(failed)
  logging.info('Bottlenecks: reused %s, computed %s, could not decode %s '
               '(%s photos).', f'{reused:,}', f'{computed:,}',
               f'{len(skipped):,}', f'{len(photos):,}')
  return CacheResult(ok, vectors, skipped, reused, computed)


def _compute(todo, backbone, store, batch_size):
  """Computes and stores vectors for `todo`; returns {digest: failure reason}."""
  failed = {}
  if not todo:
    return failed
  report = progress.Progress(len(todo), 'Caching bottlenecks', unit='images')
  batch_digests, batch_pixels = [], []

  def flush():
    pixels = np.stack(batch_pixels).astype(np.float32) / 255.0
    store.append(batch_digests, backbone.features(pixels).numpy())
    report.update(len(batch_digests))
    batch_digests.clear()
    batch_pixels.clear()

  decoded = decode.load_images([p.path for p in todo], backbone.image_size)
  for photo, pixels in zip(todo, decoded):
    if isinstance(pixels, errors.DecodeError):
      failed[photo.digest] = pixels.reason
      report.clear()
      logging.warning('Skipping %s', pixels)
      report.update()
    else:
      batch_digests.append(photo.digest)
      batch_pixels.append(pixels)
      if len(batch_digests) == batch_size:
        flush()
  if batch_digests:
    flush()
  report.close()
  return failed
