"""A run's cached vectors -> training, validation and test sets.

The split is by photo name (`images.split_photos`, retrain.py's stable hash),
after the classes none of whose photos could be decoded are left out.
"""

import collections
import dataclasses

from absl import logging
import numpy as np

from bottleneck import errors
from bottleneck.data import images


def split_vectors(config, labels, cached):
  """Splits the cached vectors of a run.

  Args:
    config: the run's `config.RetrainConfig`.
    labels: list of str, class-index order.
    cached: the cache stage's `cache.CacheResult`.

  Returns:
    (labels of the classes kept, {set name: list of `images.Photo`},
    {set name: (float32 [n, feature_dim] vectors, int32 [n] class indices)}),
    for the set names 'training', 'validation' and 'testing'.

  Raises:
    errors.DataError: fewer than two classes, or no training photo, are left.
  """
  labels, usable = _usable_classes(labels, cached.photos)
  splits = images.split_photos(
      usable, testing_percentage=config.testing_percentage,
      validation_percentage=config.validation_percentage)
  rows = {p.digest: i for i, p in enumerate(cached.photos)}
  data = {name: (cached.vectors[[rows[p.digest] for p in members]],
                 np.array([p.label for p in members], np.int32))
          for name, members in splits.items()}
  sizes = {name: len(members) for name, members in splits.items()}
  logging.info('Photos: %d training, %d validation, %d testing.',
               sizes['training'], sizes['validation'], sizes['testing'])
  if not sizes['training']:
    raise errors.DataError('No photo is left for training; lower '
                           '--testing_percentage or --validation_percentage.')
  for index in sorted(set(range(len(labels))) - set(data['training'][1])):
    logging.warning('Class %r has no training photo; add photos to it.',
                    labels[index])
  return labels, splits, data


def _usable_classes(labels, photos):
  """Drops classes none of whose photos could be decoded.

  Returns:
    (labels, photos) with the photos' class indices renumbered.

  Raises:
    errors.DataError: fewer than two classes are left.
  """
  counts = collections.Counter(p.label for p in photos)
  keep = [i for i in range(len(labels)) if counts[i]]
  for i in range(len(labels)):
    if not counts[i]:
      logging.warning('Leaving out class %r: none of its files could be '
                      'decoded (see the lines above).', labels[i])
  if len(keep) < 2:
    raise errors.DataError(
        f'Only {len(keep)} class(es) have images that can be decoded; at least '
        'two are needed. Add images that can be decoded (see the lines above).')
  new_index = {old: new for new, old in enumerate(keep)}
  return ([labels[i] for i in keep],
          [dataclasses.replace(p, label=new_index[p.label]) for p in photos])
