"""File bytes -> upright RGB pixels at the backbone's input size.

One decoder for the cache stage and for label_image.py, so that a photo gives
the same pixels, and so the same bottleneck, wherever it is labelled.

JPEGs are decoded at a reduced scale (libjpeg's DCT scaling, through Pillow's
`draft`) to the smallest size that is still at least the target size: a 12 MP
photo bound for 224x224 is decoded at 1/8 scale, which skips most of the
inverse DCT and of the resize (the entropy decoding remains; README.md,
Performance, has the measured CPU time per photo).
"""

import collections
import concurrent.futures
import io
import itertools

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

from bottleneck import errors

# Pillow refuses images over 2x this many pixels (DecompressionBombError) and
# warns above it. 89.5 MP is Pillow's own default; a 30,000 x 30,000 image
# (900 MP, 2.7 GB decoded) is refused.
Image.MAX_IMAGE_PIXELS = 89_478_485
# Decoded images waiting for their consumer (the backbone): enough to keep it
# busy, and bounded so that memory does not grow with the number of photos.
_PREFETCH = 64


def decode_image(data, size, *, name='<bytes>', reduced=True):
  """Decodes an image file's bytes to an RGB array of the given size.

  The first frame of an animation is used; EXIF orientation is applied; alpha is
  composited over white; 16-bit images are scaled to 8 bits; the image is
  resized to `size` without keeping its aspect ratio (as retrain.py did).

  Args:
    data: bytes of a JPEG, PNG, BMP, GIF or WebP file.
    size: (height, width) of the output.
    name: how to name the file in an error message.
    reduced: decode JPEGs at the smallest DCT scale (1/1, 1/2, 1/4, 1/8) that
      still covers `size`; False decodes every pixel (for comparison only).

  Returns:
    uint8 numpy array [height, width, 3].

  Raises:
    errors.DecodeError: the bytes are not an image that can be decoded.
  """
  height, width = size
  if not data:
    raise errors.DecodeError(name, 'empty file (0 bytes)')
  try:
    with Image.open(io.BytesIO(data)) as img:
      if img.format == 'JPEG' and reduced:
        # Both sides at least max(size) whatever the EXIF rotation does.
        img.draft(None, (max(size), max(size)))
      img.load()
      img = ImageOps.exif_transpose(img)
      img = _to_rgb(img)
      img = img.resize((width, height), Image.BILINEAR)
      return np.asarray(img, dtype=np.uint8)
  except UnidentifiedImageError as e:
    kind = _claimed_format(data)
    raise errors.DecodeError(name, (
        f'cannot decode image: a damaged {kind} file' if kind else
        'not an image in a known format (JPEG, PNG, BMP, GIF, WebP); it '
        f'starts with {data[:12]!r}')) from e
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
          EOFError) as e:
    # Pillow reports unknown formats, truncated data and bombs through these.
    raise errors.DecodeError(name, f'cannot decode image ({e})') from e


_MAGIC = ((b'\xff\xd8', 'JPEG'), (b'\x89PNG', 'PNG'), (b'GIF8', 'GIF'),
          (b'BM', 'BMP'), (b'RIFF', 'WebP'))


def _claimed_format(data):
  """The format a file's first bytes claim, or None."""
  return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


def _to_rgb(img):
  """Converts any Pillow mode to RGB (alpha over white, 16 bits to 8)."""
  if img.mode == 'RGB':
    return img
  if img.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):
    # 16-bit grayscale: Pillow's convert('L') would clip at 255, not scale.
    pixels = np.asarray(img, dtype=np.uint32) >> 8
    return Image.fromarray(pixels.astype(np.uint8), 'L').convert('RGB')
  if img.mode == 'F':
    pixels = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, 'L').convert('RGB')
  if img.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (
      img.mode == 'P' and 'transparency' in img.info):
    rgba = img.convert('RGBA')
    background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert('RGB')
  return img.convert('RGB')


def load_image(path, size, *, reduced=True):
  """Reads and decodes one image file; see `decode_image`.

  Raises:
    errors.DecodeError: the file cannot be read or is not a usable image.
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise errors.DecodeError(path, f'cannot read file ({e.strerror or e})') from e
  return decode_image(data, size, name=path, reduced=reduced)


def load_images(paths, size, *, threads=2, reduced=True):
  """Decodes files ahead of their consumer; see `decode_image`.

  Pillow releases the GIL while it decodes and resizes, so `threads` decoders
  overlap with whatever the consumer runs (the backbone), at most _PREFETCH
  images ahead of it.

  Args:
    paths: iterable of file paths.
    size: (height, width) of the output.
    threads: number of decoding threads.
    reduced: see `decode_image`.

  Yields:
    For each path in order: a uint8 numpy array [height, width, 3], or the
    `errors.DecodeError` that says why the file cannot be used.
  """
  def load(path):
    try:
      return load_image(path, size, reduced=reduced)
    except errors.DecodeError as e:
      return e

  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    queue = collections.deque()
    pending = iter(paths)
    for path in itertools.islice(pending, _PREFETCH):
      queue.append(pool.submit(load, path))
    while queue:
      future = queue.popleft()
      for path in itertools.islice(pending, 1):
        queue.append(pool.submit(load, path))
      yield future.result()
