"""Cross-validation folds from retrain.py's stable hash, never a random draw.

A photo's fold is the band of `images.split_bucket` (retrain.py's SHA-1 of
its key, a percentage in [0, 100]) it falls in: with 5 folds, buckets [0, 20)
are fold 0, [20, 40) fold 1, and so on. So a photo keeps its fold when photos
are added, and `_nohash_` keys stay together, as in the split. Within the
other folds, a photo's place inside its band, stretched back to [0, 100),
decides whether it validates: the same hash, and a share of every band.
"""

import collections

from bottleneck.data import images


def assign(photos, *, folds, validation_percentage):
  """Each photo's fold, and whether it validates when its fold trains.

  Byte-identical photos (same digest) all take the fold and place of the one
  with the lowest bucket, so that no copy of a test photo is trained on.

  Args:
    photos: list of `images.Photo` with digests set.
    folds: number of folds, >= 2.
    validation_percentage: float in [0, 100): share of the training folds'
      photos kept for validation.

  Returns:
    (fold int list, validates bool list), one of each per photo, in order.
  """
  position = {}  # digest -> the lowest bucket, scaled to [0, folds].
  for p in photos:
    scaled = min(images.split_bucket(p.key) * folds / 100, folds - 1e-9)
    position[p.digest] = min(position.get(p.digest, folds), scaled)
  fold = [int(position[p.digest]) for p in photos]
  validates = [(position[p.digest] % 1) * 100 < validation_percentage
               for p in photos]
  return fold, validates


def split(fold, validates, k):
  """One round: fold k tests, the other folds train or validate.

  Args:
    fold, validates: from `assign`.
    k: the test fold.

  Returns:
    dict from 'training', 'validation', 'testing' to lists of indices into
    the photos given to `assign`, in order.
  """
  members = collections.defaultdict(list)
  for i, (f, v) in enumerate(zip(fold, validates)):
    members['testing' if f == k else 'validation' if v else 'training'].append(
        i)
  return {name: members[name] for name in images.SPLITS}
