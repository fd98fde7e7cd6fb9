"""The EXIF orientation of an image file, read with TensorFlow ops.

Part of the in-graph decoder (`graph_decode`). The cache stage turns photos
upright with Pillow's `ImageOps.exif_transpose`, which reads the Orientation
tag (0x0112) from the first IFD of the file's EXIF block and, when that block
has no such tag, `tiff:Orientation` from its XMP packet. This module finds the
same blocks where Pillow does:

  JPEG  EXIF: the first APP1 segment that starts 'Exif\\0\\0'; XMP: the last
        APP1 segment that starts with Adobe's XMP namespace. Only segments
        before the first scan (SOS) are read, as Pillow does.
  PNG   EXIF: the first eXIf chunk, before or after the image data.
  WebP  EXIF: the EXIF chunk; XMP: the 'XMP ' chunk.

and reads them with tf.strings.substr and tf.io.decode_raw. Pillow also reads
XMP from PNG iTXt chunks and GIF extensions and EXIF from PNG text chunks;
cameras and phones write none of these, and this module ignores them. A
malformed EXIF block counts as no orientation (Pillow rejects the file).
"""

import tensorflow as tf

from bottleneck.export import graph_bytes

_EXIF_HEADER = b'Exif\x00\x00'
_XMP_HEADER = b'http://ns.adobe.com/xap/1.0/\x00'
_ORIENTATION_TAG = 0x0112
# TIFF field types whose value Pillow reads as a number: BYTE, SHORT, LONG and
# their signed forms.
_BYTES_OF_TYPE = {1: 1, 3: 2, 4: 4, 6: 1, 8: 2, 9: 4}
# Bounds on the loops over a file's segments and chunks, so that a crafted file
# cannot keep a server busy: real JPEGs have tens of segments before the scan;
# a PNG has one chunk per 8 KB (libpng's default) or more of pixel data, so
# 2^16 chunks cover 500 MB.
_MAX_JPEG_SEGMENTS = 4096
_MAX_PNG_CHUNKS = 1 << 16
_MAX_WEBP_CHUNKS = 1024
_MAX_IFD_ENTRIES = 512


def _walk(data, start, step, max_steps):
  """Walks a file's segments or chunks and returns where its blocks are.

  Args:
    data: string, the file.
    start: int, offset of the first segment.
    step: function from the int64 offset of a segment to a dict: 'next' (int64
      offset of the next segment), 'end' (bool, stop here), 'exif' and 'xmp'
      (bool, this segment is such a block), 'exif_pos', 'exif_len', 'xmp_pos',
      'xmp_len' (int64, where its payload is).
    max_steps: bound on the number of segments read.

  Returns:
    (exif, xmp): each a pair of int64 (offset, length), length -1 if absent.
    The first EXIF block and the last XMP block are kept, as Pillow does.
  """
  size = tf.cast(tf.strings.length(data), tf.int64)
  none = tf.constant(-1, tf.int64)

  def body(pos, done, exif_pos, exif_len, xmp_pos, xmp_len):
    s = step(pos)
    new_exif = s['exif'] & (exif_len < 0)
    return (s['next'], s['end'],
            tf.where(new_exif, s['exif_pos'], exif_pos),
            tf.where(new_exif, s['exif_len'], exif_len),
            tf.where(s['xmp'], s['xmp_pos'], xmp_pos),
            tf.where(s['xmp'], s['xmp_len'], xmp_len))

  state = tf.while_loop(
      lambda pos, done, *_: tf.logical_not(done) & (pos < size), body,
      (tf.constant(start, tf.int64), tf.constant(False), none, none, none,
       none), maximum_iterations=max_steps)
  return state[2:4], state[4:6]


def _jpeg_step(data):
  """`_walk`'s step over JPEG markers, as Pillow's JpegImageFile reads them."""
  def step(pos):
    first, marker = tf.unstack(graph_bytes.read_bytes(data, pos, 2))
    is_marker = tf.equal(first, 0xFF)
    # The length counts its own 2 bytes.
    length = graph_bytes.read_uint(data, pos + 2, 2, False)
    # Markers without a length (SOI, TEM, RSTn); 0xFF 0xFF is fill.
    standalone = ((marker == 0xD8) | (marker == 0x01) |
                  ((marker >= 0xD0) & (marker <= 0xD7)))
    app1 = is_marker & tf.equal(marker, 0xE1)
    payload = pos + 4
    return dict(
        next=pos + tf.where(
            is_marker & (marker != 0xFF),
            tf.where(standalone, tf.constant(2, tf.int64), 2 + length),
            tf.constant(1, tf.int64)),
        end=is_marker & ((marker == 0xDA) | (marker == 0xD9)),
        exif=app1 & tf.equal(graph_bytes.read_text(data, payload, 6),
                             _EXIF_HEADER),
        exif_pos=payload + 6, exif_len=length - 2 - 6,
        xmp=app1 & tf.equal(
            graph_bytes.read_text(data, payload, len(_XMP_HEADER)),
            _XMP_HEADER),
        xmp_pos=payload + len(_XMP_HEADER),
        xmp_len=length - 2 - len(_XMP_HEADER))
  return step


def _png_step(data):
  """`_walk`'s step over PNG chunks: length, type, data, CRC."""
  def step(pos):
    length = graph_bytes.read_uint(data, pos, 4, False)
    kind = graph_bytes.read_text(data, pos + 4, 4)
    return dict(next=pos + 12 + length, end=tf.equal(kind, b'IEND'),
                exif=tf.equal(kind, b'eXIf'), exif_pos=pos + 8,
                exif_len=length, xmp=tf.constant(False), xmp_pos=pos,
                xmp_len=length)
  return step


def _webp_step(data):
  """`_walk`'s step over RIFF chunks: fourcc, little-endian size, even pad."""
  def step(pos):
    length = graph_bytes.read_uint(data, pos + 4, 4, True)
    kind = graph_bytes.read_text(data, pos, 4)
    return dict(next=pos + 8 + length + length % 2, end=tf.constant(False),
                exif=tf.equal(kind, b'EXIF'), exif_pos=pos + 8,
                exif_len=length, xmp=tf.equal(kind, b'XMP '),
                xmp_pos=pos + 8, xmp_len=length)
  return step


def _exif_orientation(exif):
  """(present, value): the Orientation tag in a TIFF block (string).

  value is 0 when the tag is there but is not one number (Pillow then leaves
  the image as it is).
  """
  # Pillow's Exif.load drops this prefix; WebP writers differ on keeping it.
  base = tf.where(tf.equal(graph_bytes.read_text(exif, 0, 6), _EXIF_HEADER),
                  6, 0)
  base = tf.cast(base, tf.int64)
  order = graph_bytes.read_text(exif, base, 2)
  little = tf.equal(order, b'II')
  valid = (little | tf.equal(order, b'MM')) & tf.equal(
      graph_bytes.read_uint(exif, base + 2, 2, little), 42)
  ifd = base + graph_bytes.read_uint(exif, base + 4, 4, little)
  count = tf.minimum(graph_bytes.read_uint(exif, ifd, 2, little),
                     _MAX_IFD_ENTRIES)
  entries = tf.reshape(graph_bytes.read_bytes(exif, ifd + 2, 12 * count),
                       [-1, 12])
  tags = graph_bytes.to_uint(entries[:, 0:2], little)
  types = graph_bytes.to_uint(entries[:, 2:4], little)
  counts = graph_bytes.to_uint(entries[:, 4:8], little)
  value = tf.zeros_like(tags)
  for kind, size in _BYTES_OF_TYPE.items():
    number = graph_bytes.to_uint(entries[:, 8:8 + size], little)
    value = tf.where(tf.equal(types, kind), number, value)
  value = tf.where(tf.equal(counts, 1), value, tf.zeros_like(value))
  match = tf.equal(tags, _ORIENTATION_TAG)
  # Padded with a non-match, as argmax fails on an IFD without entries.
  first = tf.argmax(tf.pad(tf.cast(match, tf.int32), [[0, 1]]),
                    output_type=tf.int32)
  present = valid & tf.reduce_any(match)
  value = tf.gather(tf.pad(value, [[0, 1]]), first)
  return present, tf.where(present, value, tf.zeros_like(value))


def _xmp_orientation(xmp):
  """(present, value): the first tiff:Orientation digit in an XMP packet."""
  pattern = r'tiff:Orientation(?:="|>)([0-9])'
  present = tf.strings.regex_full_match(xmp, f'(?s).*{pattern}.*')
  digit = tf.strings.regex_replace(xmp, f'(?s)^.*?{pattern}.*$', r'\1')
  digit = tf.where(present, digit, '0')
  return present, tf.strings.to_number(digit, tf.int64)


def _orientation(data, exif, xmp):
  """The orientation Pillow uses: EXIF's tag, else XMP's, else 1."""
  exif_present, exif_value = _exif_orientation(
      graph_bytes.read_text(data, exif[0], tf.maximum(exif[1], 0)))
  xmp_present, xmp_value = _xmp_orientation(
      graph_bytes.read_text(data, xmp[0], tf.maximum(xmp[1], 0)))
  exif_present &= exif[1] >= 0
  xmp_present &= xmp[1] >= 0
  value = tf.where(exif_present, exif_value,
                   tf.where(xmp_present, xmp_value, tf.ones_like(xmp_value)))
  return tf.cast(value, tf.int32)


def jpeg_orientation(data):
  """int32 scalar: the EXIF orientation of a JPEG file (string), 1 if none."""
  return _orientation(data, *_walk(data, 2, _jpeg_step(data),
                                   _MAX_JPEG_SEGMENTS))


def png_orientation(data):
  """int32 scalar: the EXIF orientation of a PNG file (string), 1 if none."""
  return _orientation(data, *_walk(data, 8, _png_step(data), _MAX_PNG_CHUNKS))


def webp_orientation(data):
  """int32 scalar: the EXIF orientation of a WebP file (string), 1 if none."""
  return _orientation(data, *_walk(data, 12, _webp_step(data),
                                   _MAX_WEBP_CHUNKS))
