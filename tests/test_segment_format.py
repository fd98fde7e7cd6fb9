"""Tests of the segment format: sorted digests (opening sorts nothing), float16."""

import glob
import hashlib
import sys
import types

import h5py
import numpy as np
import pytest

from bottleneck.features import digest_index
from bottleneck.features import runtimes
from bottleneck.features import segments
from bottleneck.features import store

DIM = 4


def backbone():
  return types.SimpleNamespace(
      name='tiny', identity='7' * 64, image_size=(8, 8), feature_dim=DIM,
      preprocessing='none', vector_dtype='float32', groups=())


def sha(i):
  return hashlib.sha256(str(i).encode()).hexdigest()


def vectors(ids):
  return np.array([[i, -i, i / 8, 1] for i in ids], np.float32)


def test_find_agrees_with_a_set_also_for_shared_first_bytes():
  rng = np.random.default_rng(0)
  # Real digests, and made-up ones that share their first 8 bytes (and sort
  # on a byte >= 0x80, where a signed comparison would go wrong).
  held = [sha(i) for i in range(300)] + [
      'ab' * 8 + f'{b:02x}' + f'{i:046x}' for i in range(40) for b in (
          0x01, 0x7f, 0x80, 0xff)]
  held = [held[i] for i in rng.permutation(len(held))]
  index = digest_index.SortedDigests(digest_index.from_hex(held))
  asked = held[::3] + [sha(-i) for i in range(1, 50)] + [
      'ab' * 8 + '90' + f'{i:046x}' for i in range(10)] + ['f' * 64, '0' * 64]
  keys = digest_index.from_hex(asked)
  key_prefixes = digest_index.prefixes(keys)
  rows = index.find(keys, key_prefixes)
  # The bucketed search is numpy's searchsorted, faster.
  np.testing.assert_array_equal(
      index._search(key_prefixes),  # pylint: disable=protected-access
      np.searchsorted(digest_index.prefixes(index.keys), key_prefixes))
  row_of = {d: r for r, d in enumerate(held)}
  for digest, row in zip(asked, rows):
    assert row == row_of.get(digest, -1)
  assert np.all(index.keys[1:] > index.keys[:-1])


def open_store(tmp_path, **kwargs):
  return store.VectorStore(str(tmp_path / 'v.h5'), backbone(), **kwargs)


def test_opening_sorts_nothing(tmp_path, monkeypatch):
  s = open_store(tmp_path)
  for run in range(3):
    ids = range(50 * run, 50 * run + 50)
    s.append([sha(i) for i in ids], vectors(ids))
    s.commit()
  s.close()
  for path in glob.glob(str(tmp_path / 'v.seg-*.h5')):
    with h5py.File(path, 'r') as f:
      assert f.attrs['format'] == 3
      keys = f['digests'][:].view('S32')[f['order'][:], 0]
      assert np.all(keys[1:] > keys[:-1])

  def no_sorting(*args, **kwargs):
    raise AssertionError('sorted when opening')
  monkeypatch.setattr(digest_index, 'sort_order', no_sorting)
  monkeypatch.setattr(np, 'argsort', no_sorting)
  s = open_store(tmp_path)
  assert len(s) == 150 and s.missing([sha(i) for i in range(140, 160)]) == [
      sha(i) for i in range(150, 160)]
  wanted = [149, 0, 77, 3]
  np.testing.assert_array_equal(s.read([sha(i) for i in wanted]),
                                vectors(wanted))


def write_format_2(path, ids):
  """A segment as the store wrote it before format 3: rows unsorted."""
  b = backbone()
  with h5py.File(path, 'w') as f:
    f.attrs.update(format=2, backbone=b.name, identity=b.identity,
                   image_size=list(b.image_size), feature_dim=DIM,
                   preprocessing=b.preprocessing,
                   merged=np.zeros(0, np.int64))
    f.create_dataset('digests', data=np.array([sha(i) for i in ids], 'S64'),
                     fletcher32=True, chunks=(len(ids),))
    f.create_dataset('vectors', data=vectors(ids), fletcher32=True,
                     chunks=(len(ids), DIM))


def test_old_unsorted_segments_are_read_and_merged_into_a_sorted_one(
    tmp_path):
  write_format_2(tmp_path / 'v.h5', [5, 1, 4, 0, 3, 2])  # The single file.
  write_format_2(tmp_path / 'v.seg-1.h5', [9, 7, 6, 8])
  s = open_store(tmp_path, merge_factor=2)
  assert s.segment_rows == {0: 6, 1: 4}
  order = [8, 0, 5, 6, 2]
  np.testing.assert_array_equal(s.read([sha(i) for i in order]),
                                vectors(order))
  s.append([sha(i) for i in (10, 11, 12)], vectors([10, 11, 12]))
  s.commit()  # 6 and 4 rows share a level (2): merged into segment 3.
  assert s.segment_rows == {2: 3, 3: 10}
  s.close()
  assert not (tmp_path / 'v.h5').exists()
  with h5py.File(tmp_path / 'v.seg-3.h5', 'r') as f:
    assert f.attrs['format'] == 3 and len(f['order']) == 10
  s = open_store(tmp_path, merge_factor=2)
  assert len(s) == 13
  np.testing.assert_array_equal(s.read([sha(i) for i in range(13)]),
                                vectors(range(13)))


def test_a_segment_whose_order_does_not_sort_it_is_set_aside(tmp_path,
                                                             caplog):
  s = open_store(tmp_path)
  s.append([sha(i) for i in range(5)], vectors(range(5)))
  s.commit()
  s.close()
  [path] = glob.glob(str(tmp_path / 'v.seg-*.h5'))
  with h5py.File(path, 'r+') as f:  # Checksummed anew: only the order lies.
    f['order'][...] = f['order'][:][::-1]
  s = open_store(tmp_path)
  assert len(s) == 0 and 'not in the order it records' in caplog.text
  assert glob.glob(path + '.damaged-*')


def test_write_refuses_a_digest_twice(tmp_path):
  digests = digest_index.from_hex([sha(1), sha(2), sha(1)])
  with pytest.raises(AssertionError, match='twice'):
    segments.write(str(tmp_path / 'v.seg-1.h5'), backbone(), digests,
                   [vectors([1, 2, 1])])
  assert not glob.glob(str(tmp_path / '*'))


def test_vectors_are_float16_on_disk_and_float32_when_read(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, DIM)).astype(np.float32) * [1, 100, 1e-3, 3e4]
  s = open_store(tmp_path)
  s.append([sha(i) for i in range(6)], x)
  s.commit()
  with h5py.File(tmp_path / 'v.seg-1.h5', 'r') as f:
    assert f['vectors'].dtype == np.float16
  got = open_store(tmp_path).read([sha(i) for i in range(6)])
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, x.astype(np.float16))
  # Rounded by at most 2**-11 of each value (tiny ones: float16's subnormals).
  np.testing.assert_allclose(got, x, rtol=runtimes.STORE_ROUNDING, atol=6e-8)
  assert runtimes.relative_difference(x, got) <= runtimes.STORE_ROUNDING


@pytest.mark.parametrize('odd', [
    [1.0, 70000.0, -3.0, 0.5],  # Beyond +-65504: float16 would make it inf.
    [2e-10, 0.0, -1e-12, 5e-9],  # An untrained backbone's: float16 makes 0s.
])
def test_vectors_float16_cannot_hold_keep_their_segment_float32(
    tmp_path, caplog, odd):
  s = open_store(tmp_path, merge_factor=2)
  s.append([sha(0)], vectors([0]))
  s.commit()
  odd = np.array([odd], np.float32)
  s.append([sha(1)], odd)
  s.commit()  # Its own segment (level 0 with the first), then their merge.
  assert 'float16 cannot keep within 2**-11' in caplog.text
  assert 'keeps its vectors as float32' in caplog.text
  [path] = glob.glob(str(tmp_path / 'v.seg-*.h5'))
  with h5py.File(path, 'r') as f:
    assert f['vectors'].dtype == np.float32 and len(f['vectors']) == 2
  np.testing.assert_array_equal(open_store(tmp_path).read([sha(1), sha(0)]),
                                np.concatenate([odd, vectors([0])]))
  assert not glob.glob(str(tmp_path / '*.tmp*'))


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
