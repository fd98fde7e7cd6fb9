"""A GIF's first frame as the cache stage sees it, with TensorFlow ops.

Part of the in-graph decoder (`graph_decode`). Pillow opens a GIF's first frame
as palette indices and keeps its transparent index; the cache stage then
composites it over white. TensorFlow's decode_gif makes transparent pixels
black and says nothing of which they were. So the file is edited before it is
decoded: the transparent index's colour becomes white and the transparency
flag is cleared, and decode_gif gives Pillow's pixels.

One exception, as in Pillow: a GIF whose colour table is the grey ramp (entry i
is (i, i, i)) opens in Pillow as a greyscale image, whose transparency the
cache stage ignores; there only the flag is cleared.
"""

import tensorflow as tf

from bottleneck.export import graph_bytes

_EXTENSION, _IMAGE, _CONTROL = 0x21, 0x2C, 0xF9
# Blocks and sub-blocks read before the first image; real GIFs have a few.
_MAX_BLOCKS = 4096


def _table_size(flags):
  """Bytes in the colour table that a descriptor's flags byte announces."""
  return tf.where(flags >= 0x80, 3 * 2 ** (flags % 8 + 1), 0)


def first_frame(data):
  """uint8 [h, w, 3]: the first frame of a GIF file (string scalar), with
  transparent pixels as the cache stage gives them."""
  global_table = tf.constant(13, tf.int64)  # After the header and screen.
  global_size = _table_size(graph_bytes.read_uint(data, 10, 1, False))

  # Walks the blocks to the first image descriptor, keeping the last graphic
  # control extension (its flags' offset) on the way, as Pillow does.
  def body(pos, in_extension, control):
    first = graph_bytes.read_uint(data, pos, 1, False)
    label = graph_bytes.read_uint(data, pos + 1, 1, False)
    is_control = ~in_extension & (first == _EXTENSION) & (label == _CONTROL)
    step = tf.where(in_extension, first + 1, tf.constant(2, tf.int64))
    in_extension = tf.where(in_extension, first != 0, first == _EXTENSION)
    return pos + step, in_extension, tf.where(is_control, pos + 3, control)

  def searching(pos, in_extension, _):
    return in_extension | (graph_bytes.read_uint(data, pos, 1, False) ==
                           _EXTENSION)

  image, _, control = tf.while_loop(
      searching, body, (global_table + global_size, tf.constant(False),
                        tf.constant(-1, tf.int64)),
      maximum_iterations=_MAX_BLOCKS)
  local_size = _table_size(graph_bytes.read_uint(data, image + 9, 1, False))
  table, table_size = (tf.where(local_size > 0, image + 10, global_table),
                       tf.where(local_size > 0, local_size, global_size))

  flags = graph_bytes.read_uint(data, control, 1, False)
  index = graph_bytes.read_uint(data, control + 3, 1, False)
  transparent = (control >= 0) & (flags % 2 == 1) & (
      graph_bytes.read_uint(data, image, 1, False) == _IMAGE)

  def opaque():
    grey_ramp = tf.reduce_all(tf.equal(
        tf.reshape(graph_bytes.read_bytes(data, table, table_size), [-1, 3]),
        tf.range(table_size // 3)[:, tf.newaxis]))
    edited = graph_bytes.replace(data, control,
                                 graph_bytes.byte_string(flags - 1))
    return tf.cond(
        grey_ramp | (3 * index >= table_size), lambda: edited,
        lambda: graph_bytes.replace(edited, table + 3 * index,
                                    tf.constant(b'\xff\xff\xff')))

  return tf.io.decode_gif(tf.cond(transparent, opaque, lambda: data))[0]
