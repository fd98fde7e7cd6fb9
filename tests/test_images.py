"""Tests of class discovery, labels and the stable train/validation/test split."""

import dataclasses
import logging
import os
import shutil
import sys

import pytest

from bottleneck import errors
from bottleneck.data import images


def touch(path, data=b'x'):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


def hashed(photos):
  return images.digest_photos(photos)[0]


def test_finds_classes_and_images_sorted_in_any_letter_case(tmp_path):
  for name in ('b.JPG', 'a.jpeg', 'c.Png', 'd.bmp', 'e.GIF', 'f.webp',
               'sub/g.jpg', 'notes.txt', '.hidden.jpg', '._IMG_0001.jpg',
               'Thumbs.db', '.DS_Store'):
    touch(tmp_path / 'Roses' / name)
  touch(tmp_path / 'daisy' / 'x.jpg')
  touch(tmp_path / 'loose.jpg')
  os.makedirs(tmp_path / '.git')
  labels, photos = images.find_photos(str(tmp_path))
  assert labels == ['daisy', 'roses']
  assert [(p.label, p.key) for p in photos] == [
      (0, 'x.jpg'), (1, 'a.jpeg'), (1, 'b.JPG'), (1, 'c.Png'), (1, 'd.bmp'),
      (1, 'e.GIF'), (1, 'f.webp'), (1, 'sub/g.jpg')]
  assert photos[-1].path == os.path.join(str(tmp_path), 'Roses', 'sub', 'g.jpg')


def test_labels_follow_retrain_py():
  assert images.label_for_folder('Sun_Flowers-2') == 'sun flowers 2'
  assert images.label_for_folder('daisy') == 'daisy'


@pytest.mark.parametrize('folders, message', [
    (None, 'not found'),
    (['only'], 'at least two'),
    (['Sun_Flower', 'sun flower'], "both give the label 'sun flower'"),
    (['a', 'empty'], 'at least two'),
])
def test_unusable_folders_raise_clear_errors(tmp_path, folders, message):
  root = tmp_path / 'photos'
  if folders is not None:
    for name in folders:
      os.makedirs(root / name)
      if name != 'empty':
        touch(root / name / 'x.jpg')
  with pytest.raises(errors.DataError, match=message):
    images.find_photos(str(root))


def test_empty_class_folders_are_left_out(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  for name in ('a', 'c'):
    touch(tmp_path / name / 'x.jpg')
  os.makedirs(tmp_path / 'b' / 'sub')
  touch(tmp_path / 'b' / 'notes.txt')
  labels, photos = images.find_photos(str(tmp_path))
  assert labels == ['a', 'c']
  assert [p.label for p in photos] == [0, 1]
  assert 'Leaving out the class folder' in caplog.text


def test_small_classes_are_warned_about(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  for i in range(3):
    touch(tmp_path / 'a' / f'{i}.jpg')
    touch(tmp_path / 'b' / f'{i}.jpg')
  images.find_photos(str(tmp_path))
  assert "Class 'a' has only 3 images" in caplog.text


def make_class(root, name, count, prefix='img'):
  for i in range(count):
    touch(root / name / f'{prefix}_{i}.jpg', f'{name} {prefix} {i}'.encode())


def split_of(splits):
  return {p.key: name for name, members in splits.items() for p in members}


def by_class_and_key(splits):
  return {(p.label, p.key): name
          for name, members in splits.items() for p in members}


# retrain.py's create_image_lists, computed for these names by a separate
# script, not by our code: hash_name = re.sub(r'_nohash_.*$', '', name);
# percentage = (int(sha1(hash_name.encode()).hexdigest(), 16) % 2**27) *
# (100 / (2**27 - 1));
# below 15 (validation) is validation, below 15 + 25 (testing) is testing.
# Unequal percentages, so that mixing up the two held-out sets shows.
# (retrain.py hashed the path as it globbed it, '<image_dir>/<class>/<name>',
# so its own split moved with --image_dir; we hash the path below the class
# folder, as README says, and these are the formula's values for that key.)
RETRAIN_PY_SPLIT = {
    # class a: (key, percentage, set)
    'a': [('photo_0.jpg', 11.240955, 'validation'),
          ('photo_1.jpg', 22.472103, 'testing'),
          ('photo_2.jpg', 67.836050, 'training'),
          ('photo_3.jpg', 67.777388, 'training'),
          ('photo_4.jpg', 6.013347, 'validation'),
          ('photo_5.jpg', 21.152262, 'testing'),
          ('photo_6.jpg', 7.871536, 'validation'),
          ('photo_7.jpg', 62.368840, 'training'),
          ('photo_8.jpg', 94.590528, 'training'),
          ('photo_9.jpg', 64.528141, 'training'),
          ('photo_10.jpg', 46.071043, 'training'),
          ('photo_11.jpg', 3.071491, 'validation'),
          ('photo_13.jpg', 14.770978, 'validation'),
          ('photo_14.jpg', 27.642770, 'testing'),
          ('IMG_0001.JPG', 52.612473, 'training')],
    # class b: flower-photo names, _nohash_ groups, subfolders, UTF-8.
    'b': [('100080576_f52e8ee070_n.jpg', 8.575361, 'validation'),
          ('102501987_3cdb8e5394_n.jpg', 95.600703, 'training'),
          ('bob.jpg', 53.977648, 'training'),
          ('bob_nohash_1.jpg', 77.029808, 'training'),  # Hashes 'bob'.
          ('bob_nohash_2.jpg', 77.029808, 'training'),
          ('alice_nohash_0.jpg', 24.061948, 'testing'),
          ('alice_nohash_1.jpg', 24.061948, 'testing'),
          ('x.jpg', 44.873387, 'training'),
          ('x_nohash_y_nohash_z.jpg', 4.498376, 'validation'),  # Hashes 'x'.
          ('sub/photo_1.jpg', 83.186785, 'training'),
          ('sub/deeper/photo_2.jpg', 52.185993, 'training'),
          ('trip/bob_nohash_1.jpg', 68.761647, 'training'),
          ('gr\u00f6\u00dfe.jpg', 81.837395, 'training')],
}


def test_split_is_retrain_py_formula_for_known_names(tmp_path):
  for name, rows in RETRAIN_PY_SPLIT.items():
    for key, _, _ in rows:
      touch(tmp_path / name / key, f'{name} {key}'.encode())  # No copies.
  labels, photos = images.find_photos(str(tmp_path))
  assert labels == ['a', 'b']
  got = images.split_photos(hashed(photos), testing_percentage=25,
                            validation_percentage=15)
  expected = {(labels.index(name), key): split
              for name, rows in RETRAIN_PY_SPLIT.items()
              for key, _, split in rows}
  assert by_class_and_key(got) == expected
  for rows in RETRAIN_PY_SPLIT.values():
    for key, percentage, _ in rows:
      assert images.split_bucket(key) == pytest.approx(percentage, abs=1e-6)


def test_split_ignores_where_the_folder_is(tmp_path):
  make_class(tmp_path / 'one', 'a', 200)
  make_class(tmp_path / 'one', 'b', 200)
  _, photos = images.find_photos(str(tmp_path / 'one'))
  first = images.split_photos(hashed(photos), testing_percentage=10,
                              validation_percentage=10)
  shutil.move(str(tmp_path / 'one'), str(tmp_path / 'moved'))
  _, photos = images.find_photos(str(tmp_path / 'moved'))
  second = images.split_photos(hashed(photos), testing_percentage=10,
                               validation_percentage=10)
  assert by_class_and_key(first) == by_class_and_key(second)


def test_adding_photos_never_moves_existing_ones(tmp_path):
  make_class(tmp_path, 'a', 100)
  make_class(tmp_path, 'b', 100)
  _, photos = images.find_photos(str(tmp_path))
  before = split_of(images.split_photos(
      hashed(photos), testing_percentage=10, validation_percentage=10))
  make_class(tmp_path, 'a', 50, prefix='new')
  _, photos = images.find_photos(str(tmp_path))
  after = split_of(images.split_photos(
      hashed(photos), testing_percentage=10, validation_percentage=10))
  assert {k: after[k] for k in before} == before


def test_nohash_suffix_groups_photos(tmp_path):
  for i in range(30):
    for j in range(3):
      touch(tmp_path / 'a' / f'person{i}_nohash_{j}.jpg', f'{i} {j}'.encode())
  make_class(tmp_path, 'b', 5)
  _, photos = images.find_photos(str(tmp_path))
  splits = split_of(images.split_photos(hashed(photos), testing_percentage=20,
                                        validation_percentage=20))
  for i in range(30):
    assert len({splits[f'person{i}_nohash_{j}.jpg'] for j in range(3)}) == 1


def test_every_class_of_three_gets_validation_and_test(tmp_path):
  make_class(tmp_path, 'a', 3)
  make_class(tmp_path, 'b', 2)
  make_class(tmp_path, 'c', 40)
  _, photos = images.find_photos(str(tmp_path))
  splits = images.split_photos(hashed(photos), testing_percentage=10,
                               validation_percentage=10)
  for name in ('validation', 'testing'):
    assert {p.label for p in splits[name]} >= {0, 2}
  assert {p.label for p in splits['training']} == {0, 1, 2}
  # No forced photo when a percentage is 0.
  splits = images.split_photos(hashed(photos), testing_percentage=0,
                               validation_percentage=10)
  assert not splits['testing']


def test_byte_identical_copies_share_a_held_out_set(tmp_path):
  make_class(tmp_path, 'a', 100)
  make_class(tmp_path, 'b', 10)
  _, photos = images.find_photos(str(tmp_path))
  photos = hashed(photos)
  splits = images.split_photos(photos, testing_percentage=10,
                               validation_percentage=10)
  held_out = splits['testing'][0]
  # Copy a test photo under a name that hashes to training, in another class.
  copy = next(f'copy_{i}.jpg' for i in range(1000)
              if images.split_bucket(f'copy_{i}.jpg') > 50)
  shutil.copy(held_out.path, tmp_path / 'b' / copy)
  _, photos = images.find_photos(str(tmp_path))
  splits = split_of(images.split_photos(hashed(photos), testing_percentage=10,
                                        validation_percentage=10))
  assert splits[copy] == 'testing'
  assert splits[held_out.key] == 'testing'


def test_unreadable_files_are_reported_not_raised(tmp_path):
  make_class(tmp_path, 'a', 2)
  photos = [images.Photo(str(tmp_path / 'a' / 'img_0.jpg'), 'img_0.jpg', 0),
            images.Photo(str(tmp_path / 'a' / 'gone.jpg'), 'gone.jpg', 0)]
  ok, skipped = images.digest_photos(photos)
  assert [p.key for p in ok] == ['img_0.jpg'] and len(ok[0].digest) == 64
  assert skipped[0][0].endswith('gone.jpg') and 'cannot read' in skipped[0][1]
  assert dataclasses.replace(ok[0], digest='') == photos[0]


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
