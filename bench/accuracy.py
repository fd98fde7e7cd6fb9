r"""The accuracy benchmark: 5-fold cross-validation of each configuration.

  .venv/bin/python bench/accuracy.py            # README's table, 20-30 minutes
  .venv/bin/python bench/accuracy.py --photos_per_class 40   # 20 s, a check

On ../shared/data/flower_photos with the main job's backbone (keras:
mobilenet_v2, the ImageNet weights in ../shared/data). The folds come from
retrain.py's stable hash (bench/folds.py), never a random draw, so every
configuration sees the same photos in the same folds. For each configuration
the cache stage runs once, into a fresh folder, timed (configurations with the
same features share it); then, for each fold, the head is trained on the other
folds' training photos, with their validation photos, through the same call
as retrain.py (`recipes.train_head`), and tested on the fold. With
--fine_tune_blocks, the cache stage stores the records of every photo and of
its mirror image (each photo trains in some fold; retrain.py mirrors only its
training photos, so its cache stage costs less), and each fold trains as
retrain.py does (`tuning.train`).

Prints one Markdown row per configuration: the mean and sample standard
deviation of the test accuracy over the folds, each fold's accuracy, the cache
stage's seconds and the mean training seconds per fold.
"""

import collections
import dataclasses
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from bottleneck.run import cli  # Sets the TF log level before TF loads.
from absl import app
from absl import flags
from absl import logging
import numpy as np

from bench import folds as folds_lib
from bench import measure
from bench import report
from bottleneck import config
from bottleneck.data import images
from bottleneck.features import backbones
from bottleneck.features import blocks
from bottleneck.features import cache
from bottleneck.features import mirror
from bottleneck.features import probe
from bottleneck.run import tuning
from bottleneck.train import recipes

# One row per configuration: its name and the retrain.py flags it sets on top
# of BASE. Adding a configuration is adding a line.
CONFIGURATIONS = (
    ('the defaults before: retrain.py\'s head (`--head_recipe retrain`), '
     'last layer', dict(head_recipe='retrain', bottleneck_layers='last')),
    ('standard head (`--head_recipe standard`), last layer',
     dict(head_recipe='standard', bottleneck_layers='last')),
    ('retrain.py\'s head, `auto` layers',
     dict(head_recipe='retrain', bottleneck_layers='auto')),
    ('the defaults: standard head, `auto` layers',
     dict(head_recipe='standard', bottleneck_layers='auto')),
    ('the defaults + a second pass at 320 px (`--image_sizes 224,320`)',
     dict(head_recipe='standard', bottleneck_layers='auto',
          image_sizes='224,320')),
    ('the defaults + fine-tuning 1 block (`--fine_tune_blocks 1`)',
     dict(fine_tune_blocks=1)),
    ('the defaults + fine-tuning 2 blocks (`--fine_tune_blocks 2`)',
     dict(fine_tune_blocks=2)),
    ('the best combination: `--image_sizes 224,320 --fine_tune_blocks 1`',
     dict(image_sizes='224,320', fine_tune_blocks=1)),
    ('the defaults + each photo averaged with its mirror image '
     '(`--mirror_average`)', dict(mirror_average=True)),
    ('`--image_sizes 224,320 --mirror_average`',
     dict(image_sizes='224,320', mirror_average=True)),
)
# The config fields the cache stage reads: configurations that agree on them
# share one cache stage. A flag that changes the features belongs here.
FEATURE_FIELDS = ('tfhub_module', 'keras_weights', 'image_size', 'image_sizes',
                  'backbone_precision', 'bottleneck_layers', 'fine_tune_blocks',
                  'mirror_average')

flags.DEFINE_string('flowers', measure.FLOWERS,
                    'Folder of photos, one subfolder per class.')
flags.DEFINE_string('weights', measure.WEIGHTS,
                    'MobileNetV2 weights file.')
flags.DEFINE_integer('folds', 5, 'Number of cross-validation folds.')
flags.DEFINE_integer('photos_per_class', 0,
                     'Use only the first this many photos of each class (by '
                     'file name) for a quick run; 0 for all.')
flags.DEFINE_string('bottleneck_dir', '',
                    'Reuse this cache folder instead of a fresh one per '
                    'configuration: faster, but the cache stage seconds then '
                    'measure a warm cache.')
FLAGS = flags.FLAGS

BASE = dict(tfhub_module='keras:mobilenet_v2', summaries_dir='')


def main(argv):
  del argv
  start = time.perf_counter()
  print(report.machine(measure.cores()), flush=True)
  features = {}  # Feature fields -> (cache seconds, photos, vectors).
  rows = []
  for name, changes in CONFIGURATIONS:
    run_config = config.RetrainConfig(
        image_dir=FLAGS.flowers, **dict(BASE, keras_weights=FLAGS.weights),
        **changes)
    key = tuple(getattr(run_config, f) for f in FEATURE_FIELDS)
    if key not in features:
      features[key] = cache_stage(run_config)
    seconds, photos, vectors, groups = features[key]
    accuracies, train_seconds = cross_validate(run_config, photos, vectors,
                                               groups)
    rows.append((name, accuracies, seconds, statistics.mean(train_seconds)))
    logging.info('%s: %s', name, ' '.join(f'{a:.1%}' for a in accuracies))
  counts = np.bincount([p.label for p in photos])
  print(f'\n{FLAGS.folds}-fold cross-validation on {len(photos):,} photos '
        f'({len(counts)} classes, {min(counts)} to {max(counts)} a class) of '
        f'{os.path.normpath(FLAGS.flowers)}; the benchmark took '
        f'{(time.perf_counter() - start) / 60:.1f} min; load average '
        f'{os.getloadavg()[1]:.1f} over its last 5 minutes.\n')
  print('| configuration | test accuracy, mean +- std | each fold | cache '
        'stage | training, per fold |')
  print('| --- | --- | --- | --- | --- |')
  for name, accuracies, seconds, train_seconds in rows:
    print(f'| {name} | {statistics.mean(accuracies):.1%} +- '
          f'{statistics.stdev(accuracies) * 100:.1f} | '
          f'{" ".join(f"{a * 100:.1f}" for a in accuracies)} | '
          f'{seconds:.1f} s{" (warm)" if FLAGS.bottleneck_dir else ""} | '
          f'{train_seconds:.2f} s |')
  return 0


def cache_stage(run_config):
  """The cache stage for a configuration's features, timed.

  Returns:
    (seconds to list, hash and compute or read every vector; the photos with
    a vector, each one's class and digest; float32 [photos, features]; the
    widths of the pooled layers in a vector, `backbones.Backbone.groups`).
  """
  if run_config.backbone_precision != 'float32':
    raise NotImplementedError('bench/accuracy.py runs float32 backbones only; '
                              'add the int8 copy as pipeline.py makes it.')
  backbone = backbones.load_backbone(
      run_config.tfhub_module, keras_weights=run_config.keras_weights,
      image_sizes=run_config.sizes, seed=run_config.random_seed,
      layers=run_config.bottleneck_layers)
  if run_config.mirror_average:
    backbone = mirror.averaged(backbone)
  with tempfile.TemporaryDirectory() as fresh:
    # As measure.cache_stage (list, hash, look up, compute), on the subset.
    begin = time.perf_counter()
    _, photos = images.find_photos(run_config.image_dir)
    if FLAGS.photos_per_class:
      taken = collections.Counter()
      photos = [p for p in photos if taken.update([p.label]) or
                taken[p.label] <= FLAGS.photos_per_class]
    photos, _ = images.digest_photos(photos)
    split = (blocks.split(backbone, run_config.fine_tune_blocks)
             if run_config.fine_tune_blocks else None)
    views = [split.view_backbone(v) for v in blocks.VIEWS] if split else [
        backbone]
    folder = FLAGS.bottleneck_dir or fresh
    cached = [cache.cache_bottlenecks(
        photos, view, folder,
        engine=probe.for_config(dataclasses.replace(
            run_config, bottleneck_dir=folder), view)) for view in views]
    seconds = time.perf_counter() - begin
  logging.info('Cache stage: %.1f s for %d photos.', seconds,
               len(cached[0].photos))
  if split:  # Photos that decode have both records.
    return seconds, cached[0].photos, (split, cached[0].vectors,
                                       cached[1].vectors), backbone.groups
  return seconds, cached[0].photos, cached[0].vectors, backbone.groups


def cross_validate(run_config, photos, vectors, groups):
  """Trains and tests one head per fold.

  Returns:
    (test accuracy of each fold, training seconds of each fold).
  """
  fold, validates = folds_lib.assign(
      photos, folds=FLAGS.folds,
      validation_percentage=run_config.validation_percentage)
  labels = np.array([p.label for p in photos], np.int32)
  num_classes = int(labels.max()) + 1
  # Fine-tuning: (blocks.Split, records, mirror images' records).
  split, vectors, mirrored = (vectors if isinstance(vectors, tuple) else
                              (None, vectors, None))
  flipped = split and dict(zip((p.digest for p in photos), mirrored))
  accuracies, seconds = [], []
  for k in range(FLAGS.folds):
    rows_of = folds_lib.split(fold, validates, k)
    data = {name: (vectors[rows], labels[rows])
            for name, rows in rows_of.items()}
    begin = time.perf_counter()
    with measure.logs_to_devnull():  # The training lines of a run.
      if split:
        training = [photos[i] for i in rows_of['training']]
        _, head, data = tuning.train(
            run_config, split, data, flipped, training_photos=training,
            num_classes=num_classes)
      else:
        head = recipes.train_head(run_config, data['training'],
                                  data['validation'], num_classes=num_classes,
                                  groups=groups)
    seconds.append(time.perf_counter() - begin)
    test_x, test_y = data['testing']
    accuracies.append(measure.accuracy(head, test_x, test_y))
  return accuracies, seconds


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
