"""Find the photos of each class and split them into training/validation/testing.

`--image_dir` holds one subfolder per class; the label is the folder name,
lower-cased with runs of other characters than a-z and 0-9 turned into one
space, as retrain.py did. Everything is sorted, so two runs over the same folder
see the same order.
"""

import collections
import dataclasses
import glob
import hashlib
import os
import re

from absl import logging

from bottleneck import errors

IMAGE_EXTENSIONS = ('.bmp', '.gif', '.jpeg', '.jpg', '.png', '.webp')
SPLITS = ('training', 'validation', 'testing')
# retrain.py warned below 20 images a class; fewer rarely trains well.
MIN_IMAGES_WARNING = 20
# retrain.py's constant: the split of a photo must not change as a folder grows,
# so it hashes the name into 2**27 buckets instead of counting photos.
_MAX_NUM_IMAGES_PER_CLASS = 2 ** 27 - 1
_HASH_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Photo:
  """One image file of one class.

  Attributes:
    path: the file's path as found under `--image_dir`.
    key: the path relative to its class folder, '/'-separated. The split is
      computed from it, so moving `--image_dir` never reshuffles the split.
    label: the class index, into the sorted list of labels.
    digest: hex SHA-256 of the file's bytes ('' until hashed).
  """
  path: str
  key: str
  label: int
  digest: str = ''


def label_for_folder(name):
  """Returns retrain.py's label for a class folder name ('Sun_Flowers' -> 'sun flowers')."""
  return re.sub(r'[^a-z0-9]+', ' ', name.lower()).strip()


def is_image_file(name):
  """True for a visible file with one of IMAGE_EXTENSIONS, in any letter case."""
  return (not name.startswith('.') and
          os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def find_photos(image_dir):
  """Lists the class folders of `image_dir` and the image files in each.

  Class folders are searched recursively; hidden files and folders are ignored.

  Args:
    image_dir: folder with one subfolder per class.

  Returns:
    (labels, photos): labels is the sorted list of str labels, in class-index
    order; photos is a list of `Photo` (digest not yet set), sorted by class
    and then key.

  Raises:
    errors.DataError: the folder is missing, two folders give one label, or
      fewer than two class folders hold image files (empty ones are left out
      with a warning).
  """
  if not os.path.isdir(image_dir):
    raise errors.DataError(
        f'Image directory {image_dir!r} not found. Pass --image_dir a folder '
        'that holds one subfolder of images per class.')
  folders = sorted(
      entry.name for entry in os.scandir(image_dir)
      if entry.is_dir() and not entry.name.startswith('.'))
  loose = sorted(entry.name for entry in os.scandir(image_dir)
                 if entry.is_file() and is_image_file(entry.name))
  if loose:
    logging.warning('Ignoring %d image(s) directly in %s (for example %s): '
                    'only images inside class subfolders are used.',
                    len(loose), image_dir, loose[0])
  by_label = {}
  for folder in folders:
    label = label_for_folder(folder)
    if not label:
      raise errors.DataError(
          f'Class folder {os.path.join(image_dir, folder)!r} gives an empty '
          'label; rename it to contain letters or digits.')
    if label in by_label:
      raise errors.DataError(
          f'Class folders {by_label[label]!r} and {folder!r} in {image_dir} both '
          f'give the label {label!r}; rename or merge one of them.')
    by_label[label] = folder
  labels, photos = [], []
  for label in sorted(by_label):  # By label: letter case cannot reorder.
    class_dir = os.path.join(image_dir, by_label[label])
    keys = _image_keys(class_dir)
    if not keys:
      logging.warning('Leaving out the class folder %s: it has no image files '
                      '(extensions %s, any letter case).', class_dir,
                      ' '.join(IMAGE_EXTENSIONS))
      continue
    if len(keys) < MIN_IMAGES_WARNING:
      logging.warning('Class %r has only %d images; %d or more give a more '
                      'reliable model.', label, len(keys), MIN_IMAGES_WARNING)
    photos.extend(Photo(os.path.join(class_dir, *key.split('/')), key,
                        len(labels)) for key in keys)
    labels.append(label)
  if len(labels) < 2:
    raise errors.DataError(
        f'Found {len(labels)} class folder(s) with images in {image_dir!r}; at '
        'least two are needed, one subfolder of images per class.')
  return labels, photos


def _image_keys(class_dir):
  """Sorted '/'-separated paths of the image files below `class_dir`."""
  keys = []
  for root, dirs, files in os.walk(class_dir):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    rel = os.path.relpath(root, class_dir)
    prefix = '' if rel == '.' else rel.replace(os.sep, '/') + '/'
    keys.extend(prefix + name for name in files if is_image_file(name))
  return sorted(keys)


def file_digest(path):
  """Hex SHA-256 of a file's bytes. Raises OSError if it cannot be read."""
  sha = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(_HASH_CHUNK), b''):
      sha.update(chunk)
  return sha.hexdigest()


def split_bucket(key):
  """retrain.py's stable hash of a split key, as a percentage in [0, 100].

  Everything from '_nohash_' on is ignored, so that 'bob_nohash_1.jpg' and
  'bob_nohash_2.jpg' always land in the same set.
  """
  hash_name = re.sub(r'_nohash_.*$', '', key)
  hashed = hashlib.sha1(hash_name.encode('utf-8', 'surrogateescape'))
  return ((int(hashed.hexdigest(), 16) % (_MAX_NUM_IMAGES_PER_CLASS + 1)) *
          (100.0 / _MAX_NUM_IMAGES_PER_CLASS))


def split_photos(photos, *, testing_percentage, validation_percentage):
  """Assigns each photo to 'training', 'validation' or 'testing'.

  Rules, in order:
    1. retrain.py's hash of the key: below validation_percentage is validation,
       below validation + testing percentage is testing, the rest training.
       A photo's set depends on its own key only, so new photos never move
       existing ones.
    2. A class with at least 3 photos and a non-zero percentage gets at least one
       validation and one testing photo: the training photos with the lowest
       hash are moved.
    3. Byte-identical photos (same digest) all go to the most held-out set any
       of them has (testing, then validation), so no copy of a held-out photo
       is ever trained on.

  Args:
    photos: list of `Photo` with digests set (they decide which photos are
      copies of each other).
    testing_percentage: float in [0, 100).
    validation_percentage: float in [0, 100).

  Returns:
    dict from split name to the list of `Photo` in it, each sorted as `photos`.
  """
  buckets = {p: split_bucket(p.key) for p in photos}
  assigned = {}
  for p, bucket in buckets.items():
    if bucket < validation_percentage:
      assigned[p] = 'validation'
    elif bucket < validation_percentage + testing_percentage:
      assigned[p] = 'testing'
    else:
      assigned[p] = 'training'
  by_class = collections.defaultdict(list)
  for p in photos:
    by_class[p.label].append(p)
  for members in by_class.values():
    if len(members) < 3:
      continue
    for split, percentage in (('validation', validation_percentage),
                              ('testing', testing_percentage)):
      if percentage > 0 and not any(assigned[p] == split for p in members):
        training = [p for p in members if assigned[p] == 'training']
        if training:
          assigned[min(training, key=buckets.get)] = split
  rank = {name: i for i, name in enumerate(SPLITS)}
  by_digest = collections.defaultdict(list)
  for p in photos:
    by_digest[p.digest].append(p)
  for copies in by_digest.values():
    held_out = max((assigned[p] for p in copies), key=rank.get)
    for p in copies:
      assigned[p] = held_out
  return {name: [p for p in photos if assigned[p] == name] for name in SPLITS}


def digest_photos(photos):
  """Hashes every photo's bytes.

  Args:
    photos: list of `Photo`.

  Returns:
    (hashed, skipped): hashed is the list of readable photos with digests set;
    skipped is a list of (path, reason) for files that could not be read.
  """
  hashed, skipped = [], []
  for p in photos:
    try:
      hashed.append(dataclasses.replace(p, digest=file_digest(p.path)))
    except OSError as e:
      skipped.append((p.path, f'cannot read file ({e.strerror or e})'))
  return hashed, skipped


def find_images(pattern):
  """A file, a folder (searched recursively for images) or a glob -> paths.

  Raises:
    errors.DataError: nothing matches.
  """
  if os.path.isfile(pattern):
    return [pattern]
  if os.path.isdir(pattern):
    paths = sorted(os.path.join(root, name)
                   for root, _, names in os.walk(pattern)
                   for name in names if is_image_file(name))
  else:
    paths = sorted(p for p in glob.glob(pattern, recursive=True)
                   if os.path.isfile(p))
  if not paths:
    raise errors.DataError(
        f'No image found at {pattern!r}. Pass --image a file, a folder or a '
        f'glob such as "photos/*.jpg" (extensions {", ".join(IMAGE_EXTENSIONS)}).')
  return paths
