"""The Beam cache stage's output: shards of checked records, folded in whole.

Each run of the Beam stage (`beam_stage`) writes into a folder of its own:

  <runs folder>/<run id>/
      vectors-SSSSS-of-NNNNN.shard    records: 32-byte digest + float32[dim]
      failures-SSSSS-of-NNNNN.shard   records: JSON {digest, path, reason}
      COMPLETE                        JSON {shard name: size in bytes}

Every record is framed as the store's journal frames its own: b'BNS1', the
payload's length (uint32), the payload, and a CRC-32 of all that (both
little-endian); a torn or flipped record fails its check. The workers write the
shards (Beam's file sink writes each under a temporary name and renames it when
the pipeline commits); the driver writes COMPLETE only once the pipeline has
finished, listing every shard and its size.

`fold` takes a folder in only if it has COMPLETE, every listed shard has its
size, and every record checks: first all of them are checked, then the vectors
are appended to the store's journal, then the folder is deleted. Any other
folder (a run killed or failed before COMPLETE; a shard torn, missing or
flipped since) is deleted whole with a warning, and its photos are computed
again. So no record of a run is used unless every record of it checks. A run
killed after its vectors reached the journal but before the folder was deleted
folds it again next time; the digests already stored are skipped.

Paths go through tf.io.gfile, so the folder may be on Cloud Storage (gs://).
"""

import json
import struct
import time
import uuid
import zlib

from absl import logging
import numpy as np
import tensorflow as tf

_MAGIC = b'BNS1'
_HEAD = struct.Struct('<4sI')
_CRC = struct.Struct('<I')
COMPLETE = 'COMPLETE'
VECTORS = 'vectors'
FAILURES = 'failures'
SUFFIX = '.shard'
# Vectors appended to the journal at a time (4 KB to 20 KB each).
_APPEND_ROWS = 1024


class BadShard(Exception):
  """A shard that is not as COMPLETE lists it, or has a record that fails."""


def frame(payload):
  """bytes -> the bytes of one record holding them."""
  head = _HEAD.pack(_MAGIC, len(payload)) + payload
  return head + _CRC.pack(zlib.crc32(head))


def vector_payload(digest, vector):
  """(hex SHA-256, float32 [dim]) -> a vectors record's payload."""
  return bytes.fromhex(digest) + np.asarray(vector, '<f4').tobytes()


def failure_payload(digest, path, reason):
  """A failures record's payload: UTF-8 JSON."""
  return json.dumps({'digest': digest, 'path': path, 'reason': reason},
                    ensure_ascii=False).encode('utf-8')


def records(data, name):
  """Yields the payloads of a shard's bytes; raises BadShard if one fails."""
  at = 0
  while at < len(data):
    if len(data) - at < _HEAD.size + _CRC.size:
      raise BadShard(f'{name}: torn record at byte {at}')
    magic, length = _HEAD.unpack_from(data, at)
    end = at + _HEAD.size + length
    if magic != _MAGIC or end + _CRC.size > len(data):
      raise BadShard(f'{name}: torn or foreign record at byte {at}')
    if _CRC.unpack_from(data, end)[0] != zlib.crc32(data[at:end]):
      raise BadShard(f'{name}: record at byte {at} fails its CRC-32')
    yield data[at + _HEAD.size:end]
    at = end + _CRC.size


def new_run(root):
  """Creates and returns a folder for one run's shards under `root`."""
  run_dir = tf.io.gfile.join(
      root, f'{time.strftime("%Y%m%d-%H%M%S")}-{uuid.uuid4().hex[:8]}')
  tf.io.gfile.makedirs(run_dir)
  return run_dir


def mark_complete(run_dir):
  """Writes COMPLETE, listing every shard of `run_dir` and its size; call it
  only after the pipeline finished."""
  sizes = {name: tf.io.gfile.stat(tf.io.gfile.join(run_dir, name)).length
           for name in sorted(tf.io.gfile.listdir(run_dir))
           if name.endswith(SUFFIX)}
  temp = tf.io.gfile.join(run_dir, COMPLETE + '.tmp')
  with tf.io.gfile.GFile(temp, 'wb') as f:
    f.write(json.dumps(sizes, indent=1).encode())
  tf.io.gfile.rename(temp, tf.io.gfile.join(run_dir, COMPLETE), overwrite=True)


def fold(root, vectors, dim):
  """Folds every complete run under `root` into `vectors`; deletes the rest.

  Args:
    root: the folder of the runs' folders (it may not exist).
    vectors: the open `store.VectorStore` (its journal takes the vectors).
    dim: the length of the vectors.

  Returns:
    (count, failures): vectors appended, and {digest: (path, reason)} of the
    photos that the folded runs could not decode.
  """
  count, failures = 0, {}
  if not tf.io.gfile.isdir(root):
    return count, failures
  for name in sorted(tf.io.gfile.listdir(root)):
    run_dir = tf.io.gfile.join(root, name.rstrip('/'))
    try:
      shards = _checked_shards(run_dir, dim)
    except BadShard as e:
      logging.warning('Discarding the shards of the Beam run in %s: %s; its '
                      'photos are computed again.', run_dir, e)
    else:
      for digest, path, reason in _failures(run_dir, shards):
        failures[digest] = (path, reason)
      count += _append(run_dir, shards, vectors, dim)
    tf.io.gfile.rmtree(run_dir)
  return count, failures


def _checked_shards(run_dir, dim):
  """The shard names of a complete run, after checking every record."""
  complete = tf.io.gfile.join(run_dir, COMPLETE)
  if not tf.io.gfile.exists(complete):
    raise BadShard('the run did not finish (no COMPLETE)')
  try:
    with tf.io.gfile.GFile(complete, 'rb') as f:
      sizes = json.loads(f.read())
  except ValueError as e:
    raise BadShard(f'COMPLETE does not parse ({e})') from e
  for name, size in sizes.items():
    path = tf.io.gfile.join(run_dir, name)
    if not tf.io.gfile.exists(path) or tf.io.gfile.stat(path).length != size:
      raise BadShard(f'{name} is missing or not the size COMPLETE lists')
    for payload in records(_read(path), name):
      if name.startswith(VECTORS) and len(payload) != 32 + 4 * dim:
        raise BadShard(f'{name}: a vector of {(len(payload) - 32) // 4} '
                       f'values; the backbone gives {dim}')
  return sorted(sizes)


def _failures(run_dir, shards):
  for name in shards:
    if name.startswith(FAILURES):
      for payload in records(_read(tf.io.gfile.join(run_dir, name)), name):
        item = json.loads(payload)
        yield item['digest'], item['path'], item['reason']


def _append(run_dir, shards, vectors, dim):
  """Appends the vectors of checked shards whose digests `vectors` lacks."""
  count, seen = 0, set()
  digests, rows = [], []

  def flush():
    vectors.append(digests, np.stack(rows))
    digests.clear()
    rows.clear()

  for name in shards:
    if not name.startswith(VECTORS):
      continue
    for payload in records(_read(tf.io.gfile.join(run_dir, name)), name):
      digest = payload[:32].hex()
      if digest in vectors or digest in seen:
        continue
      seen.add(digest)
      digests.append(digest)
      rows.append(np.frombuffer(payload, '<f4', dim, 32))
      count += 1
      if len(digests) == _APPEND_ROWS:
        flush()
  if digests:
    flush()
  return count


def _read(path):
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()
