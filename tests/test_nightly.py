"""Tests of unattended runs: metrics.json, the quality gate, the locks."""

import builtins
import dataclasses
import errno
import json
import logging
import os
import shutil
import sys

from absl.testing import flagsaver
import conftest
import numpy as np
import pytest
import tensorflow as tf

from bottleneck import errors
from bottleneck import predict
from bottleneck.data import images
from bottleneck.run import locks
from bottleneck.run import pipeline
import retrain

FAST = dict(how_many_training_steps=300, learning_rate=1.0)
# Barely trained: one step of retrain.py's SGD at a tiny rate leaves the head
# near chance (the standard recipe has no rate to make small).
POOR = dict(head_recipe='retrain', how_many_training_steps=1,
            learning_rate=1e-6)


def test_metrics_json_and_the_confusion_image(tmp_path, photo_flags, outputs):
  (tmp_path / 'photos' / 'red' / 'broken.jpg').write_text('not a photo')
  assert conftest.run_retrain(**photo_flags, **FAST) == 0
  with open(os.path.join(outputs['saved_model_dir'], 'metrics.json')) as f:
    metrics = json.load(f)
  assert metrics['decision'] == 'published'
  assert metrics['labels'] == ['blue', 'green', 'red']
  assert sum(sum(c.values()) for c in metrics['counts'].values()) == 60
  matrix = np.array(metrics['confusion_matrix'])
  assert matrix.shape == (3, 3)
  assert matrix.sum() == metrics['test_photos'] == sum(
      c['testing'] for c in metrics['counts'].values())
  assert metrics['test_accuracy'] == pytest.approx(np.trace(matrix) /
                                                   matrix.sum())
  for label, row in zip(metrics['labels'], matrix):
    assert metrics['per_class'][label]['support'] == row.sum()
    assert 0 <= metrics['per_class'][label]['recall'] <= 1
  assert metrics['flags']['learning_rate'] == 1.0
  assert metrics['backbone']['feature_dim'] == 3
  assert set(metrics['durations_seconds']) >= {'cache', 'train_and_test'}
  assert metrics['skipped_count'] == 1
  assert metrics['skipped'][0]['path'].endswith('broken.jpg')
  [run] = os.listdir(outputs['summaries_dir'])
  [events] = os.listdir(os.path.join(outputs['summaries_dir'], run, 'test'))
  images = [v for e in tf.compat.v1.train.summary_iterator(
      os.path.join(outputs['summaries_dir'], run, 'test', events))
            for v in e.summary.value if v.HasField('image')]
  assert [v.tag for v in images] == ['confusion_matrix']
  assert images[0].image.encoded_image_string.startswith(b'\x89PNG')


def test_cache_counts_agree_in_the_log_metrics_json_and_the_summary(
    tmp_path, photo_flags, outputs, caplog):
  caplog.set_level(logging.INFO)
  assert conftest.run_retrain(**photo_flags, **FAST) == 0
  red = tmp_path / 'photos' / 'red'
  shutil.copy(red / 'photo_000.jpg', red / 'copy_of_cached.jpg')
  new = conftest.write_photos(tmp_path / 'new', {'red': (210, 30, 30)},
                              per_class=1, seed=9)['red'][0]
  shutil.copy(new, red / 'new.jpg')
  shutil.copy(new, red / 'copy_of_new.jpg')
  caplog.clear()
  with flagsaver.flagsaver(**photo_flags, **FAST):
    summary = pipeline.retrain(retrain.config_from_flags())
  # 63 photos, 61 contents: 60 cached, 1 new; 2 photos are copies.
  assert (summary.reused, summary.computed) == (60, 1)
  assert summary.duplicates == 2
  assert ('Bottlenecks: 63 photos (61 distinct): reused 60, computed 1, could '
          "not decode 0; 2 duplicate(s) of another photo's bytes."
          in caplog.text)
  with open(os.path.join(outputs['saved_model_dir'], 'metrics.json')) as f:
    bottlenecks = json.load(f)['bottlenecks']
  engine = bottlenecks.pop('engine')
  assert bottlenecks == dict(photos=63, distinct=61, reused=60, computed=1,
                             could_not_decode=0, duplicates=2)
  # The first run measured the machine; this one read what it kept.
  assert engine['chosen_by'].startswith('measured on ')


def test_min_test_accuracy_refuses_and_keeps_the_model_in_place(
    photo_flags, outputs, capsys):
  assert conftest.run_retrain(**photo_flags, **FAST) == 0
  published = conftest.model_files(outputs)
  assert conftest.run_retrain(min_test_accuracy=100, **photo_flags,
                              **POOR) == errors.EXIT_QUALITY
  err = capsys.readouterr().err
  assert 'is below --min_test_accuracy 100%' in err
  assert 'was not published' in err
  assert conftest.model_files(outputs) == published
  refused = pipeline.refused_metrics_path(outputs['saved_model_dir'])
  with open(refused) as f:
    assert json.load(f)['decision'].startswith('refused: Final test accuracy')


def test_promote_if_better_keeps_a_better_model_in_place(photo_flags, outputs,
                                                         capsys, caplog):
  caplog.set_level(logging.INFO)
  assert conftest.run_retrain(**photo_flags, **FAST) == 0
  published = conftest.model_files(outputs)
  assert conftest.run_retrain(promote_if_better=True, **photo_flags,
                              **POOR) == errors.EXIT_QUALITY
  assert 'points below the model in place (100.0%)' in capsys.readouterr().err
  assert conftest.model_files(outputs) == published
  # As good as the model in place: published.
  assert conftest.run_retrain(promote_if_better=True, **photo_flags,
                              how_many_training_steps=200,
                              learning_rate=1.0) == 0
  assert ('validation photos: the model in place scores 100.0%, the new one '
          '100.0%.' in caplog.text)
  assert conftest.model_files(outputs) != published


def read_metrics(outputs, refused=False):
  path = (pipeline.refused_metrics_path(outputs['saved_model_dir']) if refused
          else os.path.join(outputs['saved_model_dir'], 'metrics.json'))
  with open(path) as f:
    return json.load(f)


def test_promote_if_better_decides_on_the_validation_photos(
    tmp_path, photo_flags, outputs, caplog):
  caplog.set_level(logging.INFO)
  assert conftest.run_retrain(promote_if_better=True, **photo_flags,
                              **FAST) == 0
  first_gate = read_metrics(outputs).get('gate')
  # Red and blue swap colours in the training and validation photos, not in
  # the test photos: on the test photos the model in place wins, on the
  # validation photos the new one does. The validation photos decide.
  _, photos = images.find_photos(photo_flags['image_dir'])
  splits = images.split_photos(images.digest_photos(photos)[0],
                               testing_percentage=10, validation_percentage=10)
  colours = dict(conftest.COLOURS, red=conftest.COLOURS['blue'],
                 blue=conftest.COLOURS['red'])
  swapped = conftest.write_photos(tmp_path / 'swapped', colours, seed=1)
  for photo in splits['training'] + splits['validation']:
    folder, name = os.path.split(photo.path)
    shutil.copy(os.path.join(tmp_path, 'swapped', os.path.basename(folder),
                             name), photo.path)
  assert swapped and splits['validation'] and splits['testing']
  caplog.clear()
  assert conftest.run_retrain(promote_if_better=True, **photo_flags,
                              **FAST) == 0
  gate = read_metrics(outputs)['gate']
  assert gate['compared_on'] == 'validation'
  assert gate['photos'] == len(splits['validation'])
  assert gate['new_accuracy'] == 1.0 and gate['in_place_accuracy'] < 0.5
  # The test accuracy reported is the new model's own, which the choice did
  # not look at: it got red and blue test photos wrong.
  assert read_metrics(outputs)['test_accuracy'] < 0.5
  assert (f'Quality gate on the {len(splits["validation"])} validation photos'
          in caplog.text)
  assert first_gate['in_place'] == 'none'  # Nothing in place: published.


def test_without_validation_photos_the_test_photos_decide_and_it_says_so(
    photo_flags, outputs, caplog):
  assert conftest.run_retrain(**photo_flags, **FAST) == 0
  assert conftest.run_retrain(promote_if_better=True, validation_percentage=0,
                              **photo_flags, **FAST) == 0
  assert 'No validation photos (--validation_percentage 0)' in caplog.text
  gate = read_metrics(outputs)['gate']
  assert gate['compared_on'] == 'testing'
  assert gate['photos'] == read_metrics(outputs)['test_photos']
  assert gate['new_accuracy'] == gate['in_place_accuracy'] == 1.0


def damage_model(saved_model_dir, how):
  path = os.path.realpath(saved_model_dir)
  data = os.path.join(path, 'variables', 'variables.data-00000-of-00001')
  if how == 'truncated saved_model.pb':
    pb = os.path.join(path, 'saved_model.pb')
    os.truncate(pb, os.path.getsize(pb) // 2)
  elif how == 'truncated variables':
    os.truncate(data, os.path.getsize(data) // 2)
  elif how == 'deleted variables':
    shutil.rmtree(os.path.join(path, 'variables'))
  elif how == 'deleted version folder':  # The link dangles.
    shutil.rmtree(path)


@pytest.mark.parametrize('how', ['truncated saved_model.pb',
                                 'truncated variables', 'deleted variables',
                                 'deleted version folder'])
def test_promote_if_better_replaces_a_model_in_place_nobody_can_use(
    photo_flags, outputs, caplog, how):
  assert conftest.run_retrain(**photo_flags, **FAST) == 0
  damage_model(outputs['saved_model_dir'], how)
  # Even a poor model is better than one that cannot be used.
  assert conftest.run_retrain(promote_if_better=True, **photo_flags,
                              **POOR) == 0
  assert 'cannot be used' in caplog.text
  assert 'label_image.py could not use it either' in caplog.text
  assert read_metrics(outputs)['gate']['in_place'].startswith('replaced: ')
  predict.load_saved_model(outputs['saved_model_dir'])


@pytest.mark.parametrize('name,error', [
    ('assets/bottleneck.json', PermissionError(errno.EACCES,
                                               'Permission denied')),
    ('variables/variables.data-00000-of-00001',
     OSError(errno.EIO, 'Input/output error'))])
def test_promote_if_better_keeps_a_model_in_place_it_cannot_read(
    photo_flags, outputs, monkeypatch, capsys, name, error):
  assert conftest.run_retrain(**photo_flags, **FAST) == 0
  published = conftest.model_files(outputs)
  unreadable = os.path.join(os.path.realpath(outputs['saved_model_dir']), name)
  real_open = builtins.open

  def fake_open(file, *args, **kwargs):
    if isinstance(file, str) and os.path.realpath(file) == unreadable:
      raise type(error)(error.errno, error.strerror, file)
    return real_open(file, *args, **kwargs)
  monkeypatch.setattr(builtins, 'open', fake_open)
  assert conftest.run_retrain(promote_if_better=True, force=True,
                              **photo_flags, **FAST) == errors.EXIT_QUALITY
  monkeypatch.undo()
  [line] = capsys.readouterr().err.strip().splitlines()
  assert (f'cannot compare the new model with the model in place: cannot '
          f'read {unreadable}: {error.strerror}.' in line)
  assert 'was not published' in line
  assert conftest.model_files(outputs) == published
  gate = read_metrics(outputs, refused=True)['gate']
  assert gate['in_place'].startswith('kept: cannot read')


def test_promote_if_better_keeps_a_model_in_place_whose_evaluation_fails(
    tmp_path, photo_flags, outputs, monkeypatch, capsys):
  assert conftest.run_retrain(**photo_flags, **FAST) == 0
  published = conftest.model_files(outputs)
  real_load = predict.load_saved_model

  def load_then_fail(path):
    def run(batch):
      raise tf.errors.InternalError(None, None, 'kernel failed')
    return dataclasses.replace(real_load(path), run=run)
  monkeypatch.setattr(predict, 'load_saved_model', load_then_fail)
  # Another backbone: the model in place is evaluated end to end.
  other = conftest.save_feature_module(tmp_path / 'max', size=32,
                                       reduce=tf.reduce_max)
  assert conftest.run_retrain(promote_if_better=True, **dict(
      photo_flags, tfhub_module=other), **FAST) == errors.EXIT_QUALITY
  [line] = capsys.readouterr().err.strip().splitlines()
  assert ('model in place: it loads, but evaluating it failed (InternalError: '
          'kernel failed).' in line)
  assert conftest.model_files(outputs) == published
  gate = read_metrics(outputs, refused=True)['gate']
  assert gate['in_place'].startswith('kept: it loads')


def test_a_run_exits_when_another_holds_the_lock(photo_flags, outputs, capsys):
  held = locks.lock_path(outputs['bottleneck_dir'], folder=True)
  with locks.hold([held], timeout=0):
    assert conftest.run_retrain(**photo_flags, **FAST) == errors.EXIT_LOCKED
  err = capsys.readouterr().err
  assert 'Another run (PID' in err and '--lock_timeout' in err
  assert not os.path.exists(outputs['saved_model_dir'])
  with locks.hold([locks.lock_path(outputs['output_graph'])], timeout=0):
    assert conftest.run_retrain(**photo_flags, **FAST) == errors.EXIT_LOCKED
  assert conftest.run_retrain(**photo_flags, **FAST) == 0


def test_the_published_model_folder_is_a_link_swapped_whole(photo_flags,
                                                           outputs):
  assert conftest.run_retrain(**photo_flags, **FAST) == 0
  first = os.path.realpath(outputs['saved_model_dir'])
  assert conftest.run_retrain(force=True, **photo_flags, **FAST) == 0
  second = os.path.realpath(outputs['saved_model_dir'])
  assert os.path.islink(outputs['saved_model_dir']) and first != second
  assert os.path.isdir(first)  # Kept for readers that had opened it.
  assert conftest.run_label_image(
      saved_model_dir=outputs['saved_model_dir'],
      image=conftest.write_photos(
          os.path.dirname(outputs['saved_model_dir']) + '/probe',
          per_class=1)['red'][0]) == 0


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
