"""The cache stage: bottleneck vectors, computed once per photo and kept in HDF5.

A vector is keyed by the SHA-256 of the photo's bytes, in a file of its own for
each backbone identity, so an edited photo is recomputed, a renamed or moved one
is reused, and two backbones never mix:

  <bottleneck_dir>/<backbone slug>-<identity[:16]>.h5       (and .journal)

See `store` for the files' layout and why a killed run cannot damage them.
Vectors of photos that have been deleted stay in the file (4 bytes a feature:
5 KB for MobileNetV2's last layer, 8.7 KB for its `auto` layers) and are
simply not read.
"""

import dataclasses
import os
import re

from absl import logging
import numpy as np

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
    vectors: float32 [len(photos), feature_dim], row i for photos[i].
    skipped: list of (path, reason) for photos that could not be decoded.
    reused: distinct contents whose vector was already cached.
    computed: distinct contents whose vector this run computed.
    undecodable: distinct contents that could not be decoded.
    duplicates: photos whose bytes an earlier photo of the input has too.
  """
  photos: list
  vectors: np.ndarray
  skipped: list
  reused: int
  computed: int
  undecodable: int
  duplicates: int

  @property
  def counts(self):
    """The counts as metrics.json records them: {name: int}."""
    distinct = self.reused + self.computed + self.undecodable
    return {'photos': distinct + self.duplicates, 'distinct': distinct,
            'reused': self.reused, 'computed': self.computed,
            'could_not_decode': self.undecodable,
            'duplicates': self.duplicates}


def cache_path(bottleneck_dir, backbone):
  """Path of the HDF5 file that holds `backbone`'s vectors."""
  slug = re.sub(r'[^A-Za-z0-9]+', '_', backbone.name).strip('_')[-48:]
  return os.path.join(bottleneck_dir, f'{slug}-{backbone.identity[:16]}.h5')


def cache_bottlenecks(photos, backbone, bottleneck_dir, *, batch_size,
                      what='Bottlenecks'):
  """Makes sure every photo's vector is cached, and returns them all.

  Each distinct photo (by digest) that is not cached yet is decoded in a thread
  pool, while the backbone runs on the previous batch, and its vector appended
  to the store's journal batch by batch; the journal is folded into the HDF5
  file at the end (see `store`).

  Args:
    photos: list of `images.Photo` with digests set.
    backbone: a `backbones.Backbone`.
    bottleneck_dir: folder of the HDF5 files.
    batch_size: images per backbone call.
    what: what the vectors are, for the log ('Bottlenecks').

  Returns:
    A `CacheResult`.
  """
  vectors = store.VectorStore(cache_path(bottleneck_dir, backbone), backbone)
  try:
    distinct = {p.digest for p in photos}
    todo = list({p.digest: p for p in reversed(photos)
                 if p.digest not in vectors}.values())[::-1]
    failed = _compute(todo, backbone, vectors, batch_size, what)
    vectors.commit()
    ok = [p for p in photos if p.digest not in failed]
    skipped = [(p.path, failed[p.digest]) for p in photos if p.digest in failed]
    found = vectors.read([p.digest for p in ok])
  finally:
    vectors.close()
  result = CacheResult(ok, found, skipped, reused=len(distinct) - len(todo),
                       computed=len(todo) - len(failed),
                       undecodable=len(failed),
                       duplicates=len(photos) - len(distinct))
  logging.info('%s: %s photos (%s distinct): reused %s, computed %s, could not '
               'decode %s; %s duplicate(s) of another photo\'s bytes.', what,
               *(f'{result.counts[name]:,}' for name in (
                   'photos', 'distinct', 'reused', 'computed',
                   'could_not_decode', 'duplicates')))
  return result


def _compute(todo, backbone, vectors, batch_size, what):
  """Computes and stores vectors for `todo`; returns {digest: failure reason}."""
  failed = {}
  if not todo:
    return failed
  report = progress.Progress(len(todo), f'Caching {what.lower()}',
                             unit='images')
  batch_digests, batch_pixels = [], []

  def flush():
    pixels = np.stack(batch_pixels).astype(np.float32) / 255.0
    vectors.append(batch_digests, np.asarray(backbone.features(pixels)))
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
