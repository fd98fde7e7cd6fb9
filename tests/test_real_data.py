"""Real photos and real ImageNet weights from ../shared/data.

These tests fail, never skip, when ../shared/data is missing: they are the ones
that prove the pipeline reaches real accuracy. About 3 minutes on 2 cores.
"""

import collections
import json
import logging
import os
import pathlib
import subprocess
import sys

import conftest
import pytest
import tensorflow as tf

from bottleneck.export import formats
from bottleneck.data import images
from bottleneck.run import release

FLOWERS = os.path.join(conftest.SHARED_DATA, 'flower_photos')
WEIGHTS = os.path.join(conftest.SHARED_DATA, 'weights',
                       'mobilenet_v2_1.0_224_no_top.weights.h5')
LEGACY_WEIGHTS = os.path.join(
    conftest.SHARED_DATA, 'weights',
    'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared/data/README.md: an honest pipeline clears 0.85 with these weights;
# random weights reach about 0.25-0.30.
ACCURACY_FLOOR = 0.85


@pytest.fixture(scope='module', autouse=True)
def shared_data():
  for path in (FLOWERS, WEIGHTS, LEGACY_WEIGHTS):
    if not os.path.exists(path):
      pytest.fail(f'{path} is missing: the real-data tests need ../shared/data '
                  'beside the repository (see ../shared/data/README.md).')


def split_of_flowers():
  _, photos = images.find_photos(FLOWERS)
  photos, skipped = images.digest_photos(photos)
  assert not skipped
  return photos, images.split_photos(photos, testing_percentage=10,
                                     validation_percentage=10)


def test_duplicate_sunflowers_stay_on_one_side_of_the_split():
  photos, splits = split_of_flowers()
  where = {p.path: name for name, members in splits.items() for p in members}
  copies = collections.defaultdict(list)
  for p in photos:
    copies[p.digest].append(p.path)
  groups = [paths for paths in copies.values() if len(paths) > 1]
  assert len(groups) >= 2  # The README names two pairs in sunflowers/.
  for paths in groups:
    assert len({where[p] for p in paths}) == 1, paths


def test_flowers_reach_the_floor_and_label_image_agrees(tmp_path, capsys,
                                                        caplog):
  caplog.set_level(logging.INFO)
  outputs = conftest.output_flags(tmp_path)
  flags = dict(image_dir=FLOWERS, tfhub_module='keras:mobilenet_v2',
               keras_weights=WEIGHTS, **outputs)
  assert conftest.run_retrain(**flags) == 0
  with open(os.path.join(outputs['saved_model_dir'], 'assets',
                         formats.METADATA_FILE)) as f:
    accuracy = json.load(f)['test_accuracy']
  assert accuracy >= ACCURACY_FLOOR
  assert 'computed 1,998' in caplog.text  # 2,000 photos, two are copies.
  # Only the model folder's classifier.tflite runs other code than the
  # training vectors' (LiteRT): it alone is measured, and agrees.
  with open(os.path.join(outputs['saved_model_dir'],
                         release.METRICS_FILE)) as f:
    exports = json.load(f)['exports']
  assert set(exports) == {'saved_model_tflite'}
  assert abs(exports['saved_model_tflite']['test_accuracy'] - accuracy) <= 0.01

  caplog.clear()
  assert conftest.run_retrain(**flags) == 0
  assert 'reused 1,998, computed 0' in caplog.text  # Contents, not photos.

  _, splits = split_of_flowers()
  test_photos = splits['testing']
  labels = open(outputs['output_labels']).read().split('\n')
  answers = {}
  for form, model_flags in (  # The folder: its classifier.tflite.
      ('saved_model', dict(saved_model_dir=outputs['saved_model_dir'])),
      ('graph', dict(graph=outputs['output_graph'],
                     labels=outputs['output_labels']))):
    capsys.readouterr()
    assert conftest.run_label_image(
        *[p.path for p in test_photos[1:]], image=test_photos[0].path,
        output_format='json', top_k=1, **model_flags) == 0
    answers[form] = [labels.index(r['predictions'][0]['label'])
                     for r in json.loads(capsys.readouterr().out)]
    correct = sum(a == p.label for a, p in zip(answers[form], test_photos))
    # The same decoder and the same weights: the same answers, up to float
    # rounding that could flip a near tie.
    assert abs(correct / len(test_photos) - accuracy) <= 0.01, model_flags

  # serving_default decodes the files in the graph as label_image.py does,
  # and the SavedModel gives the answers of the folder's classifier.tflite.
  serve = tf.saved_model.load(
      outputs['saved_model_dir']).signatures['serving_default']
  served = []
  for start in range(0, len(test_photos), 32):
    files = [pathlib.Path(p.path).read_bytes()
             for p in test_photos[start:start + 32]]
    served += list(serve(image_bytes=tf.constant(files))['probabilities']
                   .numpy().argmax(axis=1))
  assert served == answers['saved_model']


def test_int8_flowers_reach_the_floor_and_the_tflite_agrees(tmp_path, capsys):
  outputs = conftest.output_flags(tmp_path)
  tflite_path = str(tmp_path / 'model_int8.tflite')
  assert conftest.run_retrain(
      image_dir=FLOWERS, tfhub_module='keras:mobilenet_v2',
      keras_weights=WEIGHTS, backbone_precision='int8',
      tflite_int8_output_file=tflite_path, **outputs) == 0
  with open(os.path.join(outputs['saved_model_dir'],
                         release.METRICS_FILE)) as f:
    metrics = json.load(f)
  assert metrics['backbone']['precision'] == 'int8'
  assert metrics['test_accuracy'] >= ACCURACY_FLOOR
  assert set(metrics['exports']) == {'saved_model', 'saved_model_tflite',
                                     'frozen_graph', 'tflite_int8'}
  for form in metrics['exports'].values():
    assert form['test_accuracy'] >= ACCURACY_FLOOR, metrics['exports']

  _, splits = split_of_flowers()
  test_photos = splits['testing']
  capsys.readouterr()
  assert conftest.run_label_image(
      *[p.path for p in test_photos[1:]], image=test_photos[0].path,
      output_format='json', top_k=1, tflite_model=tflite_path) == 0
  records = json.loads(capsys.readouterr().out)
  labels = metrics['labels']
  correct = sum(labels.index(r['predictions'][0]['label']) == p.label
                for r, p in zip(records, test_photos))
  # The int8 .tflite computes the very vectors the head was trained on.
  assert abs(correct / len(test_photos) - metrics['test_accuracy']) <= 0.01


def test_imagenet_weights_resolve_through_keras_home(tmp_path):
  """KERAS_HOME is read when Keras is imported, so this runs retrain.py."""
  (tmp_path / 'keras' / 'models').mkdir(parents=True)
  os.symlink(LEGACY_WEIGHTS, tmp_path / 'keras' / 'models' /
             os.path.basename(LEGACY_WEIGHTS))
  for name in ('daisy', 'roses'):
    (tmp_path / 'photos' / name).mkdir(parents=True)
    for file_name in sorted(os.listdir(os.path.join(FLOWERS, name)))[:4]:
      os.symlink(os.path.join(FLOWERS, name, file_name),
                 tmp_path / 'photos' / name / file_name)
  env = dict(os.environ, KERAS_HOME=str(tmp_path / 'keras'))
  runs = []
  for weights in ('imagenet', WEIGHTS):
    runs.append(subprocess.run(
        [sys.executable, 'retrain.py', f'--image_dir={tmp_path / "photos"}',
         '--tfhub_module=keras:mobilenet_v2', f'--keras_weights={weights}',
         f'--bottleneck_dir={tmp_path / "bn"}',
         f'--saved_model_dir={tmp_path / "model"}',
         f'--output_labels={tmp_path / "labels.txt"}', '--output_graph=',
         '--summaries_dir=', '--how_many_training_steps=5'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600))
    assert runs[-1].returncode == 0, runs[-1].stderr[-2000:]
  assert 'computed 8' in runs[0].stderr
  # The legacy file and the Keras 3 file hold the same weights: one identity.
  assert 'reused 8, computed 0' in runs[1].stderr


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
