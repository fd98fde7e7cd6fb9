"""Tests of unattended runs: metrics.json, the quality gate, the locks."""

import json
import logging
import os
import sys

import conftest
import numpy as np
import pytest
import tensorflow as tf

from bottleneck import errors
from bottleneck.run import locks
from bottleneck.run import pipeline

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
  assert 'The model in place scores 100.0%' in caplog.text
  assert conftest.model_files(outputs) != published


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
