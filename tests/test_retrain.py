"""End-to-end tests of retrain.py and label_image.py through main(), in-process."""

import json
import logging
import math
import os
import pathlib
import subprocess
import sys

import conftest
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from bottleneck import errors
from bottleneck.export import formats

# A quick schedule for the 3-feature pooling backbone: its features are small
# (colour means in [0, 1]), so it wants a larger step than retrain.py's 0.01.
FAST = dict(how_many_training_steps=300, learning_rate=1.0)


def exported_metadata(saved_model_dir):
  with open(os.path.join(saved_model_dir, 'assets', formats.METADATA_FILE)) as f:
    return json.load(f)


def test_retrain_then_label_image(tmp_path, hub_module, outputs, capsys,
                                  caplog):
  caplog.set_level(logging.INFO)
  photos = conftest.write_photos(tmp_path / 'photos')
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module, **outputs, **FAST) == 0
  meta = exported_metadata(outputs['saved_model_dir'])
  assert meta['test_accuracy'] >= 0.9
  assert meta['labels'] == ['blue', 'green', 'red']
  assert meta['image_size'] == [32, 32]
  assert 'Final test accuracy = 100.0%' in caplog.text
  with open(outputs['output_labels']) as f:
    assert f.read() == 'blue\ngreen\nred\n'

  capsys.readouterr()
  assert conftest.run_label_image(
      image=photos['green'][0],
      saved_model_dir=outputs['saved_model_dir']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 3  # --top_k 5, capped at the 3 classes.
  assert lines[0].split()[0] == 'green'
  scores = [float(line.split()[-1]) for line in lines]
  assert scores == sorted(scores, reverse=True) and scores[0] > 0.9

  # The frozen graph keeps retrain.py's contract and gives the same answer.
  assert conftest.run_label_image(
      image=photos['red'][1], graph=outputs['output_graph'],
      labels=outputs['output_labels']) == 0
  assert capsys.readouterr().out.splitlines()[0].split()[0] == 'red'


def test_frozen_graph_works_for_a_tf1_session_client(tmp_path, hub_module,
                                                     outputs):
  """The way clients of retrain.py's graph ran it: import, feed, fetch."""
  conftest.write_photos(tmp_path / 'photos')
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module, **outputs, **FAST) == 0
  graph_def = tf.compat.v1.GraphDef()
  with open(outputs['output_graph'], 'rb') as f:
    graph_def.ParseFromString(f.read())
  graph = tf.Graph()
  with graph.as_default():
    tf.import_graph_def(graph_def)  # Under the default name scope 'import/'.
  images = np.zeros([2, 32, 32, 3], np.float32)
  images[0, ..., 2] = 0.8  # Blue.
  images[1, ..., 0] = 0.8  # Red.
  with tf.compat.v1.Session(graph=graph) as session:
    probabilities = session.run('import/final_result:0',
                                {'import/Placeholder:0': images})
  assert probabilities.argmax(axis=1).tolist() == [0, 2]


def chance_ceiling(n, p, tail=1e-6):
  """Accuracy that n independent guesses, each right with probability p, reach
  with probability at most `tail` (from the binomial distribution)."""
  reached = 0.0
  for k in range(n, -1, -1):
    reached += math.comb(n, k) * p ** k * (1 - p) ** (n - k)
    if reached > tail:
      return (k + 1) / n
  return 0.0


def test_random_labels_do_not_reach_the_accuracy_floor(tmp_path, outputs,
                                                       caplog):
  """Photos of random noise in 10 classes: the folder names carry no signal.

  The backbone hands the head every pixel (768 numbers for 280 training
  photos), so the head learns its training photos by heart: a test photo that
  leaked into training would be classified right, and a fifth of the 500 test
  photos leaking lifts the accuracy well above what chance reaches (a tenth
  just does). Every class has the same file names, hence the same number of
  test photos, so whatever the head predicts, each test photo is right with
  probability 1/10 on average, and the count of right ones is no more spread
  than a binomial's: a head that learnt nothing from the test photos stays
  below chance_ceiling but with probability 1e-6.
  """
  caplog.set_level(logging.INFO)
  classes, per_class, size = 10, 80, 16
  rng = np.random.default_rng(1)
  for c in range(classes):
    os.makedirs(tmp_path / 'photos' / f'class_{c}')
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(
          tmp_path / 'photos' / f'class_{c}' / f'noise_{i:03d}.png')

  def every_pixel(images, axis):
    del axis  # Not pooled: one feature per pixel and channel.
    return tf.reshape(images - 0.5, [-1, size * size * 3])

  pixels = conftest.save_feature_module(tmp_path / 'pixels', size=size,
                                        reduce=every_pixel)
  assert conftest.run_retrain(
      image_dir=str(tmp_path / 'photos'), tfhub_module=pixels, **outputs,
      testing_percentage=50, validation_percentage=10,
      how_many_training_steps=300, learning_rate=0.5) == 0
  meta = exported_metadata(outputs['saved_model_dir'])
  tested = meta['split_sizes']['testing']
  assert tested >= 300 and tested % classes == 0, meta['split_sizes']
  ceiling = chance_ceiling(tested, 1 / classes)
  assert ceiling < 0.25  # Near chance (0.1).
  assert meta['test_accuracy'] < ceiling, (meta['test_accuracy'], ceiling)
  # It does learn its training photos, so a leak would show.
  train_accuracy = [float(line.split('= ')[1].rstrip('%'))
                    for line in caplog.messages if 'Train accuracy' in line]
  assert train_accuracy[-1] >= 95, train_accuracy[-5:]


def test_second_run_computes_nothing_and_keeps_old_logs(photo_flags, outputs,
                                                        caplog):
  caplog.set_level(logging.INFO)
  flags = dict(photo_flags, **FAST)
  assert conftest.run_retrain(**flags) == 0
  assert 'reused 0, computed 60' in caplog.text
  caplog.clear()
  assert conftest.run_retrain(force=True, **flags) == 0
  assert 'reused 60, computed 0' in caplog.text
  assert 'Final test accuracy' in caplog.text  # --force trained again.
  runs = os.listdir(outputs['summaries_dir'])
  assert len(runs) == 2
  for run in runs:
    assert os.listdir(os.path.join(outputs['summaries_dir'], run, 'train'))


def test_model_in_place_is_kept_only_while_nothing_changed(tmp_path, photo_flags,
                                                          outputs, caplog):
  caplog.set_level(logging.INFO)
  flags = dict(photo_flags, **FAST)
  assert conftest.run_retrain(**flags) == 0
  exported = conftest.model_files(outputs)

  def run(**changes):
    caplog.clear()
    assert conftest.run_retrain(**dict(flags, **changes)) == 0
    return 'keeping it. Pass --force to retrain anyway.' in caplog.text

  assert run() and conftest.model_files(outputs) == exported  # Not even rewritten.
  assert run(bottleneck_dir=str(tmp_path / 'other_cache'),
             summaries_dir='', cache_batch_size=7)  # Do not shape the model.
  assert not run(learning_rate=0.5)  # A flag that shapes training.
  assert run(learning_rate=0.5)
  first_class = sorted(conftest.COLOURS)[0]
  Image.new('RGB', (40, 30), conftest.COLOURS[first_class]).save(
      tmp_path / 'photos' / first_class / 'new.jpg')  # One photo more.
  assert not run(learning_rate=0.5)
  os.remove(outputs['output_graph'])
  assert not run(learning_rate=0.5)
  pathlib.Path(outputs['output_labels']).write_text('edited\n')
  assert not run(learning_rate=0.5)
  assert run(learning_rate=0.5)
  classifier = pathlib.Path(outputs['saved_model_dir'], formats.CLASSIFIER_FILE)
  classifier.write_bytes(b'damaged')
  assert not run(learning_rate=0.5)
  assert run(learning_rate=0.5)
  # An export of a version before classifier.tflite is exported again, so
  # that label_image.py gets its fast path.
  os.remove(classifier)
  meta = pathlib.Path(outputs['saved_model_dir'], 'assets',
                      formats.METADATA_FILE)
  values = json.loads(meta.read_text())
  del values[formats.CLASSIFIER_DIGEST]
  meta.write_text(json.dumps(values))
  assert not run(learning_rate=0.5) and classifier.is_file()
  assert run(learning_rate=0.5)
  assert not run(learning_rate=0.5, force=True)


def test_same_seed_repeats_a_run_exactly(tmp_path, hub_module, outputs):
  conftest.write_photos(tmp_path / 'photos')
  flags = dict(image_dir=str(tmp_path / 'photos'), tfhub_module=hub_module,
               **outputs, how_many_training_steps=50, learning_rate=1.0)
  weights = []
  for _ in range(2):
    assert conftest.run_retrain(force=True, **flags) == 0
    model = tf.saved_model.load(outputs['saved_model_dir'])
    weights.append(model.head_weights.numpy())
  np.testing.assert_array_equal(weights[0], weights[1])


def test_misclassified_test_images_and_sampled_batches(tmp_path, hub_module,
                                                     outputs, caplog):
  caplog.set_level(logging.INFO)
  conftest.write_photos(tmp_path / 'photos', per_class=30)
  # Two classes of one colour: the model must get some test photos wrong.
  conftest.write_photos(tmp_path / 'photos', {'twin': conftest.COLOURS['red']},
                        per_class=30, seed=5)
  assert conftest.run_retrain(
      image_dir=str(tmp_path / 'photos'), tfhub_module=hub_module,
      print_misclassified_test_images=True, test_batch_size=5,
      validation_batch_size=-1, **outputs, **FAST) == 0
  assert 'Final test accuracy' in caplog.text and '(N=5)' in caplog.text
  listed = caplog.text.split('=== MISCLASSIFIED TEST IMAGES ===')[1]
  assert 'photo_' in listed and (' red' in listed or ' twin' in listed)


def test_saved_model_serves_encoded_images(tmp_path, hub_module, outputs):
  photos = conftest.write_photos(tmp_path / 'photos')
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module, **outputs, **FAST) == 0
  model = tf.saved_model.load(outputs['saved_model_dir'])
  with open(photos['blue'][0], 'rb') as f, open(photos['red'][0], 'rb') as g:
    data = tf.constant([f.read(), g.read()])
  probabilities = model.signatures['serving_default'](image_bytes=data)[
      'probabilities'].numpy()
  assert probabilities.shape == (2, 3)
  assert probabilities.argmax(axis=1).tolist() == [0, 2]  # blue, red
  assert model.labels().numpy().tolist() == [b'blue', b'green', b'red']


def test_keras_backbone_end_to_end(tmp_path, outputs):
  conftest.write_photos(tmp_path / 'photos', per_class=6)
  assert conftest.run_retrain(
      image_dir=str(tmp_path / 'photos'), tfhub_module='keras:mobilenet_v2',
      keras_weights='none', image_size=96, how_many_training_steps=5,
      **outputs) == 0
  assert exported_metadata(outputs['saved_model_dir'])['image_size'] == [96, 96]
  assert conftest.run_label_image(
      image=str(tmp_path / 'photos' / 'red'),
      saved_model_dir=outputs['saved_model_dir']) == 0


@pytest.mark.parametrize('flag_values, code, message', [
    (dict(testing_percentage=-1), errors.EXIT_USAGE, '--testing_percentage'),
    (dict(testing_percentage=60, validation_percentage=40), errors.EXIT_USAGE,
     'below 100'),
    (dict(train_batch_size=0), errors.EXIT_USAGE, '--train_batch_size'),
    (dict(cache_batch_size=-1), errors.EXIT_USAGE, '--cache_batch_size'),
    (dict(backbone_runtime='gpu'), errors.EXIT_USAGE, '--backbone_runtime'),
    (dict(backbone_runtime='tensorflow', backbone_precision='int8'),
     errors.EXIT_USAGE, '--backbone_runtime'),
    (dict(min_test_accuracy=150), errors.EXIT_USAGE, '--min_test_accuracy'),
    (dict(tfhub_module='keras:no_such_net'), errors.EXIT_USAGE,
     'Known keras: backbones'),
    (dict(tfhub_module='/no/such/folder'), errors.EXIT_USAGE,
     'existing SavedModel folder'),
])
def test_bad_flags_are_refused(tmp_path, hub_module, outputs, capsys,
                               flag_values, code, message):
  conftest.write_photos(tmp_path / 'photos', per_class=3)
  flags = dict(image_dir=str(tmp_path / 'photos'), tfhub_module=hub_module,
               **outputs)
  flags.update(flag_values)
  assert conftest.run_retrain(**flags) == code
  err = capsys.readouterr().err
  assert err.startswith('retrain.py: error: ') and message in err
  assert not os.path.exists(outputs['saved_model_dir'])
  cache_dir = outputs['bottleneck_dir']
  assert not os.path.isdir(cache_dir) or os.listdir(cache_dir) == ['.lock']


def test_never_replaces_a_folder_that_is_not_an_export(tmp_path, hub_module,
                                                       outputs, capsys):
  conftest.write_photos(tmp_path / 'photos', per_class=3)
  documents = tmp_path / 'Documents'
  documents.mkdir()
  (documents / 'thesis.txt').write_text('irreplaceable')
  outputs['saved_model_dir'] = str(documents)
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module,
                              **outputs) == errors.EXIT_USAGE
  assert 'is not a model exported by retrain.py' in capsys.readouterr().err
  assert (documents / 'thesis.txt').read_text() == 'irreplaceable'


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, hub_module,
                                                      outputs, capsys):
  conftest.write_photos(tmp_path / 'photos', per_class=3)
  (tmp_path / 'file').write_text('')
  outputs['bottleneck_dir'] = str(tmp_path / 'file' / 'bottlenecks')
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module,
                              **outputs) == errors.EXIT_USAGE
  err = capsys.readouterr().err
  assert err.startswith('retrain.py: error: cannot use ') and 'file' in err
  assert len(err.strip().splitlines()) == 1


def test_malformed_flags_exit_with_the_usage_code():
  # Flag syntax is checked by app.run, before main(): run the real command.
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for script, flag in (('retrain.py', '--learning_rate=fast'),
                       ('label_image.py', '--output_format=xml')):
    run = subprocess.run([sys.executable, script, flag], cwd=repo,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == errors.EXIT_USAGE
    assert f'{script}: error: flag {flag}' in run.stderr


def test_data_problems_exit_without_a_model(tmp_path, hub_module, outputs,
                                            capsys):
  flags = dict(tfhub_module=hub_module, **outputs)
  assert conftest.run_retrain(image_dir=str(tmp_path / 'missing'),
                              **flags) == errors.EXIT_NO_DATA
  assert 'not found' in capsys.readouterr().err

  conftest.write_photos(tmp_path / 'one', {'only': (1, 2, 3)}, per_class=3)
  assert conftest.run_retrain(image_dir=str(tmp_path / 'one'),
                              **flags) == errors.EXIT_NO_DATA
  assert 'at least two' in capsys.readouterr().err

  conftest.write_photos(tmp_path / 'clash', {'Sun_Flower': (1, 2, 3),
                                             'sun flower': (3, 2, 1)},
                        per_class=3)
  assert conftest.run_retrain(image_dir=str(tmp_path / 'clash'),
                              **flags) == errors.EXIT_NO_DATA
  err = capsys.readouterr().err
  assert "'Sun_Flower'" in err and "'sun flower'" in err

  # Two classes, one of which has no file that can be decoded.
  conftest.write_photos(tmp_path / 'broken', {'red': (200, 40, 40),
                                              'blue': (40, 40, 210)},
                        per_class=3)
  for name in os.listdir(tmp_path / 'broken' / 'red'):
    (tmp_path / 'broken' / 'red' / name).write_text('not a photo')
  assert conftest.run_retrain(image_dir=str(tmp_path / 'broken'),
                              **flags) == errors.EXIT_NO_DATA
  assert 'Only 1 class(es) have images that can be decoded' in (
      capsys.readouterr().err)
  assert not os.path.exists(outputs['saved_model_dir'])


def test_a_class_that_cannot_be_used_is_left_out(tmp_path, hub_module, outputs,
                                                 caplog):
  caplog.set_level(logging.WARNING)
  conftest.write_photos(tmp_path / 'photos', per_class=6)
  for name in os.listdir(tmp_path / 'photos' / 'red'):
    (tmp_path / 'photos' / 'red' / name).write_text('not a photo')
  os.makedirs(tmp_path / 'photos' / 'empty')
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module, **outputs, **FAST) == 0
  assert "Leaving out class 'red'" in caplog.text
  assert 'Leaving out the class folder' in caplog.text
  assert 'Skipped 6 file(s)' in caplog.text
  assert pathlib.Path(outputs['output_labels']).read_text() == 'blue\ngreen\n'


def test_undecodable_files_are_skipped_and_listed(tmp_path, hub_module,
                                                  outputs, caplog):
  caplog.set_level(logging.INFO)
  conftest.write_photos(tmp_path / 'photos')
  (tmp_path / 'photos' / 'red' / 'notes.jpg').write_text('<html></html>')
  (tmp_path / 'photos' / 'red' / 'empty.png').write_bytes(b'')
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module, **outputs, **FAST) == 0
  assert 'Skipped 2 file(s)' in caplog.text
  assert 'notes.jpg: not an image' in caplog.text
  assert 'empty.png: empty file' in caplog.text


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
