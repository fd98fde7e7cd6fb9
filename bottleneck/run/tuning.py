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
  """
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

