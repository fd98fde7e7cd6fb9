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
  monkeypatch.setattr(store, '_BLOCK_ROWS', 4)
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


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
