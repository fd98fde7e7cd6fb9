"""A corpus of what real photo folders contain, through a whole retrain run.

Each file is either used (and used right: upright, in colour) or skipped with
one line that names it and says why; the run goes on, and its end lists the
skipped files with their count.
"""

import builtins
import io
import logging
import os
import struct
import sys
import zlib

import conftest
import numpy as np
from PIL import Image
import pytest

from bottleneck import errors

RED, BLUE = (220, 30, 30), (30, 30, 220)


def jpeg(img, **kwargs):
  out = io.BytesIO()
  img.save(out, 'JPEG', **kwargs)
  return out.getvalue()


def ycck_jpeg():
  """A 4-channel JPEG whose Adobe marker says YCCK (transform 2)."""
  data = bytearray(jpeg(Image.new('CMYK', (40, 30), (0, 200, 200, 20))))
  at = data.index(b'Adobe') + 11
  data[at] = 2
  return bytes(data)


def rotated_jpeg():
  """Stored on its side, with EXIF orientation 6: turn 90 degrees clockwise.

  Upright, its top half is red and its bottom half blue.
  """
  pixels = np.zeros((40, 60, 3), np.uint8)
  pixels[:, :30] = RED  # A clockwise turn brings the left edge to the top...
  pixels[:, 30:] = BLUE  # ... and the right edge to the bottom.
  exif = Image.Exif()
  exif[0x0112] = 6
  return jpeg(Image.fromarray(pixels), exif=exif.tobytes())


def png_16_bit():
  img = Image.fromarray(np.full((30, 40), 50000, np.uint16))
  out = io.BytesIO()
  img.save(out, 'PNG')
  return out.getvalue()


def bomb_png():
  """A PNG header that claims 30,000 x 30,000 pixels."""
  png = io.BytesIO()
  Image.new('L', (1, 1)).save(png, 'PNG')
  data = png.getvalue()
  ihdr = b'IHDR' + struct.pack('>IIBBBBB', 30000, 30000, 8, 0, 0, 0, 0)
  chunk = struct.pack('>I', 13) + ihdr + struct.pack('>I', zlib.crc32(ihdr))
  return data[:8] + chunk + data[33:]


def save(img, fmt, **kwargs):
  out = io.BytesIO()
  img.save(out, fmt, **kwargs)
  return out.getvalue()


def corpus():
  """{name: (bytes, expected)}: expected is 'used' or a reason's words."""
  palette = Image.new('P', (40, 30), 1)
  palette.putpalette([255, 255, 255, 220, 30, 30] + [0] * 762)
  frames = [Image.new('RGB', (40, 30), c) for c in (RED, BLUE)]
  gif = io.BytesIO()
  frames[0].save(gif, 'GIF', save_all=True, append_images=frames[1:])
  good = jpeg(Image.new('RGB', (40, 30), RED))
  return {
      'truncated.jpg': (good[:len(good) // 2], 'cannot decode'),
      'empty.jpg': (b'', 'empty file'),
      'page.jpg': (b'<!DOCTYPE html><html>Not found</html>', 'not an image'),
      'notes.jpg': (b'shopping list\n', 'not an image'),
      'png_named.jpg': (save(Image.new('RGB', (40, 30), RED), 'PNG'), 'used'),
      'cmyk.jpg': (jpeg(Image.new('CMYK', (40, 30), (0, 220, 220, 30))),
                   'used'),
      'ycck.jpg': (ycck_jpeg(), 'used'),
      'gray.jpg': (jpeg(Image.new('L', (40, 30), 90)), 'used'),
      'deep.png': (png_16_bit(), 'used'),
      'palette.png': (save(palette, 'PNG', transparency=0), 'used'),
      'rgba.png': (save(Image.new('RGBA', (40, 30), RED + (128,)), 'PNG'),
                   'used'),
      'animated.gif': (gif.getvalue(), 'used'),
      'photo.webp': (save(Image.new('RGB', (40, 30), RED), 'WEBP'), 'used'),
      'rotated.jpg': (rotated_jpeg(), 'used'),
      'bomb.png': (bomb_png(), 'cannot decode'),
      'caf\udce9.jpg': (good, 'used'),  # Latin-1 bytes, not UTF-8.
  }


@pytest.fixture
def folder(tmp_path, monkeypatch):
  """Two good classes and one made of the corpus, plus the odd ones."""
  root = tmp_path / 'photos'
  conftest.write_photos(root, {'blue': BLUE, 'green': (30, 200, 30)},
                        per_class=20)
  conftest.write_photos(root, {'red': RED}, per_class=10)
  red = root / 'red'
  for name, (data, _) in corpus().items():
    with open(os.fsencode(str(red / name)), 'wb') as f:
      f.write(data)
  for hidden in ('.DS_Store', 'Thumbs.db', '._IMG_0001.jpg'):
    (red / hidden).write_bytes(b'\x00\x05\x16\x07 junk')
  os.symlink('loop_b.jpg', red / 'loop_a.jpg')
  os.symlink('loop_a.jpg', red / 'loop_b.jpg')
  (red / 'locked.jpg').write_bytes(jpeg(Image.new('RGB', (40, 30), RED)))
  os.chmod(red / 'locked.jpg', 0)
  # Root reads any file whatever its mode; refuse it as the kernel would
  # refuse another user, so that the test means the same under root.
  real_open = builtins.open

  def open_as_a_user(file, *args, **kwargs):
    if os.fspath(file) == str(red / 'locked.jpg'):
      raise PermissionError(13, 'Permission denied', os.fspath(file))
    return real_open(file, *args, **kwargs)
  monkeypatch.setattr(builtins, 'open', open_as_a_user)
  os.makedirs(root / 'empty_class')
  (root / 'loose.jpg').write_bytes(jpeg(Image.new('RGB', (8, 8), RED)))
  return root


def test_every_kind_of_file_is_used_or_skipped_with_a_reason(
    folder, hub_module, outputs, caplog):
  caplog.set_level(logging.INFO)
  assert conftest.run_retrain(image_dir=str(folder), tfhub_module=hub_module,
                              how_many_training_steps=200, learning_rate=1.0,
                              **outputs) == 0
  log = caplog.text
  expected_skips = {name: reason for name, (_, reason) in corpus().items()
                    if reason != 'used'}
  expected_skips.update({'loop_a.jpg': 'cannot read file',
                         'loop_b.jpg': 'cannot read file',
                         'locked.jpg': 'Permission denied'})
  summary = log[log.index('Skipped '):]
  assert f'Skipped {len(expected_skips)} file(s)' in summary
  for name, reason in expected_skips.items():
    [line] = [l for l in summary.splitlines() if name in l]
    assert reason in line, (name, line)
  for name, (_, expected) in corpus().items():
    if expected == 'used':
      assert name not in summary, name
  for ignored in ('.DS_Store', 'Thumbs.db', '._IMG_0001.jpg'):
    assert ignored not in log
  assert 'Ignoring 1 image(s) directly in' in log
  assert 'Leaving out the class folder' in log and 'empty_class' in log
  assert 'reused 0, computed' in log


def test_rotated_and_odd_formats_are_used_the_right_way_up(hub_module):
  from bottleneck.data import decode  # pylint: disable=g-import-not-at-top
  pixels = decode.decode_image(rotated_jpeg(), (32, 32)).astype(int)
  top, bottom = pixels[:16].mean(axis=(0, 1)), pixels[16:].mean(axis=(0, 1))
  assert top[0] > 150 and top[2] < 90, top  # Red above...
  assert bottom[2] > 150 and bottom[0] < 90, bottom  # ... blue below.
  for name, (data, expected) in corpus().items():
    if expected == 'used':
      pixels = decode.decode_image(data, (32, 32))
      assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8, name
    else:
      with pytest.raises(errors.DecodeError, match=expected):
        decode.decode_image(data, (32, 32), name=name)


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
