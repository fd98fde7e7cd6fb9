"""Tests of the crash-safe vector store: journal, segments, compaction, damage."""

import dataclasses
import errno
import glob
import os
import sys

import conftest
import h5py
import numpy as np
import pytest

from bottleneck import errors
from bottleneck.features import backbones
from bottleneck.features import segments
from bottleneck.features import store

DIM = 3


@pytest.fixture
def backbone(hub_module):
  return backbones.load_backbone(hub_module)


def digests(n, start=0):
  # The first ends in a zero byte, which a fixed-width bytes field would drop.
  return [f'{i:062x}00' for i in range(start, start + n)]


def vectors(n, start=0):
  return np.arange(start * DIM, (start + n) * DIM, dtype=np.float32).reshape(
      n, DIM)


def open_store(tmp_path, backbone, **kwargs):
  return store.VectorStore(str(tmp_path / 'v.h5'), backbone, **kwargs)


def segment_files(tmp_path):
  return sorted(glob.glob(str(tmp_path / 'v.seg-*.h5')))


def test_commit_and_read_any_rows_across_blocks(tmp_path, backbone,
                                                monkeypatch):
  monkeypatch.setattr(segments, 'BLOCK_ROWS', 4)
  s = open_store(tmp_path, backbone)
  s.append(digests(6), vectors(6))
  s.commit()
  s.append(digests(5, 6), vectors(5, 6))
  s.commit()
  s.close()
  s = open_store(tmp_path, backbone)
  assert len(s) == 11 and digests(1)[0] in s
  wanted = [9, 0, 4, 4, 10, 3, 8]
  np.testing.assert_array_equal(s.read([digests(11)[i] for i in wanted]),
                                vectors(11)[wanted])
  assert s.read([]).shape == (0, DIM)
  assert not os.path.exists(tmp_path / 'v.journal')


def test_a_run_killed_before_commit_loses_nothing_it_appended(tmp_path,
                                                              backbone):
  s = open_store(tmp_path, backbone)
  s.append(digests(4), vectors(4))
  s.commit()
  s.append(digests(3, 4), vectors(3, 4))
  s.append(digests(2, 7), vectors(2, 7))
  del s  # Killed: no commit, no close.
  s = open_store(tmp_path, backbone)
  assert len(s) == 9
  np.testing.assert_array_equal(s.read(digests(9)), vectors(9))


def test_a_torn_or_damaged_journal_keeps_only_the_good_records(tmp_path,
                                                               backbone,
                                                               caplog):
  s = open_store(tmp_path, backbone)
  s.append(digests(5), vectors(5))
  s.close()
  journal = tmp_path / 'v.journal'
  size = os.path.getsize(journal)
  record = (size - 68) // 5  # After the 68-byte header.
  with open(journal, 'r+b') as f:
    f.truncate(size - 7)  # The last record torn mid-write.
  s = open_store(tmp_path, backbone)
  assert len(s) == 4
  s.append(digests(3, 10), vectors(3, 10))
  s.close()
  with open(journal, 'r+b') as f:  # A flipped byte in the second new vector.
    f.seek(68 + record + 40)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0x10]))
  s = open_store(tmp_path, backbone)
  assert 'damaged record after 1 good ones' in caplog.text
  assert len(s) == 5
  np.testing.assert_array_equal(s.read(digests(4) + digests(1, 10)),
                                np.concatenate([vectors(4), vectors(1, 10)]))
  assert digests(1, 11)[0] not in s  # Never served wrong: computed again.


def damage(path, how):
  if how == 'truncated':
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  elif how == 'flipped vector byte':
    with h5py.File(path, 'r') as f:
      offset = f['vectors'].id.get_chunk_info(0).byte_offset
    with open(path, 'r+b') as f:
      f.seek(offset + 5)
      byte = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([byte[0] ^ 0x01]))
  elif how == 'garbage':
    with open(path, 'wb') as f:
      f.write(b'not an HDF5 file at all')


@pytest.mark.parametrize('how', ['truncated', 'flipped vector byte', 'garbage'])
def test_a_damaged_file_is_set_aside_and_rebuilt(tmp_path, backbone, caplog,
                                                 how):
  s = open_store(tmp_path, backbone)
  s.append(digests(5), vectors(5))
  s.commit()
  s.close()
  [path] = segment_files(tmp_path)
  damage(path, how)
  s = open_store(tmp_path, backbone)
  if how == 'flipped vector byte':  # Found when its vectors are read.
    with pytest.raises(store.DamagedVectors, match='failed its checksums'):
      s.read(digests(5))
  assert 'is damaged' in caplog.text
  assert len(s) == 0  # Nothing from the damaged file is served.
  [aside] = glob.glob(path + '.damaged-*')
  assert os.path.getsize(aside) > 0
  s.append(digests(2), vectors(2))
  s.commit()
  np.testing.assert_array_equal(open_store(tmp_path, backbone).read(
      digests(2)), vectors(2))


def test_another_backbones_file_is_set_aside(tmp_path, backbone):
  other = dataclasses.replace(backbone, identity='f' * 64)
  s = store.VectorStore(str(tmp_path / 'v.h5'), other)
  s.append(digests(2), vectors(2))
  s.commit()
  s.close()
  assert len(open_store(tmp_path, backbone)) == 0
  assert glob.glob(str(tmp_path / 'v.seg-1.h5.damaged-*'))


# What h5py 3.x raises when a system call fails: the errno is in the message
# and in `errno`. (Older h5py left `errno` unset: the last case.)
OPEN_EACCES = PermissionError(
    errno.EACCES, "Unable to synchronously open file (unable to open file: "
    "name = 'v.h5', errno = 13, error message = 'Permission denied', flags = "
    "0, o_flags = 0)")
OPEN_EIO = OSError(
    errno.EIO, "Unable to synchronously open file (file read failed: time = "
    "Mon Jan  1 00:00:00 2024\n, filename = 'v.h5', file descriptor = 3, "
    "errno = 5, error message = 'Input/output error', buf = 0x7ffe, total "
    "read size = 8, bytes this sub-read = 8, offset = 0)")
READ_EIO_NO_ERRNO = OSError(
    "Can't synchronously read data (file read failed: time = Mon Jan  1 "
    "00:00:00 2024\n, filename = 'v.h5', file descriptor = 3, errno = 5, "
    "error message = 'Input/output error', buf = 0x5581, total read size = "
    "4800, bytes this sub-read = 4800, offset = 2048)")


def fail_opening(monkeypatch, path, error):
  """h5py.File raises `error` for `path`, as the system would make it."""
  real = h5py.File

  def fake(name, *args, **kwargs):
    if os.path.abspath(name) == os.path.abspath(path):
      raise error
    return real(name, *args, **kwargs)
  monkeypatch.setattr(h5py, 'File', fake)


def fail_reading(monkeypatch, error):
  """Every read of an h5py dataset raises `error` (a bad sector, say)."""
  def fake(self, *args, **kwargs):
    raise error
  monkeypatch.setattr(h5py.Dataset, '__getitem__', fake)


@pytest.mark.parametrize('inject,error,code', [
    (fail_opening, OPEN_EACCES, 'EACCES'), (fail_opening, OPEN_EIO, 'EIO'),
    (fail_reading, READ_EIO_NO_ERRNO, 'EIO')])
def test_a_file_the_machine_cannot_read_is_left_in_place(
    tmp_path, backbone, monkeypatch, inject, error, code):
  s = open_store(tmp_path, backbone)
  s.append(digests(5), vectors(5))
  s.commit()
  s.close()
  [path] = segment_files(tmp_path)
  before = open(path, 'rb').read()
  with monkeypatch.context() as patch:
    if inject is fail_opening:
      fail_opening(patch, path, error)
    else:
      fail_reading(patch, error)
    with pytest.raises(errors.UsageError,
                       match=f'Cannot read the bottleneck cache .*v.seg-1.h5: '
                       f'.*errno {code}.*left as it is'):
      open_store(tmp_path, backbone)
  assert os.listdir(tmp_path) == ['v.seg-1.h5']
  assert open(path, 'rb').read() == before
  np.testing.assert_array_equal(open_store(tmp_path, backbone).read(
      digests(5)), vectors(5))


def test_a_full_disk_keeps_the_journal_and_says_so(tmp_path, backbone,
                                                   monkeypatch):
  s = open_store(tmp_path, backbone)
  s.append(digests(3), vectors(3))
  real = h5py.File

  def full(name, mode='r', **kwargs):
    if mode == 'w':
      raise OSError(errno.ENOSPC, "Unable to synchronously create file "
                    "(unable to open file: name = 'v.h5.tmp1', errno = 28, "
                    "error message = 'No space left on device')")
    return real(name, mode, **kwargs)
  with monkeypatch.context() as patch:
    patch.setattr(h5py, 'File', full)
    with pytest.raises(errors.UsageError,
                       match='Cannot write the bottleneck cache .*No space '
                       'left on device.*free some space'):
      s.commit()
  # The vectors are still in the journal: the next run folds them in.
  np.testing.assert_array_equal(open_store(tmp_path, backbone).read(
      digests(3)), vectors(3))


@pytest.mark.parametrize('error,code', [(OPEN_EACCES, errno.EACCES),
                                        (OPEN_EIO, errno.EIO)])
def test_retrain_stops_on_a_cache_it_cannot_read_and_keeps_it(
    photo_flags, outputs, monkeypatch, capsys, error, code):
  assert conftest.run_retrain(**photo_flags,
                              how_many_training_steps=10) == 0
  [path] = glob.glob(os.path.join(outputs['bottleneck_dir'], '*.h5'))
  before = open(path, 'rb').read()
  fail_opening(monkeypatch, path, error)
  assert conftest.run_retrain(**photo_flags, force=True,
                              how_many_training_steps=10) == errors.EXIT_USAGE
  err = capsys.readouterr().err
  [line] = err.strip().splitlines()
  assert line.startswith('retrain.py: error: Cannot read the bottleneck cache '
                         f'{path}: {os.strerror(code)}')
  assert open(path, 'rb').read() == before
  assert not glob.glob(path + '.damaged-*')


def test_retrain_sets_a_damaged_cache_aside_and_rebuilds_it(
    photo_flags, outputs, caplog):
  assert conftest.run_retrain(**photo_flags,
                              how_many_training_steps=10) == 0
  [path] = glob.glob(os.path.join(outputs['bottleneck_dir'], '*.h5'))
  damage(path, 'flipped vector byte')
  assert conftest.run_retrain(**photo_flags, force=True,
                              how_many_training_steps=10) == 0
  assert 'is damaged' in caplog.text and 'computed 60' in caplog.text
  assert glob.glob(path + '.damaged-*') and os.path.exists(path)


def test_leftover_temporary_files_are_removed(tmp_path, backbone):
  (tmp_path / 'v.h5.tmp123').write_bytes(b'half written')
  (tmp_path / 'v.seg-7.h5.tmp45').write_bytes(b'half written')
  (tmp_path / 'w.seg-7.h5.tmp45').write_bytes(b'another store\'s')
  open_store(tmp_path, backbone).close()
  assert os.listdir(tmp_path) == ['w.seg-7.h5.tmp45']


def wide(backbone, dim=512):
  return dataclasses.replace(backbone, feature_dim=dim)


def wide_vectors(n, start=0, dim=512):
  return np.random.default_rng(start).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize('cached', [200, 2000])
def test_adding_k_photos_writes_only_a_segment_of_k(tmp_path, backbone,
                                                    cached):
  backbone = wide(backbone)
  s = open_store(tmp_path, backbone)
  s.append(digests(cached), wide_vectors(cached))
  s.commit()
  s.close()
  [old] = segment_files(tmp_path)
  before = os.stat(old)
  s = open_store(tmp_path, backbone)
  s.append(digests(20, cached), wide_vectors(20, cached))
  s.commit()
  # 20 vectors of 2 KB: the journal and the new segment, each a little over
  # 40 KB, whatever the cache held before.
  assert s.bytes_written < 2 * 20 * 512 * 4 + 30_000, s.bytes_written
  assert len(segment_files(tmp_path)) == 2
  after = os.stat(old)
  assert (after.st_ino, after.st_mtime_ns) == (before.st_ino,
                                               before.st_mtime_ns)
  np.testing.assert_array_equal(s.read(digests(3, cached + 17) + digests(2)),
                                np.concatenate([wide_vectors(20, cached)[17:],
                                                wide_vectors(cached)[:2]]
                                               ).astype(np.float16))


def test_compaction_merges_levels_and_keeps_every_vector(tmp_path, backbone):
  s = open_store(tmp_path, backbone, merge_factor=3)
  for run in range(20):  # 20 runs of 2 photos: levels merge in turn.
    s.append(digests(2, 2 * run), vectors(2, 2 * run))
    s.commit()
    rows = s.segment_rows
    levels = [int(np.log(r) / np.log(3) + 1e-9) for r in rows.values()]
    assert max(np.bincount(levels)) < 3, rows
  s.close()
  assert len(segment_files(tmp_path)) == len(rows) < 6
  s = open_store(tmp_path, backbone, merge_factor=3)
  assert len(s) == 40 and sum(s.segment_rows.values()) == 40
  np.testing.assert_array_equal(s.read(digests(40)[::-1]), vectors(40)[::-1])


def test_a_compaction_killed_before_removing_its_inputs(tmp_path, backbone,
                                                        monkeypatch):
  s = open_store(tmp_path, backbone, merge_factor=2)
  s.append(digests(2), vectors(2))
  s.commit()
  real_remove = os.remove

  def killed(path):
    if '.seg-' in path:
      raise KeyboardInterrupt  # Killed after the rename, before a removal.
    real_remove(path)
  monkeypatch.setattr(os, 'remove', killed)
  s.append(digests(2, 2), vectors(2, 2))
  with pytest.raises(KeyboardInterrupt):
    s.commit()
  monkeypatch.setattr(os, 'remove', real_remove)
  assert len(segment_files(tmp_path)) == 3  # Two inputs and their merge.
  s = open_store(tmp_path, backbone, merge_factor=2)
  [merged] = segment_files(tmp_path)
  assert merged.endswith('v.seg-3.h5') and s.segment_rows == {3: 4}
  np.testing.assert_array_equal(s.read(digests(4)), vectors(4))


def test_a_compaction_killed_while_writing_leaves_its_inputs(
    tmp_path, backbone, monkeypatch):
  s = open_store(tmp_path, backbone, merge_factor=2)
  s.append(digests(2), vectors(2))
  s.commit()
  s.append(digests(2, 2), vectors(2, 2))
  real_write = segments.write

  def killed(path, *args, merged=(), **kwargs):
    if merged:  # A kill leaves its half-written file behind.
      (tmp_path / f'{os.path.basename(path)}.tmp99').write_bytes(b'half')
      raise KeyboardInterrupt
    return real_write(path, *args, merged=merged, **kwargs)
  monkeypatch.setattr(segments, 'write', killed)
  with pytest.raises(KeyboardInterrupt):
    s.commit()
  monkeypatch.setattr(segments, 'write', real_write)
  s = open_store(tmp_path, backbone, merge_factor=2)
  np.testing.assert_array_equal(s.read(digests(4)), vectors(4))
  assert s.segment_rows == {1: 2, 2: 2}  # The inputs, as they were.
  s.commit()  # The next run's commit merges them.
  assert s.segment_rows == {3: 4}
  assert [os.path.basename(p) for p in glob.glob(str(tmp_path / '*'))] == [
      'v.seg-3.h5']


def test_a_damaged_segment_costs_only_its_own_vectors(tmp_path, backbone,
                                                      caplog):
  s = open_store(tmp_path, backbone)
  for run in range(3):
    s.append(digests(3, 3 * run), vectors(3, 3 * run))
    s.commit()
  s.close()
  damage(segment_files(tmp_path)[1], 'flipped vector byte')
  damage(segment_files(tmp_path)[2], 'truncated')
  s = open_store(tmp_path, backbone)
  assert 'v.seg-3.h5 is damaged' in caplog.text and len(s) == 6
  with pytest.raises(store.DamagedVectors):
    s.vectors(digests(6), check=True)
  assert 'v.seg-2.h5 is damaged' in caplog.text
  assert s.missing(digests(9)) == digests(6, 3)
  np.testing.assert_array_equal(s.read(digests(3)), vectors(3))
  assert len(glob.glob(str(tmp_path / '*.damaged-*'))) == 2


def test_an_old_single_file_cache_is_read_as_segment_0(tmp_path, backbone):
  b = backbone
  with h5py.File(tmp_path / 'v.h5', 'w') as f:  # As the store wrote it before.
    f.attrs.update(format=2, backbone=b.name, identity=b.identity,
                   image_size=list(b.image_size), feature_dim=b.feature_dim,
                   preprocessing=b.preprocessing)
    f.create_dataset('digests', data=np.array(digests(5), 'S64'),
                     fletcher32=True, chunks=(5,))
    f.create_dataset('vectors', data=vectors(5), fletcher32=True,
                     chunks=(5, DIM))
  s = open_store(tmp_path, backbone, merge_factor=2)
  assert len(s) == 5 and s.segment_rows == {0: 5}
  s.append(digests(1, 5), vectors(1, 5))
  s.commit()
  assert s.segment_rows == {0: 5, 1: 1}  # v.h5 as it was: not rewritten.
  for run in range(6, 10):
    s.append(digests(1, run), vectors(1, run))
    s.commit()
  s.close()
  s = open_store(tmp_path, backbone, merge_factor=2)
  assert 0 not in s.segment_rows and not (tmp_path / 'v.h5').exists()
  np.testing.assert_array_equal(s.read(digests(10)), vectors(10))


def test_lazy_vectors_read_in_blocks(tmp_path, backbone, monkeypatch):
  monkeypatch.setattr(segments, 'BLOCK_ROWS', 3)
  s = open_store(tmp_path, backbone)
  for run in range(3):
    s.append(digests(4, 4 * run), vectors(4, 4 * run))
    s.commit()
  wanted = [11, 0, 5, 7, 2, 9]
  lazy = s.vectors([digests(12)[i] for i in wanted])
  assert lazy.shape == (6, DIM) and len(lazy) == 6
  np.testing.assert_array_equal(np.asarray(lazy), vectors(12)[wanted])
  np.testing.assert_array_equal(np.asarray(lazy[[4, 0]]),
                                vectors(12)[[2, 11]])
  seen = np.zeros(6, int)
  for positions, block in lazy.blocks():
    assert len(block) <= 3
    seen[positions] += 1
    np.testing.assert_array_equal(block, vectors(12)[np.array(wanted)[
        positions]])
  assert (seen == 1).all()


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
