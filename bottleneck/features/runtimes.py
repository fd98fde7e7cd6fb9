"""A float32 backbone -> its float32 LiteRT copy, verified, for the cache stage.

TensorFlow is not the fastest way to run a float backbone on most CPUs: LiteRT
(XNNPACK kernels) ran MobileNetV2 two to three times as fast on the machines
of README.md's Performance table. So the cache stage can run a float32 .tflite
copy of the backbone (`probe` decides whether it does). The copy is converted
once per backbone (seconds for MobileNetV2) and kept beside the vectors:

  <bottleneck_dir>/<backbone slug>-<identity[:16]>.float32.tflite   (+ .json)

Its vectors go to the same cache file as TensorFlow's, under the same backbone
identity, so a run with either runtime reuses the other's vectors. That is
only right if they are the same vectors, so the copy is checked when it is
converted, on decoded photos of the run, against the backbone under
TensorFlow: for every photo, the largest difference between the two vectors,
relative to the largest magnitude in TensorFlow's, must be at most TOLERANCE.
The .json beside the copy records that check (the copy's SHA-256, the photos,
the largest difference, the smallest cosine). A copy whose bytes do not match
its record, or that has none, is converted and checked again; a copy that
failed the check is never run (its record keeps the failure, so the next run
does not convert it again; delete the two files to try again).
"""

import hashlib
import json
import os

import numpy as np

from bottleneck import config
from bottleneck import errors
from bottleneck import publish
from bottleneck.features import cache
from bottleneck.features import quantize
from bottleneck.features import tflite

# The largest difference allowed between a vector of the copy and the
# backbone's own, relative to the largest magnitude of the backbone's vector.
# Float32 kernels that add in another order differ by about 1e-6 to 1e-5
# (README.md, Performance, has what bench/run.py measured); the float16 records
# of --fine_tune_blocks differ from float32 by up to 5e-4, and no head can tell
# such differences apart. A copy beyond 1e-3 computes something else (an op
# converted differently) and its vectors must not share the cache.
TOLERANCE = 1e-3
# What the store's float16 segments (config.STORE_VECTOR_DTYPE) add: a vector
# read back differs from the one computed by at most 2**-11 (4.9e-4) of its
# largest value (segments.py keeps float32 where float16 cannot). The copy's
# check above compares vectors as computed; a comparison of
# a vector read from the store allows this much more per side read from it,
# so that TOLERANCE still bounds what the runtimes differ by.
STORE_ROUNDING = 2.0**-11 if config.STORE_VECTOR_DTYPE == 'float16' else 0.0
# Decoded photos the check compares the copy on.
CHECK_PHOTOS = 8


def copy_path(bottleneck_dir, backbone):
  """Where the float32 LiteRT copy of `backbone` is kept."""
  return cache.sibling_path(bottleneck_dir, backbone, '.float32.tflite')


def convertible(backbone):
  """Whether `backbone` can have a float32 copy: float32, a tf.function."""
  return (backbone.precision == 'float32' and
          hasattr(backbone.features, 'get_concrete_function'))


def float_copy(backbone, bottleneck_dir, check_images):
  """The float32 .tflite copy of a backbone, checked; converted once.

  Args:
    backbone: a float32 `backbones.Backbone` (see `convertible`).
    bottleneck_dir: folder of the cache.
    check_images: function of no arguments that returns float32 numpy
      [n, height, width, 3] in [0, 1], n >= 1: decoded photos to check a new
      copy on (called only when the copy must be converted).

  Returns:
    The copy's .tflite bytes, whose vectors are within TOLERANCE of the
    backbone's on the photos of its check.

  Raises:
    errors.ModelError: the backbone cannot be converted, or its copy failed
      the check (now or in an earlier run); the message gives the figures.
  """
  path = copy_path(bottleneck_dir, backbone)
  record, data = _read(path)
  if record is None:
    data = quantize.to_tflite(backbone.features.get_concrete_function(),
                              name=backbone.name)
    images = check_images()
    expected = np.asarray(backbone.features(images), np.float32)
    got = tflite.Runner(data, name=path, threads=1)(images)
    record = {'sha256': hashlib.sha256(data).hexdigest(),
              'photos': len(images), 'tolerance': TOLERANCE,
              'max_relative_difference': relative_difference(expected, got),
              'min_cosine': min_cosine(expected, got)}
    record['accepted'] = record['max_relative_difference'] <= TOLERANCE
    os.makedirs(bottleneck_dir, exist_ok=True)
    publish.write_file(path, data)
    publish.write_file(path + '.json', json.dumps(record, indent=2).encode())
  if not record['accepted']:
    raise errors.ModelError(
        f'The float32 LiteRT copy of {backbone.name} ({path}) differs from '
        f'TensorFlow by up to {record["max_relative_difference"]:.2g} of a '
        f'vector\'s largest value on {record["photos"]} photos, more than the '
        f'cache allows ({TOLERANCE:g}), so it is not used. Run with '
        '--backbone_runtime tensorflow.')
  return data


def tolerance(stored_sides):
  """TOLERANCE for vectors of which `stored_sides` (0-2) were read from the
  store, with its rounding (STORE_ROUNDING) added per side."""
  return TOLERANCE + stored_sides * STORE_ROUNDING


def relative_difference(expected, got):
  """Largest |expected - got| of a row over the row's largest |expected|.

  Args:
    expected, got: float [n, d].

  Returns:
    float: the largest over the n rows (0 where both rows are zero).
  """
  expected = np.asarray(expected, np.float64)
  scale = np.abs(expected).max(axis=1)
  diff = np.abs(expected - np.asarray(got, np.float64)).max(axis=1)
  return float(np.max(diff / np.where(scale > 0, scale, 1.0)))


def min_cosine(expected, got):
  """The smallest cosine between rows of float [n, d] (1.0 for zero rows)."""
  a, b = np.asarray(expected, np.float64), np.asarray(got, np.float64)
  norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
  dots = np.sum(a * b, axis=1)
  return float(np.min(np.where(norms > 0, dots / np.where(norms > 0, norms, 1),
                               1.0)))


def _read(path):
  """(record, bytes) of a kept copy whose bytes match its record, else (None,
  None): missing, unreadable or changed files mean converting again."""
  try:
    with open(path + '.json', 'rb') as f:
      record = json.loads(f.read())
    with open(path, 'rb') as f:
      data = f.read()
  except (OSError, ValueError):
    return None, None
  if (not isinstance(record, dict) or
      record.get('sha256') != hashlib.sha256(data).hexdigest() or
      not isinstance(record.get('accepted'), bool) or
      record.get('tolerance') != TOLERANCE):
    return None, None
  return record, data
