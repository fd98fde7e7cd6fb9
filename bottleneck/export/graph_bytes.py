"""Reading a file's bytes with TensorFlow ops, for the in-graph decoder.

The SavedModel's serving_default reads headers, EXIF blocks and GIF colour
tables from the file it is given (`graph_decode`, `graph_exif`, `graph_gif`).
Every read here is safe past the end of the file: it gives '' or zeros, and
the caller's checks decide what a short file means.
"""

import tensorflow as tf

# One single-byte string per byte value, to write a byte back into a file.
_BYTE_STRINGS = [bytes([value]) for value in range(256)]


def read_text(data, pos, n):
  """string: up to n bytes of data (a string scalar) from pos, '' past its
  end."""
  size = tf.cast(tf.strings.length(data), tf.int64)
  pos = tf.clip_by_value(tf.cast(pos, tf.int64), 0, size)
  return tf.strings.substr(data, pos, tf.cast(n, tf.int64))


def read_bytes(data, pos, n):
  """int64 [n]: the n bytes of data from pos, 0 past its end."""
  raw = tf.io.decode_raw(read_text(data, pos, n), tf.uint8)
  raw = tf.cast(raw, tf.int64)
  raw = tf.pad(raw, [[0, tf.cast(n, tf.int64) - tf.size(raw, tf.int64)]])
  return tf.reshape(raw, [n]) if isinstance(n, int) else raw


def to_uint(digits, little):
  """int64 [...]: unsigned integers from their bytes, int64 [..., n] with n
  known when traced; little (bool) says little-endian."""
  n = digits.shape[-1]
  big = [256 ** (n - 1 - i) for i in range(n)]
  weights = tf.where(little, tf.constant(big[::-1], tf.int64),
                     tf.constant(big, tf.int64))
  return tf.reduce_sum(digits * weights, axis=-1)


def read_uint(data, pos, n, little):
  """int64: the unsigned n-byte integer (n a Python int) at pos."""
  return to_uint(read_bytes(data, pos, n), little)


def replace(data, pos, new):
  """data with the bytes from pos on overwritten by new (a string)."""
  size = tf.cast(tf.strings.length(data), tf.int64)
  end = tf.cast(pos, tf.int64) + tf.cast(tf.strings.length(new), tf.int64)
  return tf.strings.join([read_text(data, 0, pos), new,
                          read_text(data, end, size - end)])


def byte_string(value):
  """string of one byte, value (an integer scalar in [0, 255])."""
  return tf.gather(tf.constant(_BYTE_STRINGS), tf.cast(value, tf.int32))
