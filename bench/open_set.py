"""The "unknown" score and calibration, measured (issue 13; README, Unknown).

  .venv/bin/pip install scikit-image   # its wheel ships the other subjects
  .venv/bin/python -m bench.open_set   # about 5 minutes on 2 cores

Three kinds of photo, each scored by heads trained as retrain.py trains them
(default flags: `keras:mobilenet_v2`, `auto` layers, the standard recipe):

  held out      flower photos of the test fold, 5-fold cross-validation with
                retrain.py's stable-hash folds (bench/folds.py): the share
                turned away should be about 5% (the threshold is the
                validation photos' 95th percentile).
  other         photos of other subjects that ship inside a package, never
                downloaded: the natural photos of scikit-image's data folder
                (an astronaut, a cat, coffee, a rocket, a motorcycle, coins,
                bricks, grass, a page of text, ...), each cut into 8 random
                crops with random flips; and 100 of its LFW face crops.
  left out      each flower class in turn is left out of training; its photos
                of the test fold are the "unknown" ones (hard: a new kind of
                flower looks like the others).

Rows compare the default score (Mahalanobis, shrunk, at most 2,048 exact
directions: `open_set.RANK`) with 256 directions, the full-rank distance, the
relative Mahalanobis distance (Ren et al. 2021, full rank) and the top
softmax score, each with its threshold at the validation photos' 95th
percentile. Then the expected calibration error of the test folds before and
after temperature scaling, and the main job's exported model itself: its
classifier.tflite, as label_image.py runs it, on the other subjects.
"""

import glob
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from bottleneck.run import cli  # Sets the TF log level before TF loads.
from absl import app
import numpy as np
from PIL import Image

from bench import accuracy as accuracy_bench
from bench import folds as folds_lib
from bench import measure
from bench import report
from bottleneck import config
from bottleneck import predict
from bottleneck.features import backbones
from bottleneck.features import cache
from bottleneck.features import probe
from bottleneck.run import pipeline
from bottleneck.train import calibration
from bottleneck.train import open_set
from bottleneck.train import recipes

FLAGS = accuracy_bench.FLAGS
CROPS = 8
FACES = 100


def main(argv):
  del argv
  start = time.perf_counter()
  print(report.machine(measure.cores()), flush=True)
  run_config = config.RetrainConfig(
      image_dir=FLAGS.flowers, **dict(accuracy_bench.BASE,
                                      keras_weights=FLAGS.weights))
  _, photos, vectors, groups = accuracy_bench.cache_stage(run_config)
  with tempfile.TemporaryDirectory() as scratch:
    other_paths = other_subjects(scratch)
    other = other_vectors(run_config, other_paths)
    rates, eces = cross_validate(run_config, photos, vectors, groups, other)
    exported = main_job(run_config, other_paths, scratch)
  print(f'\n{len(photos):,} flower photos of {os.path.normpath(FLAGS.flowers)}'
        f'; {len(other_paths)} photos of other subjects; the benchmark took '
        f'{(time.perf_counter() - start) / 60:.1f} min.\n')
  print('| score (threshold: 95th percentile of validation) | held-out '
        'flowers called unknown | other subjects | faces | left-out class |')
  print('| --- | --- | --- | --- | --- |')
  for name, columns in rates.items():
    print(f'| {name} | ' + ' | '.join(
        f'{statistics.mean(v):.1%} +- {statistics.stdev(v) * 100:.1f}'
        for v in columns) + ' |')
  print(f'\nExpected calibration error of the test folds ({config.ECE_BINS} '
        f'bins): {statistics.mean(eces[0]):.1%} before, '
        f'{statistics.mean(eces[1]):.1%} after temperature scaling '
        f'(temperature {statistics.mean(eces[2]):.2f} on average).')
  print(f'\nThe main job (default flags) as exported: {exported[0]:.1%} of '
        f'its test photos and {exported[1]:.1%} of the other subjects '
        f'({exported[2]:.1%} of the photos, {exported[3]:.1%} of the faces) '
        'called unknown by its classifier.tflite (label_image.py\'s path); '
        f'ECE {exported[4]:.1%} before, {exported[5]:.1%} after.')
  return 0


def other_subjects(folder):
  """Writes the other subjects as JPEG files; returns their paths (faces
  last, their names starting with 'face')."""
  # Only its files are read: the package itself is not imported.
  spec = importlib.util.find_spec('skimage')
  if spec is None:
    sys.exit('bench/open_set.py needs the photos in scikit-image\'s wheel: '
             '.venv/bin/pip install scikit-image')
  data = os.path.join(os.path.dirname(spec.origin), 'data')
  rng = np.random.default_rng(0)
  paths = []
  for source in sorted(glob.glob(os.path.join(data, '*.png')) +
                       glob.glob(os.path.join(data, '*.jpg'))):
    img = Image.open(source).convert('RGB')
    if min(img.size) < 64:  # Tiny test patterns, not photos.
      continue
    name = os.path.splitext(os.path.basename(source))[0]
    for k in range(CROPS):
      width, height = img.size
      scale = rng.uniform(0.45, 1.0)
      w, h = int(width * scale), int(height * scale)
      x, y = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
      crop = img.crop((x, y, x + w, y + h))
      if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
      paths.append(os.path.join(folder, f'{name}_{k}.jpg'))
      crop.save(paths[-1], quality=90)
  faces = np.load(os.path.join(data, 'lfw_subset.npy'))[:FACES]
  for i, face in enumerate(faces):
    paths.append(os.path.join(folder, f'face_{i}.jpg'))
    Image.fromarray((face * 255).astype(np.uint8)).convert('RGB').resize(
        (100, 100)).save(paths[-1], quality=90)
  return paths


def other_vectors(run_config, paths):
  """float32 [len(paths), features] of the run's backbone."""
  backbone = backbones.load_backbone(
      run_config.tfhub_module, keras_weights=run_config.keras_weights,
      image_sizes=run_config.sizes, layers=run_config.bottleneck_layers)
  engine = probe.chooser(backbone, runtime='tensorflow', batch_size=16,
                         bottleneck_dir='')(paths)
  vectors = np.zeros((len(paths), backbone.feature_dim), np.float32)
  for rows, computed in cache.compute_vectors(paths, backbone.image_size,
                                              engine):
    vectors[rows] = computed
  return vectors


def cross_validate(run_config, photos, vectors, groups, other):
  """{score name: (held out, other, faces, left out) rates per fold}, and
  (ECE before, ECE after, temperature) per fold."""
  is_face = np.arange(len(other)) >= len(other) - FACES
  fold, validates = folds_lib.assign(
      photos, folds=FLAGS.folds,
      validation_percentage=run_config.validation_percentage)
  labels = np.array([p.label for p in photos], np.int32)
  num_classes = int(labels.max()) + 1
  rates = {name: ([], [], [], []) for name in SCORES}
  eces = ([], [], [])
  for k in range(FLAGS.folds):
    rows = folds_lib.split(fold, validates, k)
    data = {name: (vectors[r], labels[r]) for name, r in rows.items()}
    head = train(run_config, data, num_classes, groups)
    head, figures = calibration.calibrate(head, data['validation'],
                                          data['testing'])
    for i, key in enumerate(('ece_before', 'ece_after', 'temperature')):
      eces[i].append(figures[key])
    for name, fit in SCORES.items():
      score = fit(head, data, num_classes)
      threshold = np.percentile(score(data['validation'][0]), 95)
      for column, chosen in ((0, data['testing'][0]), (1, other[~is_face]),
                             (2, other[is_face])):
        rates[name][column].append(float(np.mean(score(chosen) > threshold)))
    for name, left_out in left_out_rates(run_config, data, num_classes,
                                         groups).items():
      rates[name][3].append(left_out)
  return rates, eces


def left_out_rates(run_config, data, num_classes, groups):
  """{score name: mean over classes of the share of a class left out of
  training (its test photos) that each score calls unknown}."""
  found = {name: [] for name in SCORES}
  for c in range(num_classes):
    kept = {name: (x[y != c], np.where(y[y != c] > c, y[y != c] - 1,
                                       y[y != c]))
            for name, (x, y) in data.items()}
    unseen = data['testing'][0][data['testing'][1] == c]
    head = train(run_config, kept, num_classes - 1, groups)
    for name, fit in SCORES.items():
      score = fit(head, kept, num_classes - 1)
      threshold = np.percentile(score(kept['validation'][0]), 95)
      found[name].append(float(np.mean(score(unseen) > threshold)))
  return {name: statistics.mean(v) for name, v in found.items()}


def train(run_config, data, num_classes, groups):
  with measure.logs_to_devnull():
    return recipes.train_head(run_config, data['training'],
                              data['validation'], num_classes=num_classes,
                              groups=groups)


def _mahalanobis(rank):
  def fit(head, data, num_classes):
    del head
    with measure.logs_to_devnull():
      fitted = open_set.fit(data['training'], data['validation'],
                            num_classes=num_classes, rank=rank)
    return fitted.distances
  return fit


def _relative(head, data, num_classes):
  """Ren et al. 2021: the class distance minus a distance to one Gaussian
  of every training vector (the same shrinkage; full rank, as in the paper:
  with a mean variance for the other directions both distances are dominated
  by the same term, which cancels)."""
  classes = _mahalanobis(FULL)(head, data, num_classes)
  x = data['training'][0]
  background = _mahalanobis(FULL)(
      head, {'training': (x, np.zeros(len(x), np.int32)),
             'validation': data['validation']}, 1)
  return lambda v: classes(v) - background(v)


FULL = 100_000  # More directions than any feature vector has.
SCORES = {
    f'Mahalanobis, {open_set.RANK:,} directions (the default)':
        _mahalanobis(open_set.RANK),
    'Mahalanobis, 256 directions': _mahalanobis(256),
    'Mahalanobis, full rank': _mahalanobis(FULL),
    'relative Mahalanobis': _relative,
    'top softmax score': lambda head, data, n: (
        lambda v: -head.probabilities(v).max(1)),
}


def main_job(run_config, other_paths, scratch):
  """The default run's export on the other subjects, as label_image.py runs
  it: (test photos' unknown rate, other subjects', of the photos, of the
  faces, ECE before, after)."""
  with measure.logs_to_devnull():
    pipeline.retrain(config.RetrainConfig(**dict(
        vars(run_config), bottleneck_dir=os.path.join(scratch, 'bn'),
        saved_model_dir=os.path.join(scratch, 'model'))))
  with open(os.path.join(scratch, 'model', 'metrics.json')) as f:
    metrics = json.load(f)
  model, _ = predict.load_model_folder(os.path.join(scratch, 'model'))
  unknown = [result.unknown for _, result in
             predict.label_images(model, other_paths, top_k=1)]
  faces = [os.path.basename(p).startswith('face_') for p in other_paths]
  return (metrics['unknown']['test_unknown_rate'], float(np.mean(unknown)),
          float(np.mean([u for u, f in zip(unknown, faces) if not f])),
          float(np.mean([u for u, f in zip(unknown, faces) if f])),
          metrics['calibration']['ece_before'],
          metrics['calibration']['ece_after'])


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
