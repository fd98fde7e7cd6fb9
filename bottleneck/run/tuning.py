"""The stages of a run with --fine_tune_blocks N, between the photos and export.

  cache   each photo's record (the pooled layers before the last N blocks and
          the activation entering them, float16; see `blocks`), and for the
          training photos the record of their mirror image too: two backbone
          passes per new training photo, one per other new photo.
  train   the linear head on the features of the cached records (as any run
          trains it), then the last N blocks and the head together
          (`fine_tune`); the tuned backbone is what every export runs.

The records live beside the vectors, one file per view and cut:
<bottleneck_dir>/<backbone>_<cut>_<view>-<identity>.h5 (see `cache`).
"""

import math
import numpy as np

from bottleneck import errors
from bottleneck.data import images
from bottleneck.features import cache
from bottleneck.features import probe
from bottleneck.train import fine_tune
from bottleneck.train import recipes


def cache_records(config, split, photos):
  """The cache stage of a fine-tuning run.

  Args:
    config: the run's `config.RetrainConfig`.
    split: the `blocks.Split` of the run's backbone.
    photos: list of `images.Photo` with digests.

  Returns:
    (`cache.CacheResult` of the photos' records, {digest: float16 record} of
    the training photos' mirror images).

  Raises:
    errors.UsageError: what the run holds in memory passes
      --vector_memory_mb (`check_memory`); nothing has been computed then.
  """
  check_memory(config, split, len(photos))
  view = split.view_backbone('photo')
  cached = cache.cache_bottlenecks(photos, view, config.bottleneck_dir,
                                   engine=probe.for_config(config, view),
                                   what='Records', memory_mb=math.inf)
  # The mirror images only serve training: the split is by name, so a photo
  # that tests now never trains later, and its mirror image is never needed.
  training = images.split_photos(
      cached.photos, testing_percentage=config.testing_percentage,
      validation_percentage=config.validation_percentage)['training']
  view = split.view_backbone('flipped')
  flipped = cache.cache_bottlenecks(training, view, config.bottleneck_dir,
                                    engine=probe.for_config(config, view),
                                    what='Mirror-image records',
                                    memory_mb=math.inf)
  return cached, dict(zip((p.digest for p in flipped.photos),
                          flipped.vectors))


def check_memory(config, split, photo_count):
  """Refuses a fine-tuning run whose records would pass the memory budget.

  Fine-tuning holds what the head's recipe streams above --vector_memory_mb:
  every photo's float16 record, the training photos' mirror-image records,
  and the float32 features of every photo twice (those of the pretrained
  blocks for the linear head, then of the tuned ones). Rather than pass the
  budget the user set, the run stops before the cache stage and says what it
  needs.

  Args:
    config: the run's `config.RetrainConfig`.
    split: the `blocks.Split`.
    photo_count: number of photos listed.

  Raises:
    errors.UsageError: the estimate passes config.vector_memory_mb.
  """
  training_share = 1 - (config.testing_percentage +
                        config.validation_percentage) / 100
  per_photo = (2 * split.record_dim * (1 + training_share) +
               2 * 4 * split.backbone.feature_dim)
  needed = photo_count * per_photo / 2**20
  if needed > config.vector_memory_mb:
    raise errors.UsageError(
        f'--fine_tune_blocks {config.fine_tune_blocks} holds the records and '
        f'features of all {photo_count:,} photos in memory, about '
        f'{math.ceil(needed):,} MiB, above --vector_memory_mb '
        f'{config.vector_memory_mb:g}. Pass --vector_memory_mb '
        f'{math.ceil(needed):,} or more if the machine has that much memory, '
        'or train without --fine_tune_blocks: the head alone streams its '
        'vectors from the cache.')


def train(config, split, data, flipped, *, training_photos, num_classes,
          summaries_dir=None):
  """Trains the linear head, then fine-tunes the blocks and the head.

  Args:
    config: the run's `config.RetrainConfig`.
    split: the `blocks.Split`.
    data: {split name: (float16 records [n, record_dim], int32 classes [n])}.
    flipped: {digest: float16 record} of the training photos' mirror images.
    training_photos: the `images.Photo`s of data['training'], in order.
    num_classes: number of classes.
    summaries_dir: TensorBoard folder of the linear head, or None.

  Returns:
    (the tuned `backbones.Backbone`, its `head.Head`, {split name: (float32
    features [n, feature_dim] of the tuned backbone, int32 classes [n])}).
  """
  linear = {name: (split.features_of(records), truth)
            for name, (records, truth) in data.items()}
  head = recipes.train_head(config, linear['training'], linear['validation'],
                            num_classes=num_classes,
                            summaries_dir=summaries_dir,
                            groups=split.backbone.groups)
  records, truth = data['training']
  mirrored = (np.stack([flipped[p.digest] for p in training_photos])
              if training_photos else records)
  tail, head = fine_tune.fine_tune(split, head, (records, mirrored, truth),
                                   data['validation'], seed=config.random_seed)
  tuned = {name: (split.features_of(records, tail), truth)
           for name, (records, truth) in data.items()}
  return split.tuned_backbone(tail), head, tuned

