"""The SavedModel's in-graph decoder gives the cache stage's pixels.

Each test encodes photos with Pillow and checks that graph_decode.decode_image
returns the very bytes of bottleneck.data.decode.decode_image (Pillow), from
which the training vectors were computed.
"""

import io
import struct
import sys
import zlib

import conftest
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from bottleneck.data import decode
from bottleneck.export import graph_decode

# Not square, so that a transposition shows; max(SIZE) = 40 picks the JPEG
# DCT scale.
SIZE = (30, 40)


@pytest.fixture(scope='module')
def graph_decoder():
  """bytes -> uint8 numpy [30, 40, 3], through a tf.function traced once."""
  fn = tf.function(lambda data: graph_decode.decode_image(data, SIZE),
                   input_signature=[tf.TensorSpec([], tf.string)])
  return lambda data: fn(tf.constant(data)).numpy()


def encode(img, fmt, **kwargs):
  buffer = io.BytesIO()
  img.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def assert_same_pixels(graph_decoder, data):
  np.testing.assert_array_equal(graph_decoder(data),
                                decode.decode_image(data, SIZE))


@pytest.mark.parametrize('width, height, options', [
    (50, 35, {}),  # Decoded at full scale: smaller than 2 x 40.
    (130, 90, {}),  # 1/2.
    (333, 200, {'subsampling': 0}),  # 1/4, 4:4:4 chroma.
    (640, 413, {'progressive': True}),  # 1/8.
    (97, 260, {'subsampling': 1}),  # Portrait, 4:2:2; the vertical pass first.
])
def test_jpeg_at_every_dct_scale(graph_decoder, width, height, options):
  img = conftest.layout_image('left', (width, height), seed=width)
  assert_same_pixels(graph_decoder, encode(img, 'JPEG', quality=85, **options))
  assert_same_pixels(graph_decoder, encode(img.convert('L'), 'JPEG'))


def test_resize_up_down_and_in_both_pass_orders(graph_decoder):
  # Pillow 13 resizes vertically first when the height shrinks by more than
  # twice as many pixels as the width; both orders and both directions here.
  for width, height in ((13, 17), (41, 29), (39, 31), (100, 20), (20, 100),
                        (400, 33), (38, 400), (45, 90)):
    img = conftest.layout_image('right', (width, height), seed=width)
    assert_same_pixels(graph_decoder, encode(img, 'PNG'))


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_in_jpeg_png_and_webp(graph_decoder, orientation):
  img = conftest.layout_image('top', (90, 61), seed=orientation)
  data = conftest.layout_file(img, 'jpeg', orientation=orientation)
  assert_same_pixels(graph_decoder, data)
  exif = Image.Exif()
  exif[0x0112] = orientation
  for fmt in ('PNG', 'WEBP'):
    assert_same_pixels(graph_decoder, encode(img, fmt, exif=exif.tobytes()))
  # Little-endian, the tag not first in its IFD, as cameras write it.
  tiff = (b'II*\x00\x08\x00\x00\x00' + struct.pack('<H', 2) +
          struct.pack('<HHI4s', 0x010F, 2, 4, b'Cam\x00') +  # Make.
          struct.pack('<HHIHH', 0x0112, 3, 1, orientation, 0) +
          struct.pack('<I', 0))
  assert_same_pixels(graph_decoder, splice_jpeg_app1(
      encode(img, 'JPEG'), b'Exif\x00\x00' + tiff))


def splice_jpeg_app1(jpeg, payload):
  """jpeg with an APP1 segment holding payload right after its SOI marker."""
  return jpeg[:2] + b'\xff\xe1' + struct.pack('>H', len(payload) + 2) + (
      payload + jpeg[2:])


@pytest.mark.parametrize('xmp', [b'<x tiff:Orientation="6"/>',
                                 b'<tiff:Orientation>8</tiff:Orientation>'])
def test_xmp_orientation_when_exif_has_none(graph_decoder, xmp):
  img = conftest.layout_image('right', (70, 45), seed=1)
  data = splice_jpeg_app1(encode(img, 'JPEG'),
                          b'http://ns.adobe.com/xap/1.0/\x00' + xmp)
  assert_same_pixels(graph_decoder, data)
  assert not np.array_equal(decode.decode_image(data, SIZE),
                            decode.decode_image(encode(img, 'JPEG'), SIZE))


def test_alpha_over_white_for_every_colour_and_alpha():
  colour, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing='ij')
  rgba = np.stack([colour, 255 - colour, colour // 2, alpha], -1)
  data = encode(Image.fromarray(rgba.astype(np.uint8)), 'PNG')
  graph = graph_decode.decode_image(tf.constant(data), (256, 256)).numpy()
  np.testing.assert_array_equal(graph, decode.decode_image(data, (256, 256)))


def png_16_bit_rgba():
  """A 16-bit RGBA PNG (Pillow cannot write one)."""
  rows = np.random.default_rng(0).integers(0, 65536, (20, 30, 4), np.uint16)
  raw = b''.join(b'\x00' + row.astype('>u2').tobytes() for row in rows)

  def chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack(
        '>I', zlib.crc32(kind + body))

  return (b'\x89PNG\r\n\x1a\n' +
          chunk(b'IHDR', struct.pack('>IIBBBBB', 30, 20, 16, 6, 0, 0, 0)) +
          chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def test_png_modes_gif_bmp_and_webp(graph_decoder):
  img = conftest.layout_image('left', (75, 52), seed=3)
  rgba = conftest.layout_file(img, 'png_alpha')
  palette = img.convert('P', palette=Image.Palette.ADAPTIVE, colors=64)
  cases = {
      'png rgb': encode(img, 'PNG'),
      'png rgba': rgba,
      'png la': encode(Image.open(io.BytesIO(rgba)).convert('LA'), 'PNG'),
      'png grey': encode(img.convert('L'), 'PNG'),
      'png 1 bit': encode(img.convert('1'), 'PNG'),
      'png palette': encode(palette, 'PNG'),
      'png palette, transparent': encode(palette, 'PNG', transparency=3),
      'png rgb, tRNS (ignored)': encode(img, 'PNG', transparency=(0, 0, 0)),
      'png 16-bit grey': encode(Image.fromarray(
          (np.asarray(img.convert('L'), np.uint16) * 257)), 'PNG'),
      'png 16-bit rgba': png_16_bit_rgba(),
      'png interlaced': encode(img, 'PNG', interlace=True),
      'gif': encode(palette, 'GIF'),
      'bmp 24-bit': encode(img, 'BMP'),
      'bmp 32-bit': encode(Image.open(io.BytesIO(rgba)), 'BMP'),
      'webp lossy': encode(img, 'WEBP', quality=80),
      'webp lossless': encode(img, 'WEBP', lossless=True),
      'webp alpha': encode(Image.open(io.BytesIO(rgba)), 'WEBP'),
  }
  for name, data in cases.items():
    np.testing.assert_array_equal(graph_decoder(data),
                                  decode.decode_image(data, SIZE), name)


def frame_table(gif):
  """The GIF with its global colour table moved into its first frame."""
  table_bytes = 3 * 2 ** (gif[10] % 8 + 1)
  table, rest = gif[13:13 + table_bytes], gif[13 + table_bytes:]
  pos = 0
  while rest[pos] == 0x21:  # Extensions: introducer, label, sub-blocks.
    pos += 2
    while rest[pos]:
      pos += rest[pos] + 1
    pos += 1
  descriptor = rest[pos:pos + 10]
  return (gif[:10] + bytes([gif[10] & 0x7F]) + gif[11:13] + rest[:pos] +
          descriptor[:9] + bytes([0x80 | (gif[10] & 7)]) + table +
          rest[pos + 10:])


def test_gif_transparency_as_pillow_gives_it(graph_decoder):
  img = conftest.layout_image('top', (75, 52), seed=5)
  palette = img.convert('P', palette=Image.Palette.ADAPTIVE, colors=32)
  grey = Image.fromarray(np.asarray(img.convert('L')) // 8 * 8, 'L')
  # Index 3 transparent: white after compositing.
  transparent = encode(palette, 'GIF', transparency=3)
  cases = {
      'global table': transparent,
      'table in the frame': frame_table(transparent),
      'animated, with a comment': encode(
          palette, 'GIF', transparency=3, save_all=True, comment=b'a test',
          append_images=[Image.new('P', palette.size, 1)]),
      # A grey-ramp table opens as greyscale; its transparency is ignored.
      'grey ramp': encode(grey, 'GIF', transparency=64),
  }
  for name, data in cases.items():
    np.testing.assert_array_equal(graph_decoder(data),
                                  decode.decode_image(data, SIZE), name)
  assert (decode.decode_image(transparent, SIZE) == 255).all(axis=-1).any()
  assert Image.open(io.BytesIO(cases['table in the frame'])).palette


def test_cmyk_jpeg_is_within_one_level(graph_decoder):
  # TensorFlow converts CMYK to RGB with other rounding than Pillow.
  img = conftest.layout_image('left', (75, 52), seed=4).convert('CMYK')
  data = encode(img, 'JPEG', quality=95)
  difference = graph_decoder(data).astype(int) - decode.decode_image(data,
                                                                      SIZE)
  assert np.abs(difference).max() <= 1


@pytest.mark.parametrize('data, message', [
    (b'', 'none of them'),
    (b'<html>Not found</html>', 'none of them'),
    (encode(Image.new('RGB', (20, 10)), 'TIFF'), 'none of them'),
    (encode(Image.new('P', (20, 10)), 'BMP'), '24- and 32-bit BMP'),
    (encode(Image.new('RGB', (20, 10)), 'WEBP', save_all=True,
            append_images=[Image.new('RGB', (20, 10), (255, 0, 0))]),
     'animated WebP'),
])
def test_files_it_cannot_decode_are_refused_with_a_way_out(graph_decoder, data,
                                                           message):
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    graph_decoder(data)
  assert message in str(raised.value)
  assert 'serving_images' in str(raised.value)


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
