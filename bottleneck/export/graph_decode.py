"""Image file bytes -> the cache stage's pixels, with TensorFlow ops.

The SavedModel's serving_default takes encoded files. Its answers are
label_image's only if its pixels are those that `bottleneck.data.decode`
(Pillow) gives, from which the training vectors were computed. This module
takes the same steps, in the same order, inside the graph:

  1. Decode. JPEGs at the DCT scale that Pillow's `draft` picks for the output
     size (1/8, 1/4, 1/2 or 1/1: the largest s <= min(width, height) //
     max(size)), with libjpeg's accurate integer DCT as Pillow uses it
     (TensorFlow's default is the fast one, up to 20 levels apart). PNG, BMP
     and still WebP with TensorFlow's decoders; GIF's first frame with
     transparent pixels white (`graph_gif`).
  2. Turn upright by the EXIF orientation (`graph_exif`).
  3. Composite alpha over white with Pillow's integer arithmetic.
  4. Resize as Pillow's BILINEAR does: a triangle filter widened by the
     shrink factor (antialiased), 22-bit fixed-point weights, two passes in
     the order Pillow 13 picks, each rounded to uint8.

On JPEG, PNG, still WebP, GIF and BMP files this gives Pillow's bytes exactly
(tests/test_graph_decode.py), except: CMYK JPEGs (TensorFlow converts CMYK to
RGB its own way, +-1 level); JPEGs that Pillow opens as MPO (multi-picture, as
from 3D cameras), which the cache stage decodes at full scale; and GIFs whose
first frame does not cover the whole screen.

Refused with an InvalidArgument error that says to decode the file client-side
and call serving_images: other formats, animated WebP (TensorFlow 2.21's WebP
decoder corrupts memory on some), and BMPs other than uncompressed 24 or 32
bits per pixel (which TensorFlow's BMP decoder misreads).
"""

import tensorflow as tf

from bottleneck.export import graph_bytes
from bottleneck.export import graph_exif
from bottleneck.export import graph_gif

_JPEG, _PNG, _GIF, _BMP, _WEBP, _UNKNOWN = range(6)
# Pillow's resampling keeps weights in fixed point with this many bits
# (Resample.c: 32 bits less 8 for the pixel and 2 for overflow).
_PRECISION_BITS = 22
_CLIENT_SIDE = ('Decode it client-side (as label_image.py does) and call the '
                'serving_images signature with float32 pixels in [0, 1].')


def decode_images(image_bytes, size):
  """Decodes image files as the cache stage does, for the backbone.

  Args:
    image_bytes: string [batch], JPEG, PNG, GIF, BMP or still WebP files.
    size: (height, width) of the output, Python ints.

  Returns:
    float32 [batch, height, width, 3] in [0, 1]: the cache stage's uint8 pixels
    divided by 255.

  Raises:
    tf.errors.InvalidArgumentError, when run: a file that cannot be decoded.
  """
  pixels = tf.map_fn(lambda data: decode_image(data, size), image_bytes,
                     fn_output_signature=tf.TensorSpec([*size, 3], tf.uint8))
  return tf.cast(pixels, tf.float32) / 255.0


def decode_image(data, size):
  """One file (string scalar) -> uint8 [height, width, 3], as Pillow's."""
  branches = {
      _JPEG: lambda: (_decode_jpeg(data, max(size)),
                      graph_exif.jpeg_orientation(data)),
      _PNG: lambda: (_decode_png(data), graph_exif.png_orientation(data)),
      _GIF: lambda: (graph_gif.first_frame(data), tf.constant(1)),
      _BMP: lambda: (_decode_bmp(data), tf.constant(1)),
      _WEBP: lambda: (_decode_webp(data), graph_exif.webp_orientation(data)),
      _UNKNOWN: lambda: (_refuse(
          'serving_default takes JPEG, PNG, GIF, BMP and WebP files; this '
          'one is none of them.', tf.zeros([1, 1, 3], tf.uint8)),
                         tf.constant(1)),
  }
  pixels, orientation = tf.switch_case(_format(data), branches)
  pixels = _upright(pixels, orientation)
  return tf.ensure_shape(_resize(pixels, size), [*size, 3])


def _format(data):
  """int32: which of _JPEG ... _UNKNOWN the file's first bytes say it is."""
  def starts(prefix, at=0):
    return tf.equal(graph_bytes.read_text(data, at, len(prefix)), prefix)

  # Pillow's tests of the first bytes (its plugins' _accept functions).
  tests = ((_JPEG, starts(b'\xff\xd8\xff')),
           (_PNG, starts(b'\x89PNG\r\n\x1a\n')),
           (_GIF, starts(b'GIF87a') | starts(b'GIF89a')),
           (_BMP, starts(b'BM')),
           (_WEBP, starts(b'RIFF') & starts(b'WEBP', 8)))
  kind = tf.constant(_UNKNOWN)
  for value, test in reversed(tests):
    kind = tf.where(test, value, kind)
  return kind


def _refuse(message, placeholder):
  """Fails with InvalidArgument `message` when run; placeholder's type."""
  check = tf.debugging.Assert(tf.constant(False),
                               [f'{message} {_CLIENT_SIDE}'])
  with tf.control_dependencies([check]):
    return tf.identity(placeholder)


def _decode_jpeg(data, target):
  """uint8 [h, w, 3] at the DCT scale Pillow's draft(None, (target, target))
  picks; see the module docstring."""
  height, width = tf.unstack(tf.io.extract_jpeg_shape(data)[:2])
  fits = tf.minimum(width // target, height // target)
  ratios = (1, 2, 4, 8)
  index = tf.add_n([tf.cast(fits >= r, tf.int32) for r in ratios[1:]])
  return tf.switch_case(index, [
      lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r,
                                    dct_method='INTEGER_ACCURATE')
      for r in ratios])


def _decode_png(data):
  """uint8 [h, w, 3]; alpha (colour types 3, 4, 6) over white.

  Pillow ignores the tRNS chunk of grey and RGB PNGs (colour types 0, 2),
  so those are decoded without alpha.
  """
  colour_type = graph_bytes.read_uint(data, 25, 1, False)  # IHDR's 10th byte.
  return tf.cond(
      (colour_type == 3) | (colour_type == 4) | (colour_type == 6),
      lambda: _over_white(tf.io.decode_png(data, channels=4)),
      lambda: tf.io.decode_png(data, channels=3))


def _decode_bmp(data):
  """uint8 [h, w, 3] of an uncompressed 24- or 32-bit BMP (alpha ignored, as
  Pillow does for these); refuses other BMPs."""
  header_size = graph_bytes.read_uint(data, 14, 4, True)
  bits = graph_bytes.read_uint(data, 28, 2, True)
  compression = graph_bytes.read_uint(data, 30, 4, True)
  usable = (header_size >= 40) & ((bits == 24) | (bits == 32)) & (
      compression == 0)
  return tf.cond(usable, lambda: tf.io.decode_bmp(data, channels=3),
                 lambda: _refuse(
                     'serving_default decodes only uncompressed 24- and '
                     '32-bit BMP files; this one is another kind.',
                     tf.zeros([1, 1, 3], tf.uint8)))


def _decode_webp(data):
  """uint8 [h, w, 3] of a still WebP, alpha over white; refuses animations."""
  # An extended (VP8X) file says in its flags byte whether it is animated.
  animated = tf.equal(graph_bytes.read_text(data, 12, 4), b'VP8X') & tf.equal(
      graph_bytes.read_uint(data, 20, 1, False) // 2 % 2, 1)

  def still():
    pixels = tf.io.decode_webp(data)[0]  # [frames, h, w, 3 or 4] -> [h, w, c]
    return tf.cond(tf.shape(pixels)[2] == 4, lambda: _over_white(pixels),
                   lambda: pixels[..., :3])

  return tf.cond(animated, lambda: _refuse(
      'serving_default cannot decode animated WebP files.',
      tf.zeros([1, 1, 3], tf.uint8)), still)


def _over_white(rgba):
  """uint8 [h, w, 4] -> [h, w, 3]: Pillow's alpha_composite over opaque white.

  AlphaComposite.c with a white, opaque destination, in its integer steps.
  """
  src = tf.cast(rgba[..., :3], tf.int32)
  alpha = tf.cast(rgba[..., 3:], tf.int32)
  out_alpha = alpha * 255 + 255 * (255 - alpha)
  coef1 = alpha * 255 * 255 * 128 // out_alpha  # 7 bits of precision.
  coef2 = 255 * 128 - coef1
  blended = src * coef1 + 255 * coef2 + (0x80 << 7)
  # Non-negative, so // 2**n is C's >> n: a rounded division by 255.
  blended = ((blended // 256 + blended) // 256) // 128
  return tf.cast(tf.where(alpha == 0, 255, blended), tf.uint8)


def _upright(pixels, orientation):
  """Pillow's exif_transpose: orientation 2..8 -> its transposition."""
  flip_x = lambda p: tf.reverse(p, [1])
  flip_y = lambda p: tf.reverse(p, [0])
  transpose = lambda p: tf.transpose(p, [1, 0, 2])
  transforms = [
      lambda: pixels,  # 1, and values exif_transpose ignores.
      lambda: flip_x(pixels),  # 2: FLIP_LEFT_RIGHT.
      lambda: flip_x(flip_y(pixels)),  # 3: ROTATE_180.
      lambda: flip_y(pixels),  # 4: FLIP_TOP_BOTTOM.
      lambda: transpose(pixels),  # 5: TRANSPOSE.
      lambda: flip_x(transpose(pixels)),  # 6: ROTATE_270 (clockwise 90).
      lambda: flip_x(flip_y(transpose(pixels))),  # 7: TRANSVERSE.
      lambda: flip_y(transpose(pixels)),  # 8: ROTATE_90 (anticlockwise).
  ]
  valid = (orientation >= 2) & (orientation <= 8)
  return tf.switch_case(tf.where(valid, orientation - 1, 0), transforms)


def _resize(pixels, size):
  """uint8 [h, w, 3] -> [height, width, 3] as Pillow's resize(BILINEAR)."""
  height, width = size
  in_height, in_width = tf.unstack(tf.shape(pixels)[:2])
  # Pillow 13 runs the vertical pass first when the height shrinks by more
  # than twice as many pixels as the width (python-pillow/Pillow#9549); the
  # passes round in between, so the order shows in the pixels. The vertical
  # pass first is the horizontal one first on the transposed image.
  vertical_first = (height < in_height) & (
      in_height - height > 2 * (in_width - width))
  swap = lambda image: tf.cond(vertical_first,
                               lambda: tf.transpose(image, [1, 0, 2]),
                               lambda: image)
  first, second = (tf.where(vertical_first, height, width),
                   tf.where(vertical_first, width, height))
  values = swap(tf.cast(pixels, tf.float64))
  values = _resample(_resample(values, first, axis=1), second, axis=0)
  return tf.cast(swap(values), tf.uint8)


def _resample(values, out_size, *, axis):
  """One pass of Pillow's 8-bit resampling along axis 0 or 1.

  Args:
    values: float64 [h, w, 3] of integers in [0, 255].
    out_size: int32 scalar, the new length of axis.
    axis: 0 (vertical pass) or 1 (horizontal pass).

  Returns:
    float64 of integers in [0, 255], values with axis resized.
  """
  in_size = tf.shape(values)[axis]
  first, weights = _coefficients(in_size, out_size)
  shape = tf.stack([out_size, 1, 1] if axis == 0 else [1, out_size, 1])

  # Tap k of every output pixel at once: Pillow's sum over its window, in
  # float64, which holds these sums of products of integers exactly.
  def add_tap(k, total):
    taps = tf.gather(values, tf.minimum(first + k, in_size - 1), axis=axis)
    return k + 1, total + taps * tf.reshape(weights[:, k], shape)

  zeros = tf.zeros_like(tf.gather(values, first, axis=axis))
  _, total = tf.while_loop(lambda k, _: k < tf.shape(weights)[1], add_tap,
                           (tf.constant(0), zeros))
  # Pillow starts the sum at one half and shifts; then clips to [0, 255].
  one = 2.0 ** _PRECISION_BITS
  return tf.clip_by_value(tf.floor((total + one / 2) / one), 0.0, 255.0)


def _coefficients(in_size, out_size):
  """Pillow's precompute_coeffs and normalize_coeffs_8bpc for BILINEAR.

  The same float64 operations in the same order as Resample.c, so that each
  weight rounds to the same 22-bit integer.

  Args:
    in_size: int32 scalar, the length of the input.
    out_size: int32 scalar, the length of the output.

  Returns:
    first: int32 [out_size], the first input index of each output's window.
    weights: float64 [out_size, window] of integers, the fixed-point weights
      of inputs first, first + 1, ...; 0 past the window's end.
  """
  scale = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
  filter_scale = tf.maximum(scale, 1.0)
  support = 1.0 * filter_scale  # The triangle's half-width is 1.
  window = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
  center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
  # C's (int) cast truncates towards 0, as tf.cast does.
  first = tf.maximum(tf.cast(center - support + 0.5, tf.int32), 0)
  last = tf.minimum(tf.cast(center + support + 0.5, tf.int32), in_size)
  x = tf.range(window)[tf.newaxis, :] + first[:, tf.newaxis]
  # Times the reciprocal, as in C: a division would round differently.
  distance = tf.abs((tf.cast(x, tf.float64) - center[:, tf.newaxis] + 0.5) *
                    (1.0 / filter_scale))
  weights = tf.where((x < last[:, tf.newaxis]) & (distance < 1.0),
                     1.0 - distance, 0.0)
  # Summed left to right as in C, so that the normalized weights round alike.
  total = tf.foldl(lambda acc, column: acc + column, tf.transpose(weights),
                   initializer=tf.zeros(tf.stack([out_size]), tf.float64))
  weights = tf.math.divide_no_nan(weights, total[:, tf.newaxis])
  return first, tf.floor(0.5 + weights * 2.0 ** _PRECISION_BITS)
