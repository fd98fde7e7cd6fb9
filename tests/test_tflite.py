"""The int8 backbone (--backbone_precision int8) and the .tflite exports."""

import json
import logging
import os
import sys

import conftest
import numpy as np
import pytest
import tensorflow as tf

from bottleneck.features import backbones
from bottleneck import errors
from bottleneck.export import formats
from bottleneck.export import tflite_file
from bottleneck.data import images
from bottleneck import predict
from bottleneck.features import quantize
from bottleneck.run import release
from bottleneck.features import tflite

FAST = dict(how_many_training_steps=300, learning_rate=1.0)


def read_json(path):
  with open(path) as f:
    return json.load(f)


def tflite_flags(root):
  return dict(tflite_output_file=str(root / 'model.tflite'),
              tflite_int8_output_file=str(root / 'model_int8.tflite'))


@pytest.fixture(scope='module')
def int8_run(tmp_path_factory, hub_module):
  """One int8 run with every output; returns (flags, photos, log text)."""
  root = tmp_path_factory.mktemp('int8')
  photos = conftest.write_photos(root / 'photos')
  flags = dict(image_dir=str(root / 'photos'), tfhub_module=hub_module,
               backbone_precision='int8', **conftest.output_flags(root),
               **tflite_flags(root), **FAST)
  handler = logging.Handler()
  handler.records = []
  handler.emit = handler.records.append
  logging.getLogger().addHandler(handler)
  try:
    assert conftest.run_retrain(**flags) == 0
  finally:
    logging.getLogger().removeHandler(handler)
  return flags, photos, '\n'.join(r.getMessage() for r in handler.records)


def test_int8_run_exports_and_measures_every_form(int8_run):
  flags, _, log = int8_run
  assert 'Converting' in log and 'calibrated on 48 training photos' in log
  metrics = read_json(os.path.join(flags['saved_model_dir'],
                                   release.METRICS_FILE))
  assert metrics['backbone']['precision'] == 'int8'
  assert metrics['test_accuracy'] >= 0.9
  exports = metrics['exports']
  assert set(exports) == {'saved_model', 'saved_model_tflite', 'frozen_graph',
                          'tflite_float32', 'tflite_int8'}
  assert exports['tflite_int8']['features'] == 'int8'
  assert exports['saved_model']['features'] == 'float32'
  for form in exports.values():
    assert form['test_accuracy'] >= 0.9, exports
  meta = read_json(os.path.join(flags['saved_model_dir'], 'assets',
                                formats.METADATA_FILE))
  assert meta['backbone_precision'] == 'int8'
  assert meta['computes_features_in'] == 'float32'


def test_tflite_files_carry_their_labels_and_label_images(int8_run, capsys):
  flags, photos, _ = int8_run
  paths = [p for name in sorted(photos) for p in photos[name][:4]]
  outputs = {}
  for model_flags in (dict(saved_model_dir=flags['saved_model_dir']),
                      dict(tflite_model=flags['tflite_output_file']),
                      dict(tflite_model=flags['tflite_int8_output_file'])):
    capsys.readouterr()
    assert conftest.run_label_image(*paths[1:], image=paths[0], top_k=1,
                                    output_format='json', **model_flags) == 0
    records = json.loads(capsys.readouterr().out)
    outputs[str(model_flags)] = [r['predictions'][0]['label'] for r in records]
  truth = [os.path.basename(os.path.dirname(p)) for p in paths]
  for labels in outputs.values():
    assert labels == truth
  for path in (flags['tflite_output_file'], flags['tflite_int8_output_file']):
    with open(path, 'rb') as f:
      attached = tflite.attached_files(f.read())
    assert attached[formats.LABELS_FILE] == b'blue\ngreen\nred\n'
    metadata = json.loads(attached[formats.METADATA_FILE])
    assert metadata['backbone_precision'] == 'int8'


def test_int8_classifier_computes_the_cached_int8_features(int8_run):
  flags, photos, _ = int8_run
  float_backbone = backbones.load_backbone(flags['tfhub_module'])
  int8 = quantize.int8_backbone(float_backbone, flags['bottleneck_dir'],
                                calibration=lambda: pytest.fail('converted'))
  model = predict.load_tflite(flags['tflite_int8_output_file'])
  head = conftest.exported_head(flags['saved_model_dir'])
  pixels = np.random.default_rng(0).random((5, 32, 32, 3), np.float32)
  expected = head(int8.features(pixels))
  np.testing.assert_allclose(model.classify(pixels), expected, atol=1e-5)


LAYERS = 'block_13_expand_relu,block_16_project_BN,out_relu'
# Random weights would do, but their pooled features barely differ between
# photos, so the head would predict alike whatever the features.
WEIGHTS = os.path.join(conftest.SHARED_DATA, 'weights',
                       'mobilenet_v2_1.0_224_no_top.weights.h5')


def test_every_form_computes_the_features_of_several_layers(tmp_path):
  if not os.path.isfile(WEIGHTS):  # Fails, never skips, as test_real_data.
    pytest.fail(f'{WEIGHTS} is missing: this test needs ../shared/data beside '
                'the repository (see ../shared/data/README.md).')
  # An int8 run writes every form: the SavedModel and the frozen graph run
  # the float backbone, one .tflite each backbone.
  conftest.write_photos(tmp_path / 'photos', per_class=8)
  flags = dict(image_dir=str(tmp_path / 'photos'),
               tfhub_module='keras:mobilenet_v2', keras_weights=WEIGHTS,
               image_size=64, bottleneck_layers=LAYERS,
               backbone_precision='int8', how_many_training_steps=10,
               **conftest.output_flags(tmp_path), **tflite_flags(tmp_path))
  assert conftest.run_retrain(**flags) == 0
  metrics = read_json(os.path.join(flags['saved_model_dir'],
                                   release.METRICS_FILE))
  assert metrics['backbone']['layers'] == LAYERS.split(',')
  assert metrics['backbone']['feature_dim'] == 576 + 320 + 1280
  assert set(metrics['exports']) == {
      'saved_model', 'saved_model_tflite', 'frozen_graph', 'tflite_float32',
      'tflite_int8'}

  float_backbone = backbones.load_backbone(
      'keras:mobilenet_v2', keras_weights=WEIGHTS, image_size=64,
      layers=LAYERS)
  int8 = quantize.int8_backbone(float_backbone, flags['bottleneck_dir'],
                                calibration=lambda: pytest.fail('converted'))
  conftest.check_int8_run_forms(flags, float_backbone, int8)
  assert int8.feature_dim == float_backbone.feature_dim


def test_second_int8_run_converts_nothing_and_keeps_vectors_apart(
    int8_run, caplog):
  flags, _, _ = int8_run
  caplog.set_level(logging.INFO)
  tflite_file = [n for n in os.listdir(flags['bottleneck_dir'])
                 if n.endswith('.int8.tflite')]
  assert len(tflite_file) == 1
  assert conftest.run_retrain(**dict(flags, force=True)) == 0
  assert 'Converting' not in caplog.text
  assert 'reused 60, computed 0' in caplog.text
  caplog.clear()
  assert conftest.run_retrain(**dict(flags, backbone_precision='float32')) == 0
  # Float vectors are not the int8 ones: computed again, in their own file.
  assert 'reused 0, computed 60' in caplog.text
  h5_files = [n for n in os.listdir(flags['bottleneck_dir'])
              if n.endswith('.h5')]
  assert len(h5_files) == 2


def test_calibration_photos_are_distinct_and_taken_in_turn(tmp_path):
  photos = [images.Photo(path=f'{label}/{i}.jpg', key=f'{i}.jpg', label=label,
                         digest=f'{i % 5:02d}{label}')
            for label in range(3) for i in range(10)]
  chosen = quantize.calibration_photos(photos, count=7)
  assert len(chosen) == 7
  assert chosen == quantize.calibration_photos(list(reversed(photos)), count=7)
  # In turn from each class, lowest digest first; 10 photos per class but
  # only 5 distinct digests.
  assert [p.split('/')[0] for p in chosen] == ['0', '1', '2'] * 2 + ['0']
  assert len(quantize.calibration_photos(photos, count=100)) == 15


def test_damaged_cached_model_is_set_aside_and_converted_again(
    tmp_path, hub_module, caplog):
  caplog.set_level(logging.INFO)
  backbone = backbones.load_backbone(hub_module)
  conftest.write_photos(tmp_path / 'photos', per_class=3)
  _, photos = images.find_photos(str(tmp_path / 'photos'))
  calibration = lambda: [p.path for p in photos]
  first = quantize.int8_backbone(backbone, str(tmp_path), calibration)
  path = quantize.model_path(str(tmp_path), backbone)
  with open(path, 'r+b') as f:
    f.truncate(100)
  again = quantize.int8_backbone(backbone, str(tmp_path), calibration)
  assert again.identity == first.identity  # Conversion is deterministic.
  assert 'moved it to' in caplog.text
  assert any('.damaged-' in name for name in os.listdir(tmp_path))


def test_ops_without_int8_kernels_are_reported(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  path = conftest.save_feature_module(
      tmp_path / 'cumsum', size=8,
      reduce=lambda x, axis: tf.math.cumsum(tf.reduce_mean(x, axis), axis=1))
  backbone = backbones.load_backbone(path)
  conftest.write_photos(tmp_path / 'photos', per_class=2)
  _, photos = images.find_photos(str(tmp_path / 'photos'))
  int8 = quantize.int8_backbone(backbone, str(tmp_path / 'bn'),
                                lambda: [p.path for p in photos])
  assert 'have no int8 kernel' in caplog.text and 'CUMSUM' in caplog.text
  assert int8.features(np.zeros([2, 8, 8, 3], np.float32)).shape == (2, 3)


def test_unconvertible_backbone_is_a_model_error(tmp_path, outputs, capsys):
  path = conftest.save_feature_module(
      tmp_path / 'erf', size=8,
      reduce=lambda x, axis: tf.math.erf(tf.reduce_mean(x, axis)))
  conftest.write_photos(tmp_path / 'photos', per_class=4)
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=path, backbone_precision='int8',
                              **outputs) == errors.EXIT_MODEL
  err = capsys.readouterr().err
  assert 'Cannot convert' in err and 'int8' in err
  assert '--backbone_precision float32' in err and 'Traceback' not in err
  assert not os.path.exists(outputs['saved_model_dir'])


def test_a_backbone_the_converter_refuses_keeps_the_saved_model(
    tmp_path, photo_flags, outputs, monkeypatch, caplog, capsys):
  def refuse(backbone, head):
    del backbone, head
    raise errors.ModelError('Cannot convert gap to a float32 TFLite model: no '
                            'kernel. Use another backbone.')
  monkeypatch.setattr(tflite_file, 'float_classifier', refuse)
  caplog.set_level(logging.INFO)
  flags = dict(photo_flags, **FAST)
  assert conftest.run_retrain(**flags) == 0
  assert 'will have no classifier.tflite' in caplog.text
  folder = outputs['saved_model_dir']
  assert not os.path.exists(os.path.join(folder, formats.CLASSIFIER_FILE))
  meta = read_json(os.path.join(folder, 'assets', formats.METADATA_FILE))
  assert meta[formats.CLASSIFIER_DIGEST] is None
  assert read_json(os.path.join(folder, release.METRICS_FILE))['exports'] == {}
  # label_image.py loads the SavedModel; retrain.py has said why, once.
  capsys.readouterr()
  photo = conftest.write_photos(tmp_path / 'one', per_class=1)['red'][0]
  assert conftest.run_label_image(image=photo, saved_model_dir=folder) == 0
  captured = capsys.readouterr()
  assert captured.out.split()[0] == 'red' and captured.err == ''
  # The missing file is not a change: the model is kept.
  caplog.clear()
  assert conftest.run_retrain(**flags) == 0
  assert 'keeping it' in caplog.text
  # --tflite_output_file asks for the file: then it is an error.
  assert conftest.run_retrain(
      **flags, force=True, tflite_output_file=str(tmp_path / 'model.tflite')
  ) == errors.EXIT_MODEL
  assert 'Cannot convert gap' in capsys.readouterr().err


def test_a_tflite_from_another_tool(tmp_path, capsys):
  """No labels inside, uint8 input and output: --labels, and quantization."""
  @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
  def colours(images):
    return tf.nn.softmax(10 * tf.reduce_mean(images, axis=[1, 2]))
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [colours.get_concrete_function()], tf.Module())
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: (
      [np.random.default_rng(i).random((1, 8, 8, 3), np.float32)]
      for i in range(20))
  converter.inference_input_type = tf.uint8
  converter.inference_output_type = tf.uint8
  (tmp_path / 'other.tflite').write_bytes(converter.convert())
  (tmp_path / 'labels.txt').write_text('r\ng\nb\n')
  written = conftest.write_photos(tmp_path / 'photos', per_class=1)

  assert conftest.run_label_image(
      image=written['green'][0],
      tflite_model=str(tmp_path / 'other.tflite')) == errors.EXIT_MODEL
  assert 'carries no labels.txt' in capsys.readouterr().err
  assert conftest.run_label_image(
      image=written['green'][0], tflite_model=str(tmp_path / 'other.tflite'),
      labels=str(tmp_path / 'labels.txt')) == 0
  assert capsys.readouterr().out.splitlines()[0].split()[0] == 'g'


def test_bad_tflite_files_give_one_line(tmp_path, capsys, hub_module):
  written = conftest.write_photos(tmp_path / 'photos', per_class=1)
  (tmp_path / 'bad.tflite').write_bytes(b'not a model' * 10)
  # A model file that is missing or not a model is exit code 4, as for a
  # SavedModel (README, Exit codes); two model flags at once are bad flags, 2.
  for model_flags, expected_code, message in (
      (dict(tflite_model=str(tmp_path / 'bad.tflite')), errors.EXIT_MODEL,
       'is not a TFLite'),
      (dict(tflite_model=str(tmp_path / 'none.tflite')), errors.EXIT_MODEL,
       'Cannot read'),
      (dict(tflite_model=str(tmp_path / 'bad.tflite'), graph='x.pb'),
       errors.EXIT_USAGE, 'not both')):
    code = conftest.run_label_image(image=written['red'][0], **model_flags)
    err = capsys.readouterr().err
    assert code == expected_code, (model_flags, err)
    assert message in err and 'Traceback' not in err, err


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
