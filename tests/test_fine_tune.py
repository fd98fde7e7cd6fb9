"""--fine_tune_blocks: the split is exact, tuning is kept only if it validates
better, and every export runs the tuned blocks.

The split must give back the backbone's own features from the cached records
(to float16's precision), the tuned backbone with untouched blocks must be
the backbone, and a run must export what it trained: each form of a
fine-tuned run is compared with the head on the tuned backbone's features.
"""

import json
import os
import sys

import conftest
import numpy as np
import pytest
import tensorflow as tf

from bottleneck import errors
from bottleneck.data import decode
from bottleneck.features import backbones
from bottleneck.features import blocks
from bottleneck.train import fine_tune
from bottleneck.train import head as head_lib

SIZE = 64  # MobileNetV2's final resolution is then 2x2.
WEIGHTS = os.path.join(conftest.SHARED_DATA, 'weights',
                       'mobilenet_v2_1.0_224_no_top.weights.h5')


def _backbone(name='keras:mobilenet_v2', layers='auto', sizes=(SIZE,),
              weights='none'):
  return backbones.load_backbone(name, keras_weights=weights,
                                 image_sizes=sizes, seed=0, layers=layers)


def _imagenet_weights():
  if not os.path.isfile(WEIGHTS):  # Fails, never skips, as test_real_data.
    pytest.fail(f'{WEIGHTS} is missing: this test needs ../shared/data beside '
                'the repository (see ../shared/data/README.md).')
  return WEIGHTS


@pytest.mark.parametrize('name,layers,sizes,blocks_,cut', [
    ('keras:mobilenet_v2', 'auto', (SIZE,), 1, 'block_15_add'),
    ('keras:mobilenet_v2', 'last', (SIZE,), 2, 'block_14_add'),
    ('keras:mobilenet_v2', 'auto', (48, SIZE), 1, 'block_15_add'),
    ('keras:mobilenet_v3_small', 'auto', (SIZE,), 1, 'expanded_conv_9_add'),
    ('keras:efficientnet_b0', 'auto', (SIZE,), 2, 'block6c_add'),
])
def test_records_give_back_the_backbones_features(name, layers, sizes, blocks_,
                                                  cut):
  # Random weights give activations of 1e-8 and less, below float16's range;
  # pretrained ones (MobileNetV2's) give what float16 is checked on.
  pretrained = name == 'keras:mobilenet_v2'
  backbone = _backbone(name, layers, sizes,
                       _imagenet_weights() if pretrained else 'none')
  split = blocks.split(backbone, blocks_)
  assert split.cut == cut
  images = np.random.default_rng(0).random((3, max(sizes), max(sizes), 3),
                                           np.float32)
  records = split.records_function('photo')(images).numpy()
  assert records.shape == (3, split.record_dim)
  expected = backbone.features(images).numpy()
  scale = np.abs(expected).max()
  # Through float32 records exactly; through float16 ones to its precision.
  np.testing.assert_allclose(split.features(records), expected, rtol=1e-4,
                             atol=1e-5 * scale)
  if pretrained:
    np.testing.assert_allclose(split.features(records.astype(np.float16)),
                               expected, rtol=1e-2, atol=1e-3 * scale)
  # Untouched blocks: the tuned backbone is the backbone, but not its cache.
  tuned = split.tuned_backbone(split.tail)
  np.testing.assert_allclose(tuned.features(images), expected, rtol=1e-4,
                             atol=1e-5 * scale)
  assert tuned.identity != backbone.identity and tuned.tuned_blocks == blocks_
  # The mirror image's record is the record of the mirrored photo.
  np.testing.assert_allclose(
      split.records_function('flipped')(images),
      split.records_function('photo')(images[:, :, ::-1]), rtol=1e-5,
      atol=1e-6 * np.abs(records).max())


def test_only_supported_backbones_and_block_counts(hub_module):
  with pytest.raises(errors.UsageError, match='keras:mobilenet_v2, .*'
                     'keras:efficientnet_b0'):
    blocks.split(_backbone('keras:resnet50', 'last', (32,)), 1)
  with pytest.raises(errors.UsageError, match='keras:mobilenet_v2'):
    blocks.split(backbones.load_backbone(hub_module), 1)
  with pytest.raises(errors.UsageError, match='1 to 3 of its last blocks'):
    blocks.split(_backbone(), 4)


def _problem(seed=0, n=48):
  """A split, its head, and records of a task the head gets partly right."""
  backbone = _backbone(layers='last', weights=_imagenet_weights())
  split = blocks.split(backbone, 1)
  rng = np.random.default_rng(seed)
  images = rng.random((n, SIZE, SIZE, 3), np.float32)
  labels = (images[:, :, :SIZE // 2].mean(axis=(1, 2, 3)) >
            images[:, :, SIZE // 2:].mean(axis=(1, 2, 3))).astype(np.int32)
  photo = split.records_function('photo')(images).numpy().astype(np.float16)
  flipped = split.records_function('flipped')(images).numpy().astype(
      np.float16)
  features = split.features(photo).numpy()
  weights = rng.normal(0, 1, (features.shape[1], 2)).astype(np.float32)
  head = head_lib.Head(weights / np.abs(features).max(), np.zeros(2,
                                                                  np.float32))
  return split, head, (photo, flipped, labels)


def test_the_best_validation_epoch_is_kept_and_patience_stops(caplog):
  split, head, (photo, flipped, labels) = _problem()
  before = split.tail.get_weights()
  # Half the photos validate: their loss rises once the rest is memorized.
  train = (photo[:24], flipped[:24], labels[:24])
  caplog.set_level('INFO')
  tail, tuned_head = fine_tune.fine_tune(split, head, train,
                                         (photo[24:], labels[24:]), seed=0)
  losses = [float(line.split('validation loss ')[1].split(',')[0])
            for line in caplog.text.splitlines()
            if 'Fine-tuning epoch' in line]
  kept = int(caplog.text.split('Fine-tuning keeps epoch ')[1].split('.')[0])
  assert kept == 1 + int(np.argmin(losses))
  # It stopped PATIENCE epochs after the best one, or at the last epoch.
  assert len(losses) == min(kept + fine_tune.PATIENCE, fine_tune.MAX_EPOCHS)
  logits = split.features(photo[24:], tail).numpy() @ tuned_head.weights
  logits += tuned_head.biases
  assert round(float(tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels[24:], logits))),
               3) == pytest.approx(losses[kept - 1], abs=1.5e-3)
  # The split's own tail is never trained.
  for now, original in zip(split.tail.get_weights(), before):
    np.testing.assert_array_equal(now, original)


def test_tuning_lowers_the_training_loss():
  split, head, (photo, flipped, labels) = _problem()

  def loss(tail, h):
    logits = split.features(photo, tail).numpy() @ h.weights + h.biases
    return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits)))
  # Validating on the training photos: a better fit is kept.
  tail, tuned_head = fine_tune.fine_tune(
      split, head, (photo, flipped, labels), (photo, labels), seed=0)
  assert loss(tail, tuned_head) < 0.9 * loss(split.tail, head)
  assert any(np.abs(a - b).max() > 0 for a, b in zip(
      tail.get_weights(), split.tail.get_weights()))


@pytest.fixture(scope='module')
def tuned_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('tuned')
  conftest.write_layout_photos(root / 'photos', per_class=12)
  flags = dict(image_dir=str(root / 'photos'), tfhub_module='keras:mobilenet_v2',
               keras_weights=_imagenet_weights(), image_sizes=f'48,{SIZE}',
               fine_tune_blocks=1,
               tflite_output_file=str(root / 'model.tflite'),
               tflite_int8_output_file=str(root / 'model_int8.tflite'),
               **conftest.output_flags(root))
  assert conftest.run_retrain(**flags) == 0
  return root, flags


def test_every_export_runs_the_tuned_blocks(tuned_run):
  root, flags = tuned_run
  with open(os.path.join(flags['saved_model_dir'], 'metrics.json'),
            encoding='utf-8') as f:
    metrics = json.load(f)
  assert metrics['backbone']['tuned_blocks'] == 1
  # Every form was measured on the test photos and agrees with the head.
  exports = metrics['exports']
  assert set(exports) == {'saved_model', 'saved_model_tflite', 'frozen_graph',
                          'tflite_float32', 'tflite_int8'}
  for form in ('saved_model', 'frozen_graph', 'tflite_float32'):
    assert exports[form]['test_accuracy'] == metrics['test_accuracy'], form
  # The epochs are kept for metrics.json and drawn in report.html.
  epochs = metrics['curves']['fine_tune']
  assert epochs['epoch'][:2] == [0, 1] and epochs['train_loss'][0] is None
  with open(os.path.join(flags['saved_model_dir'], 'report.html'),
            encoding='utf-8') as f:
    assert 'Fine-tuning: cross entropy' in f.read()
  paths = sorted(str(p) for p in (root / 'photos').rglob('*.*'))[:12]
  pixels = np.stack([decode.load_image(p, (SIZE, SIZE)) for p in paths]
                    ) / np.float32(255)
  model = tf.saved_model.load(flags['saved_model_dir'])
  head = conftest.exported_head(flags['saved_model_dir'])
  untuned = _backbone(sizes=(48, SIZE), weights=_imagenet_weights())
  forms = conftest.float_export_forms(flags, pixels, [
      open(p, 'rb').read() for p in paths])
  reference = forms.pop('serving_images')
  for form, probabilities in forms.items():
    np.testing.assert_allclose(probabilities, reference, atol=2e-5,
                               err_msg=form)
  # label_image.py needs no new flag.
  assert conftest.run_label_image(
      image=paths[0], saved_model_dir=flags['saved_model_dir']) == 0
  # The exports run other blocks than the pretrained ones.
  assert np.abs(head(untuned.features(pixels).numpy()) - reference).max() > 1e-4
  del model


def test_a_rerun_keeps_the_model_and_mirrors_only_training_photos(
    tuned_run, caplog):
  root, flags = tuned_run
  caplog.set_level('INFO')
  assert conftest.run_retrain(**flags) == 0
  text = caplog.text
  assert 'keeping it' in text
  assert 'Records: 36 photos (36 distinct): reused 36, computed 0' in text
  mirrored = [line for line in text.splitlines()
              if 'Mirror-image records:' in line]
  reused = int(mirrored[0].split('reused ')[1].split(',')[0])
  assert 0 < reused < 36  # Training photos only.


def test_flag_combinations_that_cannot_work(tmp_path, hub_module, capsys):
  conftest.write_photos(tmp_path / 'photos', per_class=4)
  photos = str(tmp_path / 'photos')
  outputs = conftest.output_flags(tmp_path)
  assert conftest.run_retrain(image_dir=photos, tfhub_module=hub_module,
                              fine_tune_blocks=1, **outputs) == 2
  assert conftest.run_retrain(image_dir=photos, fine_tune_blocks=1,
                              tfhub_module='keras:mobilenet_v2',
                              keras_weights='none', image_sizes='32',
                              backbone_precision='int8', **outputs) == 2
  err = capsys.readouterr().err
  assert 'Traceback' not in err
  assert '--fine_tune_blocks works with keras:mobilenet_v2' in err
  assert '--backbone_precision int8' in err
  assert not os.path.exists(outputs['saved_model_dir'])


def test_records_above_the_memory_budget_stop_before_the_cache(tmp_path,
                                                                capsys):
  conftest.write_photos(tmp_path / 'photos', per_class=4)
  outputs = conftest.output_flags(tmp_path)
  assert conftest.run_retrain(
      image_dir=str(tmp_path / 'photos'), tfhub_module='keras:mobilenet_v2',
      keras_weights='none', image_sizes=str(SIZE), fine_tune_blocks=1,
      vector_memory_mb=0.01, **outputs) == 2
  err = capsys.readouterr().err
  assert 'Traceback' not in err
  assert 'above --vector_memory_mb 0.01. Pass --vector_memory_mb' in err
  assert not os.path.exists(outputs['saved_model_dir'])
  cache_dir = outputs['bottleneck_dir']  # Nothing was computed.
  assert not os.path.isdir(cache_dir) or not [
      name for name in os.listdir(cache_dir) if name.endswith('.h5')]


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
