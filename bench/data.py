"""Photo sets the benchmark generates once and keeps in bench/_work.

- 12 MP photos: flower photos upscaled to 4000x3000 and saved as JPEG
  (quality 90), in their class folders.
- Many photos: distinct generated 320x240 JPEGs (smooth random colour fields),
  in as many class folders as the flower photos have, for the memory
  measurement.
- New photos: flower photos mirrored and re-encoded, so that their bytes (and
  digests) are new, for the "1% new photos" rerun.
- A subset of the flower photos (symbolic links), for a quick check of the
  benchmark's code.

Photos that a figure is measured on are chosen by `every_class`, in turn from
each class, never as the first N of a list sorted by class.

A set is complete when its marker file exists; an interrupted generation is
finished on the next run.
"""

import collections
import hashlib
import itertools
import os
import shutil

import numpy as np
from PIL import Image
from PIL import ImageOps

_MARKER = '.complete'


def _done(folder, what):
  marker = os.path.join(folder, _MARKER)
  return os.path.exists(marker) and open(marker).read().strip() == str(what)


def _mark(folder, what):
  with open(os.path.join(folder, _MARKER), 'w') as f:
    f.write(str(what))


def every_class(photos, count):
  """Up to `count` distinct photos, taken in turn from each class.

  Args:
    photos: list of `images.Photo` with digests set.
    count: how many to choose.

  Returns:
    The first photo (by path) of each class, then the second of each, and so
    on; a photo byte-identical to one chosen earlier is left out. The choice
    depends on the photos, not on the order of the list.
  """
  by_class, seen = collections.defaultdict(list), set()
  for photo in sorted(photos, key=lambda p: (p.label, p.path)):
    if photo.digest not in seen:
      seen.add(photo.digest)
      by_class[photo.label].append(photo)
  rows = itertools.zip_longest(*(by_class[k] for k in sorted(by_class)))
  return [p for row in rows for p in row if p is not None][:count]


def linked_subset(photos, source, folder):
  """A new folder of symlinks to `photos` (under `source`), classes kept."""
  shutil.rmtree(folder, ignore_errors=True)
  for photo in photos:
    link = os.path.join(folder, os.path.relpath(photo.path, source))
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.abspath(photo.path), link)
  return folder


def large_photos(photos, source, folder, *, size=(4000, 3000), quality=90):
  """Writes each photo upscaled to `size` (width, height) as JPEG.

  Args:
    photos: list of `images.Photo` under the folder `source`.
    source: their image folder.
    folder: output folder; each photo keeps its path relative to `source`.
    size: (width, height) of the output.
    quality: JPEG quality.

  Returns:
    The output folder.
  """
  if _done(folder, len(photos)):
    return folder
  for photo in photos:
    out = os.path.join(folder, os.path.relpath(photo.path, source))
    if os.path.exists(out):
      continue
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with Image.open(photo.path) as img:
      big = img.convert('RGB').resize(size, Image.BICUBIC)
    big.save(out + '.tmp', 'JPEG', quality=quality)
    os.replace(out + '.tmp', out)
  _mark(folder, len(photos))
  return folder


def many_photos(folder, count, *, classes, seed=0, size=(320, 240)):
  """Writes `count` distinct generated JPEGs into `classes` class folders.

  Returns:
    The folder.

  Raises:
    AssertionError: two generated files are byte-identical (never seen).
  """
  what = f'{count} photos, {classes} classes'
  if _done(folder, what):
    return folder
  shutil.rmtree(folder, ignore_errors=True)  # No photo of another set stays.
  rng = np.random.default_rng(seed)
  digests = set()
  for i in range(count):
    grid = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    img = Image.fromarray(grid).resize(size, Image.BICUBIC)
    path = os.path.join(folder, f'c{i % classes}', f'img_{i:06d}.jpg')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, 'JPEG', quality=85)
    with open(path, 'rb') as f:
      digest = hashlib.sha256(f.read()).digest()
    assert digest not in digests, f'{path} duplicates an earlier image'
    digests.add(digest)
  _mark(folder, what)
  return folder


def linked_copy(source, folder):
  """A folder of symlinks to every file of `source`, class folders kept.

  The symlinked photos have the bytes (so the digests) of the originals, so
  their vectors come from the cache.
  """
  for root, _, names in os.walk(source):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), source)
      link = os.path.join(folder, rel)
      if not os.path.lexists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(source, rel)), link)
  return folder


def add_new_photos(photos, source, folder, tag):
  """Writes a mirrored, re-encoded variant of each photo into folder/<class>/.

  Args:
    photos: list of `images.Photo` under `source` to vary; a variant's bytes
      differ from every original's, and from other photos' variants.
    source: their image folder.
    folder: the photo folder the variants join, in their photo's class folder.
    tag: a short string in the new file names.

  Returns:
    The paths written.
  """
  written = []
  for photo in photos:
    rel = os.path.relpath(photo.path, source)
    base = os.path.splitext(os.path.basename(rel))[0]
    path = os.path.join(folder, os.path.dirname(rel), f'new_{tag}_{base}.jpg')
    with Image.open(photo.path) as img:
      ImageOps.mirror(img.convert('RGB')).save(path, 'JPEG', quality=90)
    written.append(path)
  return written
