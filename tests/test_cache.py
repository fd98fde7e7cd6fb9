"""Tests of the bottleneck cache: keys, reuse, recomputation, separation."""

import os
import shutil
import sys

import conftest
import h5py
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from bottleneck.features import backbones
from bottleneck.features import cache
from bottleneck.features import segments
from bottleneck.data import images


def cache_folder(root, backbone, bottleneck_dir):
  _, photos = images.find_photos(str(root))
  photos, _ = images.digest_photos(photos)
  return cache.cache_bottlenecks(photos, backbone, str(bottleneck_dir),
                                 batch_size=4)


def test_reuse_edit_rename_delete(tmp_path, hub_module):
  backbone = backbones.load_backbone(hub_module)
  written = conftest.write_photos(tmp_path / 'photos', per_class=5)
  first = cache_folder(tmp_path / 'photos', backbone, tmp_path / 'bn')
  assert (first.reused, first.computed) == (0, 15)
  assert first.vectors.shape == (15, 3) and first.vectors.dtype == np.float32
  again = cache_folder(tmp_path / 'photos', backbone, tmp_path / 'bn')
  assert (again.reused, again.computed) == (15, 0)
  np.testing.assert_array_equal(first.vectors, again.vectors)

  Image.new('RGB', (20, 20), (0, 0, 0)).save(written['red'][0])  # Edited.
  os.rename(written['red'][1], written['red'][1] + '.moved.jpg')  # Renamed.
  os.remove(written['blue'][0])  # Deleted.
  later = cache_folder(tmp_path / 'photos', backbone, tmp_path / 'bn')
  assert (later.reused, later.computed) == (13, 1)
  assert len(later.photos) == 14
  edited = [p.path for p in later.photos].index(written['red'][0])
  np.testing.assert_allclose(later.vectors[edited], 0, atol=1e-6)


def test_byte_identical_photos_are_computed_once(tmp_path, hub_module):
  backbone = backbones.load_backbone(hub_module)
  written = conftest.write_photos(tmp_path / 'photos', per_class=3)
  shutil.copy(written['red'][0], tmp_path / 'photos' / 'green' / 'copy.jpg')
  result = cache_folder(tmp_path / 'photos', backbone, tmp_path / 'bn')
  assert (result.reused, result.computed, len(result.photos)) == (0, 9, 10)
  assert result.duplicates == 1


def test_counts_are_of_distinct_contents_with_the_duplicates_apart(
    tmp_path, hub_module, caplog):
  backbone = backbones.load_backbone(hub_module)
  written = conftest.write_photos(tmp_path / 'photos', per_class=5)
  cache_folder(tmp_path / 'photos', backbone, tmp_path / 'bn')
  photos = tmp_path / 'photos'
  shutil.copy(written['red'][0], photos / 'green' / 'copy_of_cached.jpg')
  new = conftest.write_photos(tmp_path / 'new', {'n': (90, 90, 90)},
                              per_class=1, seed=7)['n'][0]
  shutil.copy(new, photos / 'blue' / 'new.jpg')
  shutil.copy(new, photos / 'red' / 'copy_of_new.jpg')
  (photos / 'red' / 'zero.jpg').write_bytes(b'')
  (photos / 'blue' / 'zero.jpg').write_bytes(b'')
  caplog.clear()
  later = cache_folder(photos, backbone, tmp_path / 'bn')
  # 20 photos: 15 cached, 1 new, 1 undecodable content, and 3 copies.
  assert (later.reused, later.computed) == (15, 1)
  assert (later.undecodable, later.duplicates) == (1, 3)
  assert later.counts == dict(photos=20, distinct=17, reused=15, computed=1,
                              could_not_decode=1, duplicates=3)
  assert len(later.photos) == 18 and len(later.skipped) == 2
  assert ('Bottlenecks: 20 photos (17 distinct): reused 15, computed 1, could '
          "not decode 1; 3 duplicate(s) of another photo's bytes."
          in caplog.text)


def test_backbones_never_share_vectors(tmp_path):
  conftest.write_photos(tmp_path / 'photos', per_class=3)
  conftest.save_feature_module(tmp_path / 'max', reduce=tf.reduce_max)
  first = backbones.load_backbone(str(tmp_path / 'max'), image_size=32)
  second = backbones.load_backbone(str(tmp_path / 'max'), image_size=16)
  cache_folder(tmp_path / 'photos', first, tmp_path / 'bn')
  other = cache_folder(tmp_path / 'photos', second, tmp_path / 'bn')
  assert (other.reused, other.computed) == (0, 9)
  # One segment each (a first run writes its vectors as one segment), and
  # nothing else: no journal or temporary file is left behind.
  first_files, second_files = (
      list(segments.segment_paths(cache.cache_path(str(tmp_path / 'bn'),
                                                   backbone)).values())
      for backbone in (first, second))
  assert len(first_files) == len(second_files) == 1
  assert sorted(os.listdir(tmp_path / 'bn')) == sorted(
      os.path.basename(p) for p in first_files + second_files)
  with h5py.File(second_files[0], 'r') as f:
    assert f.attrs['identity'] == second.identity
    assert list(f.attrs['image_size']) == [16, 16]
    assert f['vectors'].shape == (9, 3) and f['digests'].shape == (9, 32)


def test_undecodable_photos_are_skipped_with_a_reason(tmp_path, hub_module):
  backbone = backbones.load_backbone(hub_module)
  conftest.write_photos(tmp_path / 'photos', per_class=3)
  (tmp_path / 'photos' / 'red' / 'zero.jpg').write_bytes(b'')
  result = cache_folder(tmp_path / 'photos', backbone, tmp_path / 'bn')
  assert len(result.photos) == 9
  assert [(os.path.basename(p), r) for p, r in result.skipped] == [
      ('zero.jpg', 'empty file (0 bytes)')]


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
