"""Photo sets the benchmark generates once and keeps in bench/_work.

- 12 MP photos: flower photos upscaled to 4000x3000 and saved as JPEG
  (quality 90), in their class folders.
- Many photos: distinct generated 320x240 JPEGs (smooth random colour fields),
  in five class folders, for the memory measurement.
- New photos: flower photos mirrored and re-encoded, so that their bytes (and
  digests) are new, for the "1% new photos" rerun.

A set is complete when its marker file exists; an interrupted generation is
finished on the next run.
"""

import hashlib
import os

import numpy as np
from PIL import Image
from PIL import ImageOps

_MARKER = '.complete'
_CLASSES = ('c0', 'c1', 'c2', 'c3', 'c4')


def _done(folder, count):
  marker = os.path.join(folder, _MARKER)
  return os.path.exists(marker) and open(marker).read().strip() == str(count)


def _mark(folder, count):
  with open(os.path.join(folder, _MARKER), 'w') as f:
    f.write(str(count))


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


def many_photos(folder, count, *, seed=0, size=(320, 240)):
  """Writes `count` distinct generated JPEGs into five class folders.

  Returns:
    The folder.

  Raises:
    AssertionError: two generated files are byte-identical (never seen).
  """
  if _done(folder, count):
    return folder
  rng = np.random.default_rng(seed)
  digests = set()
  for i in range(count):
    grid = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    img = Image.fromarray(grid).resize(size, Image.BICUBIC)
    path = os.path.join(folder, _CLASSES[i % len(_CLASSES)], f'img_{i:06d}.jpg')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, 'JPEG', quality=85)
    with open(path, 'rb') as f:
      digest = hashlib.sha256(f.read()).digest()
    assert digest not in digests, f'{path} duplicates an earlier image'
    digests.add(digest)
  _mark(folder, count)
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
