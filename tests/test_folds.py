"""Tests of bench/folds.py: cross-validation folds from the stable hash."""

import sys

import pytest

from bench import folds
from bottleneck.data import images


def photo(key, label=0, digest=None):
  return images.Photo(f'/photos/{label}/{key}', key, label, digest or key)


PHOTOS = [photo(f'img_{i:04d}.jpg', label=i % 3) for i in range(1000)]


def test_the_fold_is_the_band_of_retrain_py_hash():
  fold, _ = folds.assign(PHOTOS, folds=5, validation_percentage=10)
  for p, f in zip(PHOTOS, fold):
    assert f == int(images.split_bucket(p.key) // 20), p.key
  assert sorted(set(fold)) == [0, 1, 2, 3, 4]
  assert all(150 <= fold.count(k) <= 250 for k in range(5))  # About 200.


def test_a_photo_keeps_its_fold_and_place_when_photos_are_added():
  before = folds.assign(PHOTOS[:500], folds=5, validation_percentage=10)
  after = folds.assign(PHOTOS, folds=5, validation_percentage=10)
  assert [r[:500] for r in after] == [list(r) for r in before]


def test_validation_is_a_share_of_every_band():
  fold, validates = folds.assign(PHOTOS, folds=5, validation_percentage=10)
  for k in range(5):
    members = [v for f, v in zip(fold, validates) if f == k]
    assert 0.04 <= sum(members) / len(members) <= 0.16, k
  split = folds.split(fold, validates, 2)
  assert sorted(sum(split.values(), [])) == list(range(len(PHOTOS)))
  assert {fold[i] for i in split['testing']} == {2}
  assert 2 not in {fold[i] for i in split['training'] + split['validation']}
  assert all(validates[i] for i in split['validation'])


def test_nohash_keys_and_byte_identical_copies_stay_together():
  group = [photo(f'bob_nohash_{i}.jpg') for i in range(5)]
  copies = [photo('x.jpg', 0, 'same'), photo('y.jpg', 1, 'same'),
            photo('z.jpg', 2, 'same')]
  fold, validates = folds.assign(group + copies + PHOTOS, folds=5,
                                 validation_percentage=50)
  assert len(set(zip(fold[:5], validates[:5]))) == 1
  assert len(set(zip(fold[5:8], validates[5:8]))) == 1
  lowest = min(images.split_bucket(k) for k in ('x.jpg', 'y.jpg', 'z.jpg'))
  assert fold[5] == int(lowest // 20)


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
