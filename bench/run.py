r"""The speed benchmark: every figure of the README's Performance table.

  .venv/bin/python bench/run.py

measures, in this one process (and children it times), with the backbone of the
main job (keras:mobilenet_v2, the weights in ../shared/data): the backbone's own
speed, the cache stage on the flower photos and on 12 MP photos, the
one-image-at-a-time baseline, warm reruns, head training, label_image, the
cache stage's peak memory at 2,000 and 20,000 photos, the test accuracy
with and without reduced-scale JPEG decoding, and the int8 rows (see
bench/int8.py). Each speed is the median of --repeats runs. Generated photos
are kept in --work_dir (about 2 GB) for the next run; the caches and models
there are rebuilt every run. About 30 minutes on 2 cores.
"""

import collections
import os
import shutil
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

from bench import data
from bench import int8
from bench import measure
from bench import report
from bottleneck.features import backbones
from bottleneck import config
from bottleneck.data import decode
from bottleneck.train import head as head_lib
from bottleneck.data import images
from bottleneck import predict

_SHARED = os.path.join(measure.ROOT, '..', 'shared', 'data')
flags.DEFINE_string('work_dir', os.path.join(measure.ROOT, 'bench', '_work'),
                    'Folder for generated photos, caches and models.')
flags.DEFINE_string('flowers', os.path.join(_SHARED, 'flower_photos'),
                    'The flower photos.')
flags.DEFINE_string('weights', os.path.join(
    _SHARED, 'weights', 'mobilenet_v2_1.0_224_no_top.weights.h5'),
                    'MobileNetV2 weights file.')
flags.DEFINE_integer('photos', 0, 'Use only this many of the flower photos, '
                     'taken in turn from each class (for a quick check of the '
                     'code); 0 for all.')
flags.DEFINE_integer('repeats', 3, 'Runs per speed figure (median reported).')
flags.DEFINE_integer('many', 20000, 'Photos of the large memory measurement.')
flags.DEFINE_integer('few', 2000, 'Photos of the small memory measurement.')
flags.DEFINE_integer('baseline_photos', 200, 'Flower photos of the '
                     'one-image-at-a-time baseline, from every class.')
flags.DEFINE_integer('large_photos', 40, '12 MP photos of the one-image-at-'
                     'a-time baseline, from every class.')
flags.DEFINE_integer('label_photos', 500, 'Flower photos that label_image '
                     'labels for its throughput, from every class.')
FLAGS = flags.FLAGS
BACKBONE = 'keras:mobilenet_v2'


def median_of(function):
  return statistics.median(function() for _ in range(FLAGS.repeats))


def fresh(*parts):
  path = os.path.join(FLAGS.work_dir, *parts)
  shutil.rmtree(path, ignore_errors=True)
  return path


def retrain_args(image_dir, name):
  return [sys.executable, 'retrain.py', f'--image_dir={image_dir}',
          f'--tfhub_module={BACKBONE}', f'--keras_weights={FLAGS.weights}',
          f'--bottleneck_dir={os.path.join(FLAGS.work_dir, "caches", name)}',
          f'--saved_model_dir={os.path.join(FLAGS.work_dir, name, "model")}',
          f'--output_labels={os.path.join(FLAGS.work_dir, name, "labels.txt")}',
          f'--output_graph={os.path.join(FLAGS.work_dir, name, "graph.pb")}',
          f'--summaries_dir={os.path.join(FLAGS.work_dir, name, "logs")}']


def load_flowers():
  """The flower photos: (folder, labels, photos with digests).

  With --photos, that many of them (in turn from each class), linked into a
  folder under --work_dir.
  """
  labels, flowers = images.find_photos(FLAGS.flowers)
  flowers, _ = images.digest_photos(flowers)
  if not FLAGS.photos:
    return FLAGS.flowers, labels, flowers
  folder = data.linked_subset(data.every_class(flowers, FLAGS.photos),
                              FLAGS.flowers, fresh(f'flowers{FLAGS.photos}'))
  labels, flowers = images.find_photos(folder)
  return folder, labels, images.digest_photos(flowers)[0]


def main(argv):
  del argv
  cli.quiet_library_logs()
  if not os.path.isdir(FLAGS.flowers) or not os.path.isfile(FLAGS.weights):
    sys.exit(f'bench: error: {FLAGS.flowers} or {FLAGS.weights} is missing; '
             'the benchmark needs ../shared/data beside the repository.')
  table = report.Table(FLAGS.repeats)
  started = time.monotonic()
  cores = measure.cores()
  fresh('caches')
  backbone = backbones.load_backbone(BACKBONE, keras_weights=FLAGS.weights)
  flowers_dir, labels, flowers = load_flowers()
  split = images.split_photos(flowers, testing_percentage=10,
                              validation_percentage=10)
  suffix = f'{FLAGS.photos}' if FLAGS.photos else ''

  logging.info('Generating 12 MP photos (once)...')
  large_dir = data.large_photos(split['testing'], flowers_dir,
                                os.path.join(FLAGS.work_dir, 'large' + suffix))
  def large_path(photo):
    return os.path.join(large_dir, os.path.relpath(photo.path, flowers_dir))
  distinct = len({p.digest for p in flowers})  # Each is computed once.
  large_count = len({p.digest for p in split['testing']})
  large_vectors = {}
  batch = config.DEFAULT_BATCH_SIZE
  pixels = np.stack(list(decode.load_images(
      [p.path for p in flowers[::31]], backbone.image_size)))
  baseline_paths = [p.path for p in data.every_class(
      flowers, FLAGS.baseline_photos)]
  large_paths = [large_path(p) for p in data.every_class(
      split['testing'], FLAGS.large_photos)]

  def cache_run(folder, name, expected):
    stage = measure.cache_stage(folder, backbone, fresh('caches', name))
    assert stage.result.computed == expected, (stage.result.computed, expected)
    return stage

  # Interleaved, so that a slow spell of a shared machine hits every figure.
  samples = collections.defaultdict(list)
  for r in range(FLAGS.repeats):
    logging.info('Cold cache stage and its references, round %d of %d...',
                 r + 1, FLAGS.repeats)
    for size in (1, batch, 32):
      rate, cpu = measure.backbone_limit(backbone, pixels, batch_size=size)
      samples[f'limit{size}'].append(rate)
      samples[f'cpu{size}'].append(cpu)
    stage = cache_run(flowers_dir, 'flowers', distinct)
    samples['flowers'].append(stage.seconds)
    samples['flowers_compute'].append(stage.compute_seconds)
    seconds, _, result = cache_run(large_dir, 'large', large_count)
    large_vectors.update(zip((p.path for p in result.photos), result.vectors))
    samples['large'].append(seconds)
    samples['baseline'].append(measure.one_at_a_time(backbone, baseline_paths))
  med = {name: statistics.median(values) for name, values in samples.items()}
  limit = med[f'limit{batch}']
  cache_seconds = med['flowers']
  cache_rate = distinct / cache_seconds
  large_rate = large_count / med['large']
  for size in (batch, 1, 32):
    table.speed(f'backbone limit: decoded 224x224 tensors, batch {size}'
                + ('' if size == batch else ' (for comparison)'),
                med[f'limit{size}'])
  table.speed(f'cache stage, {len(flowers):,} flower photos ({distinct:,} '
              'distinct)', cache_rate, limit, 'backbone limit', 0.9)
  table.speed(f'cache stage, {large_count} distinct photos of 12 MP '
              '(4000x3000 JPEG)', large_rate, limit, 'backbone limit', 0.8)
  table.speed(f'one image at a time (retrain.py way), {len(baseline_paths)} '
              'flower photos of every class', med['baseline'])
  table.ratio('cache stage / one image at a time, flowers', cache_rate,
              med['baseline'], 1.2)
  large_baseline = measure.one_at_a_time(backbone, large_paths)
  table.speed(f'one image at a time, {len(large_paths)} photos of 12 MP '
              'of every class (one run)', large_baseline)
  table.ratio('cache stage / one image at a time, 12 MP', large_rate,
              large_baseline, None)

  # The profile behind the cache stage's ratios: CPU time per image. The
  # cores cannot run more than cores * 1000 / (backbone + decode) images/s.
  backbone_cpu = med[f'cpu{batch}']
  for name, paths in (('flower photo', baseline_paths),
                      ('12 MP photo', large_paths)):
    decode_cpu = measure.decode_cpu(paths, backbone.image_size)
    bound = cores * 1000 / (backbone_cpu + decode_cpu)
    table.speed(f'CPU bound, {name}: {cores} cores / (backbone '
                f'{backbone_cpu:.1f} + decode {decode_cpu:.1f} CPU ms per '
                'image)', bound, limit, 'backbone limit')

  logging.info('Head training...')
  cached = measure.cache_stage(flowers_dir, backbone, os.path.join(
      FLAGS.work_dir, 'caches', 'flowers')).result
  rows = {p.digest: v for p, v in zip(cached.photos, cached.vectors)}
  def vectors(members):
    return (np.stack([rows[p.digest] for p in members]),
            np.array([p.label for p in members], np.int32))
  defaults = config.RetrainConfig(image_dir='-')
  schedule = head_lib.Schedule(
      defaults.how_many_training_steps, defaults.learning_rate,
      defaults.train_batch_size, defaults.eval_step_interval,
      defaults.validation_batch_size)
  heads = []
  def train():
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as logs:
      heads.append(head_lib.train_head(
          vectors(split['training']), vectors(split['validation']),
          num_classes=len(labels), schedule=schedule, seed=0, summaries_dir=logs))
    return time.perf_counter() - start
  with measure.logs_to_devnull():  # Formatted as in a run, but not shown here.
    head_seconds = median_of(train)
  table.seconds(f'head training, {schedule.steps} steps of '
                f'{schedule.train_batch_size}, {len(flowers):,} vectors',
                head_seconds, cache_seconds, 'cache stage time', 0.05,
                at_most=True)

  logging.info('Accuracy, reduced-scale vs full JPEG decode...')
  head = heads[-1]
  test_x, test_y = vectors(split['testing'])
  test_paths = [p.path for p in split['testing']]
  full_x = measure.vectors_of(backbone, test_paths, reduced=False)
  large_reduced = np.stack([large_vectors[large_path(p)]
                            for p in split['testing']])
  large_full = measure.vectors_of(
      backbone, [large_path(p) for p in split['testing']], reduced=False)
  for name, reduced_x, full_x_ in (('flower test photos', test_x, full_x),
                                   ('12 MP versions of them', large_reduced,
                                    large_full)):
    table.accuracy(f'test accuracy, {name} (N={len(test_y)})',
                   measure.accuracy(head, reduced_x, test_y),
                   measure.accuracy(head, full_x_, test_y))

  logging.info('int8 backbone and .tflite exports...')
  label_paths = [p.path for p in data.every_class(flowers, FLAGS.label_photos)]
  int8.run(table, backbone=backbone, flowers_dir=flowers_dir,
           flowers=flowers, split=split, pixels=pixels,
           work_dir=FLAGS.work_dir, repeats=FLAGS.repeats, float_head=head,
           float_accuracy=measure.accuracy(head, test_x, test_y),
           schedule=schedule, retrain_args=retrain_args,
           label_paths=label_paths, decode_paths=baseline_paths, cores=cores)

  logging.info('Warm reruns...')
  import_seconds = median_of(lambda: measure.wall_time(
      [sys.executable, '-c', 'import tensorflow'])[0])
  table.seconds('python -c "import tensorflow"', import_seconds)
  warm_cache = median_of(lambda: measure.cache_stage(
      flowers_dir, backbone,
      os.path.join(FLAGS.work_dir, 'caches', 'flowers')).seconds)
  table.seconds(f'cache stage, {len(flowers):,} photos all cached',
                warm_cache, 2.0, '2 s', 1.0, at_most=True)
  fresh('flowers')
  args = retrain_args(flowers_dir, 'flowers')
  table.seconds('whole retrain.py run, bottlenecks cached, --force (one run)',
                measure.wall_time(args + ['--force'])[0])
  unchanged = median_of(lambda: measure.wall_time(args)[0])
  table.seconds('whole retrain.py run, nothing changed (model kept)',
                unchanged, import_seconds + 5, 'import time + 5 s', 1.0,
                at_most=True)

  plus_dir = data.linked_copy(flowers_dir, fresh('plus'))
  fresh('flowers_plus')
  plus_args = retrain_args(plus_dir, 'flowers_plus')
  measure.wall_time(plus_args)
  new_count = max(1, len(flowers) // 100)
  new_pool = data.every_class(flowers, len(flowers))  # Distinct, every class.
  rounds = iter(range(2 * FLAGS.repeats))
  def new_photos():
    r = next(rounds)
    return data.add_new_photos(new_pool[r * new_count:(r + 1) * new_count],
                               flowers_dir, plus_dir, f'r{r}')
  new_compute = []  # Their compute, timed inside the stage.
  def cache_with_new():
    new_photos()
    stage = measure.cache_stage(plus_dir, backbone, os.path.join(
        FLAGS.work_dir, 'caches', 'flowers_plus'))
    assert stage.result.computed == new_count, stage.result.computed
    new_compute.append(stage.compute_seconds)
    return stage.seconds
  new_cache = median_of(cache_with_new)
  table.seconds(f'cache stage, {new_count} new photos (1%) + '
                f'{len(flowers):,} cached (computes exactly {new_count})',
                new_cache)
  table.speed(f'the {new_count} new photos alone: {new_count} / their compute '
              'time (decode, backbone, journal) timed inside the stage above',
              new_count / statistics.median(new_compute),
              distinct / med['flowers_compute'], 'cold cache stage, same part')
  def retrain_with_new():
    new_photos()
    return measure.wall_time(plus_args)[0]
  table.seconds(f'whole retrain.py run, {new_count} new photos (retrains)',
                median_of(retrain_with_new))

  logging.info('label_image...')
  model = predict.load_saved_model(os.path.join(FLAGS.work_dir, 'flowers',
                                                'model'))
  # Interleaved with the backbone limit, as the cache stage's rounds are.
  label_rates, label_limits = [], []
  for _ in range(FLAGS.repeats):
    label_limits.append(measure.backbone_limit(backbone, pixels,
                                               batch_size=batch)[0])
    label_rates.append(measure.label_folder(model, label_paths))
  label_limit = statistics.median(label_limits)
  table.speed(f'backbone limit, batch {batch}, measured between the '
              'label_image runs', label_limit)
  table.speed(f'label_image over a folder, {len(label_paths)} photos',
              statistics.median(label_rates), label_limit,
              'backbone limit', 0.8)
  single = median_of(lambda: measure.wall_time([
      sys.executable, 'label_image.py', f'--image={flowers[0].path}',
      f'--saved_model_dir={os.path.join(FLAGS.work_dir, "flowers", "model")}']
  )[0])
  table.seconds('label_image.py, one photo (whole process)', single,
                import_seconds, 'import time', None)

  logging.info('Memory (%s generated photos, once)...', f'{FLAGS.many:,}')
  backbone_args = [BACKBONE, FLAGS.weights]
  memory = {}
  for count, seed in ((FLAGS.few, 1), (FLAGS.many, 2)):
    folder = data.many_photos(
        os.path.join(FLAGS.work_dir, f'many{count}'), count,
        classes=len(labels), seed=seed)
    memory[count] = measure.child_cache_stage(
        folder, fresh('caches', f'many{count}'), backbone_args)
    assert memory[count]['computed'] == count, memory[count]
  table.memory(f'cache stage peak RSS, {FLAGS.few:,} photos',
               memory[FLAGS.few])
  table.memory(f'cache stage peak RSS, {FLAGS.many:,} photos',
               memory[FLAGS.many], memory[FLAGS.few])

  table.print(machine=report.machine(cores), seconds=time.monotonic() - started)


if __name__ == '__main__':
  app.run(main)
