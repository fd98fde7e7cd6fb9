r"""The speed benchmark: every figure of the README's Performance table.

  .venv/bin/python bench/run.py

measures, in this one process (and children it times), with the backbone of the
main job (keras:mobilenet_v2, the weights in ../shared/data): the backbone's own
speed, the cache stage on the flower photos and on 12 MP photos, the
one-image-at-a-time baseline, warm reruns, head training, label_image, the
cache stage's peak memory at 2,000 and 20,000 photos, a fine-tuning run,
the test accuracy
with and without reduced-scale JPEG decoding, and the int8 rows (see
bench/int8.py). Each speed is the median of --repeats runs; the cache stages
and the limits they are divided by are measured in the same rounds (see
bench/rounds.py). Generated photos are kept in --work_dir (about 2 GB) for
the next run; the caches and models there are rebuilt every run. About 30
minutes on 2 cores. A quick check of the code (not of the figures):

  .venv/bin/python bench/run.py --photos 100 --repeats 2 --few 20 --many 40 \
      --baseline_photos 20 --large_photos 5 --label_photos 20 \
      --work_dir /tmp/bench_quick
"""

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
from bench import engines
from bench import int8
from bench import label
from bench import measure
from bench import report
from bench import rounds
from bottleneck.features import backbones
from bottleneck import config
from bottleneck.data import decode
from bottleneck.train import recipes
from bottleneck.data import images

flags.DEFINE_string('work_dir', os.path.join(measure.ROOT, 'bench', '_work'),
                    'Folder for generated photos, caches and models.')
flags.DEFINE_string('flowers', measure.FLOWERS,
                    'The flower photos.')
flags.DEFINE_string('weights', measure.WEIGHTS,
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
                     'labels for its throughput and for the agreement of its '
                     'classifier.tflite with the SavedModel, from every '
                     'class.')
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
  # The layers retrain.py pools by default, so that the in-process figures
  # and the whole-run ones measure the same features.
  backbone = backbones.load_backbone(BACKBONE, keras_weights=FLAGS.weights,
                                     layers=config.DEFAULT_LAYERS)
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
  new_count = max(1, len(flowers) // 100)
  new_pool = data.every_class(flowers, len(flowers))
  sets = rounds.Sets(
      flowers_dir=flowers_dir, distinct=distinct, large_dir=large_dir,
      large_count=len({p.digest for p in split['testing']}),
      pixels=np.stack(list(decode.load_images(
          [p.path for p in flowers[::31]], backbone.image_size))),
      baseline_paths=[p.path for p in data.every_class(
          flowers, FLAGS.baseline_photos)],
      large_paths=[large_path(p) for p in data.every_class(
          split['testing'], FLAGS.large_photos)],
      new_dir=data.linked_copy(flowers_dir, fresh('new')),
      new_photos=lambda i: new_pool[i * new_count:(i + 1) * new_count])

  logging.info('Converting the backbone to int8...')
  int8_backbone, convert_seconds, calibration_used = int8.convert(
      backbone, split['training'], fresh('caches', 'int8_model'))
  logging.info('Choosing the cache stage\'s settings as a first run does...')
  chosen, probe_seconds = engines.choose(
      backbone, int8_backbone, [p.path for p in flowers],
      fresh('caches', 'probe'), cores)
  default_engine = chosen.default
  med, last = rounds.run(sets, backbone=backbone, int8_backbone=int8_backbone,
                         engines=chosen,
                         caches=os.path.join(FLAGS.work_dir, 'caches'),
                         repeats=FLAGS.repeats)
  rounds.float_rows(table, med, sets, photos=len(flowers), cores=cores,
                    engine=default_engine)
  table.seconds('choosing those settings, once per backbone and machine: '
                'the float32 copy converted and checked, runtimes, batch '
                'sizes and threads measured (one run)', probe_seconds)
  int8.speed_rows(table, med, photos=len(flowers), distinct=distinct,
                  cores=cores, convert_seconds=convert_seconds,
                  calibration_used=calibration_used, engine=chosen.int8)

  flowers_cache = os.path.join(FLAGS.work_dir, 'caches', 'flowers')
  engines.agreement_row(table, med, backbone=backbone, engine=default_engine,
                        flowers_dir=flowers_dir, cached_dir=flowers_cache,
                        fresh_dir=fresh('caches', 'flowers_tensorflow'))

  logging.info('Head training...')
  cached = measure.cache_stage(flowers_dir, backbone, flowers_cache,
                               engine=default_engine).result
  rows = {p.digest: v for p, v in zip(cached.photos, cached.vectors)}
  def vectors(members):
    return (np.stack([rows[p.digest] for p in members]),
            np.array([p.label for p in members], np.int32))
  defaults = config.RetrainConfig(image_dir='-')  # The default head recipe.
  heads = []
  def train():
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as logs:
      heads.append(recipes.train_head(
          defaults, vectors(split['training']), vectors(split['validation']),
          num_classes=len(labels), summaries_dir=logs,
          groups=backbone.groups))
    return time.perf_counter() - start
  with measure.logs_to_devnull():  # Formatted as in a run, but not shown here.
    head_seconds = median_of(train)
  table.seconds(f'head training, --head_recipe {defaults.head_recipe}, '
                f'{len(flowers):,} vectors of {backbone.feature_dim:,} '
                'features',
                head_seconds, med['flowers'], 'cache stage time', 0.05,
                at_most=True)

  logging.info('Accuracy, reduced-scale vs full JPEG decode...')
  head = heads[-1]
  test_x, test_y = vectors(split['testing'])
  large_vectors = dict(zip((p.path for p in last['large'].photos),
                           last['large'].vectors))
  full_x = measure.vectors_of(backbone, [p.path for p in split['testing']],
                              reduced=False)
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

  logging.info('int8 accuracy and a whole int8 run...')
  tflite_path = int8.accuracy_and_run(
      table, cached=last['int8'], split=split, float_head=head,
      float_accuracy=measure.accuracy(head, test_x, test_y),
      run_config=defaults, backbone=backbone, flowers_dir=flowers_dir,
      work_dir=FLAGS.work_dir, retrain_args=retrain_args)

  logging.info('Warm reruns...')
  import_seconds = median_of(lambda: measure.wall_time(
      [sys.executable, '-c', 'import tensorflow'])[0])
  table.seconds('python -c "import tensorflow"', import_seconds)
  warm_cache = median_of(lambda: measure.cache_stage(
      flowers_dir, backbone, flowers_cache, engine=default_engine).seconds)
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
  batches = iter(range(FLAGS.repeats, 2 * FLAGS.repeats))  # After the rounds'.
  def retrain_with_new():
    i = next(batches)
    data.add_new_photos(sets.new_photos(i), flowers_dir, plus_dir, f'p{i}')
    return measure.wall_time(plus_args)[0]
  table.seconds(f'whole retrain.py run, {new_count} new photos (retrains)',
                median_of(retrain_with_new))

  # --fine_tune_blocks 1 from nothing cached: both views' records, the linear
  # head, the tuning epochs and every export but the .tflite files.
  fresh('caches', 'flowers_tuned')
  fresh('flowers_tuned')
  table.seconds(f'whole retrain.py run, --fine_tune_blocks 1, nothing cached, '
                f'{len(flowers):,} photos (one run)', measure.wall_time(
                    retrain_args(flowers_dir, 'flowers_tuned') +
                    ['--fine_tune_blocks=1'])[0], 180.0, '3 min', 1.0,
                at_most=True)

  logging.info('label_image...')
  label.label_rows(
      table, backbone=backbone, pixels=sets.pixels,
      model_dir=os.path.join(FLAGS.work_dir, 'flowers', 'model'),
      int8_path=tflite_path, import_seconds=import_seconds,
      paths=[p.path for p in data.every_class(flowers, FLAGS.label_photos)],
      repeats=FLAGS.repeats)

  logging.info('Memory (%s generated photos, once)...', f'{FLAGS.many:,}')
  memory = {}
  for count, seed in ((FLAGS.few, 1), (FLAGS.many, 2)):
    folder = data.many_photos(
        os.path.join(FLAGS.work_dir, f'many{count}'), count,
        classes=len(labels), seed=seed)
    memory[count] = measure.child_cache_stage(
        folder, fresh('caches', f'many{count}'), [BACKBONE, FLAGS.weights])
    assert memory[count]['computed'] == count, memory[count]
  table.memory(f'cache stage peak RSS, {FLAGS.few:,} photos',
               memory[FLAGS.few])
  table.memory(f'cache stage peak RSS, {FLAGS.many:,} photos',
               memory[FLAGS.many], memory[FLAGS.few])

  table.print(machine=f'{report.machine(cores)}; {BACKBONE}, layers '
              f'{", ".join(backbone.layers) or "last"}',
              seconds=time.monotonic() - started)


if __name__ == '__main__':
  app.run(main)
