"""Tests of atomic publication: files and the model folder."""

import os
import sys

import pytest

from bottleneck import publish


def make_dir(path, text):
  os.makedirs(path)
  (path / 'saved_model.pb').write_text(text)
  return path


def test_a_folder_is_replaced_by_swapping_a_link(tmp_path):
  final = tmp_path / 'model'
  for i in range(4):
    publish.replace_dir(str(make_dir(tmp_path / f'new{i}', f'v{i}')),
                        str(final))
    assert os.path.islink(final)
    assert (final / 'saved_model.pb').read_text() == f'v{i}'
  # The published version and the one before it are kept, no more.
  versions = sorted(os.listdir(publish.versions_dir(str(final))))
  assert len(versions) == 2
  assert sorted(os.listdir(tmp_path)) == ['.model.versions', 'model']


def test_an_earlier_real_folder_is_moved_aside_once(tmp_path):
  final = make_dir(tmp_path / 'model', 'old')
  publish.replace_dir(str(make_dir(tmp_path / 'new', 'new')), str(final))
  assert os.path.islink(final)
  assert (final / 'saved_model.pb').read_text() == 'new'


def test_what_a_killed_run_left_is_removed(tmp_path):
  final = tmp_path / 'model'
  publish.replace_dir(str(make_dir(tmp_path / 'new', 'v')), str(final))
  staging = publish.staging_dir(str(final))
  os.symlink('nowhere', tmp_path / f'.model.link-{os.getpid() + 1}')
  os.makedirs(os.path.join(publish.versions_dir(str(final)), 'half'))
  os.makedirs(os.path.join(publish.versions_dir(str(final)), 'older'))
  publish.remove_stale(str(final))
  assert not os.path.exists(staging)
  assert sorted(os.listdir(tmp_path)) == ['.model.versions', 'model']
  assert len(os.listdir(publish.versions_dir(str(final)))) == 2
  assert (final / 'saved_model.pb').read_text() == 'v'


def test_files_are_staged_then_replaced(tmp_path):
  target = tmp_path / 'labels.txt'
  target.write_text('old\n')
  staged = [publish.stage_file(str(target), b'new\n')]
  assert target.read_text() == 'old\n'  # Nothing visible before replacing.
  publish.replace_files(staged)
  assert target.read_text() == 'new\n'
  publish.stage_file(str(target), b'left by a killed run')
  (tmp_path / '.labels.txt.user-file').write_text('keep')
  publish.remove_stale_files(str(target))
  assert sorted(os.listdir(tmp_path)) == ['.labels.txt.user-file',
                                          'labels.txt']


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
