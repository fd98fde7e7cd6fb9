"""A segment's digests in ascending order, found by binary search.

A segment of format 3 records `order`, its rows in ascending digest order
(`segments`), so opening the store sorts nothing: each segment's index is its
digests gathered by that order, O(rows) and no O(rows log rows) sort of byte
strings. Older segments (format 2, and the single-file caches read as
segment 0) have no order: theirs is sorted in memory once, when opened.

Finding q digests costs one binary search per digest in each segment, on the
digests' first 8 bytes as one uint64 (numpy searches integers about twice as
fast as 32-byte strings); the whole 32 bytes are compared after, and digests
whose first 8 bytes are shared (never two SHA-256 digests in practice, but a
test's made-up ones) are searched again on the 32 bytes.
"""

import binascii

import numpy as np


def from_hex(digests):
  """|S32 [n] array of the bytes of a list of n hex digest strings."""
  if not len(digests):  # pylint: disable=g-explicit-length-test
    return np.zeros(0, 'S32')
  return np.frombuffer(bytes.fromhex(''.join(digests)), 'S32')


def from_hex_array(hexes):
  """|S32 [n] of an |S64 [n] array of hex digests (as a segment keeps them)."""
  return np.frombuffer(binascii.unhexlify(
      np.ascontiguousarray(hexes).tobytes()), 'S32')


def prefixes(keys):
  """uint64 [n]: the first 8 bytes of each of |S32 [n] keys, big-endian, so
  that their order is the keys' order."""
  words = np.ascontiguousarray(keys).view('>u8')  # [4 n], not copied.
  return words[::4].astype(np.uint64)


def sort_order(digests):
  """int64 [n]: the rows of |S32 [n] digests in ascending order (stable)."""
  return np.argsort(digests, kind='stable').astype(np.int64)


class SortedDigests:
  """One segment's digests, ascending, and the row of each.

  Attributes:
    keys: |S32 [n] strictly ascending digests.
    rows: int64 [n], the segment's row of each key.
  """

  def __init__(self, digests, order=None):
    """digests: |S32 [rows] in the segment's row order; order: int [rows], the
    rows in ascending digest order (a format-3 segment's `order`), or None to
    sort them here (older segments; the first of equal digests is kept).

    Raises:
      ValueError: `order` does not sort the digests (or repeats one).
    """
    if order is None:
      order = sort_order(digests)
      keys = digests[order]
      first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else order == 0
      keys, order = keys[first], order[first]
    else:
      order = np.asarray(order, np.int64)
      if len(order) != len(digests) or (len(order) and (
          order.min() < 0 or order.max() >= len(digests))):
        raise ValueError(f'its order of {len(order)} rows does not fit its '
                         f'{len(digests)} digests')
      keys = digests[order]
      if not np.all(keys[1:] > keys[:-1]):
        raise ValueError('its digests are not in the order it records')
    self.keys, self.rows = keys, order
    self._prefixes = prefixes(keys)

  def __len__(self):
    return len(self.keys)

  def find(self, keys, key_prefixes):
    """Positions in `self.keys` of |S32 [q] keys, -1 for those not held.

    Args:
      keys: |S32 [q].
      key_prefixes: uint64 [q], `prefixes(keys)`.

    Returns:
      int64 [q].
    """
    n = len(self.keys)
    if not n:
      return np.full(len(keys), -1, np.int64)
    at = np.searchsorted(self._prefixes, key_prefixes)
    inside = np.minimum(at, n - 1)
    hit = (at < n) & (self.keys[inside] == keys)
    shared = ~hit & (at < n) & (self._prefixes[inside] == key_prefixes)
    if shared.any():  # Same first 8 bytes: search those on all 32.
      again = np.searchsorted(self.keys, keys[shared])
      ok = again < n
      ok[ok] = self.keys[again[ok]] == keys[shared][ok]
      at[shared] = again
      hit[shared] = ok
    return np.where(hit, at, -1)
