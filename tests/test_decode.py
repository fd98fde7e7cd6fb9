"""Tests of the decoder on what real photo folders contain."""

import io
import struct
import sys
import zlib

import numpy as np
from PIL import Image
import pytest

from bottleneck.data import decode
from bottleneck import errors

SIZE = (32, 32)
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(img, fmt, **kwargs):
  buffer = io.BytesIO()
  img.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def assert_colour(pixels, colour, tolerance=40):
  mean = pixels.reshape(-1, 3).mean(axis=0)
  assert np.abs(mean - colour).max() < tolerance, (mean, colour)


@pytest.mark.parametrize('fmt, mode', [
    ('JPEG', 'RGB'), ('PNG', 'RGB'), ('BMP', 'RGB'), ('WEBP', 'RGB'),
    ('GIF', 'RGB'), ('PNG', 'RGBA'), ('JPEG', 'CMYK')])
def test_formats_and_modes_decode_to_rgb(fmt, mode):
  colour = (0, 255, 255, 0) if mode == 'CMYK' else RED  # CMYK red.
  img = Image.new(mode, (50, 40), colour)
  pixels = decode.decode_image(encode(img, fmt), SIZE)
  assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
  assert_colour(pixels, RED)


def test_grayscale_and_16_bit_images_keep_their_brightness():
  gray = decode.decode_image(encode(Image.new('L', (8, 8), 100), 'JPEG'), SIZE)
  assert_colour(gray, (100, 100, 100), tolerance=3)
  deep = Image.fromarray(np.full((8, 8), 40000, np.uint16))
  pixels = decode.decode_image(encode(deep, 'PNG'), SIZE)
  assert_colour(pixels, (156, 156, 156), tolerance=1)  # 40000 / 256, not 255.


def test_transparency_is_composited_over_white():
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[:, :4] = (255, 0, 0, 255)  # Left half opaque red, right transparent.
  pixels = decode.decode_image(encode(Image.fromarray(rgba), 'PNG'), (8, 8))
  assert_colour(pixels[:, :3], RED, tolerance=5)
  assert_colour(pixels[:, 5:], WHITE, tolerance=5)

  palette = Image.new('P', (8, 8), 0)
  palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
  palette.paste(1, (0, 0, 4, 8))
  pixels = decode.decode_image(encode(palette, 'PNG', transparency=0), (8, 8))
  assert_colour(pixels[:, :3], RED, tolerance=5)
  assert_colour(pixels[:, 5:], WHITE, tolerance=5)


def test_animated_gif_uses_the_first_frame():
  frames = [Image.new('RGB', (20, 20), c) for c in (RED, BLUE)]
  data = encode(frames[0], 'GIF', save_all=True, append_images=frames[1:])
  assert_colour(decode.decode_image(data, SIZE), RED)


def test_exif_orientation_is_applied():
  img = Image.new('RGB', (40, 20), BLUE)
  img.paste(RED, (0, 0, 20, 20))  # Stored: red left, blue right.
  exif = Image.Exif()
  exif[0x0112] = 6  # Display rotated 90 degrees clockwise: red on top.
  pixels = decode.decode_image(encode(img, 'JPEG', exif=exif.tobytes()), SIZE)
  assert_colour(pixels[:12], RED)
  assert_colour(pixels[-12:], BLUE)


def test_png_named_jpg_decodes_by_content():
  assert_colour(decode.decode_image(encode(Image.new('RGB', (9, 9), RED),
                                           'PNG'), SIZE, name='x.jpg'), RED)


def test_reduced_scale_jpeg_decode_matches_a_full_decode():
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:1500, 0:2000]
  base = np.stack([x / 8, y / 6, (x + y) / 14], axis=-1) % 256
  img = Image.fromarray((base + rng.normal(0, 10, base.shape)).clip(0, 255)
                        .astype(np.uint8))
  data = encode(img, 'JPEG', quality=90)
  reduced = decode.decode_image(data, (224, 224)).astype(float)
  full = np.asarray(Image.open(io.BytesIO(data)).convert('RGB').resize(
      (224, 224), Image.BILINEAR), float)
  assert np.abs(reduced - full).mean() < 3
  np.testing.assert_array_equal(
      decode.decode_image(data, (224, 224), reduced=False), full)
  assert not np.array_equal(reduced, full)  # The draft did decode less.


def bomb_png():
  """A valid-looking PNG header that claims 30,000 x 30,000 pixels."""
  png = encode(Image.new('L', (1, 1)), 'PNG')
  ihdr = b'IHDR' + struct.pack('>II', 30000, 30000) + png[24:29]
  return png[:12] + ihdr + struct.pack('>I', zlib.crc32(ihdr)) + png[33:]


@pytest.mark.parametrize('data, reason', [
    (b'', 'empty file'),
    (b'<html><body>Not found</body></html>', 'not an image'),
    (b'\xff\xd8\xff\xe0' + b'\0' * 100, 'cannot decode'),
    (None, 'truncated'),
    (bomb_png(), 'decompression bomb'),
])
def test_bad_files_raise_decode_error_with_a_reason(data, reason):
  if data is None:
    full = encode(Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (200, 200, 3), np.uint8)), 'JPEG')
    data = full[:len(full) // 2]
  with pytest.raises(errors.DecodeError) as raised:
    decode.decode_image(data, SIZE, name='photos/a/x.jpg')
  assert raised.value.path == 'photos/a/x.jpg'
  assert reason in str(raised.value)


def test_load_images_keeps_order_and_reports_failures(tmp_path):
  paths = []
  for i, colour in enumerate([RED, None, BLUE]):
    path = tmp_path / f'{i}.png'
    path.write_bytes(encode(Image.new('RGB', (5, 5), colour), 'PNG')
                     if colour else b'junk')
    paths.append(str(path))
  paths.append(str(tmp_path / 'missing.png'))
  results = list(decode.load_images(paths, SIZE))
  assert_colour(results[0], RED)
  assert isinstance(results[1], errors.DecodeError)
  assert_colour(results[2], BLUE)
  assert 'cannot read file' in str(results[3])


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
