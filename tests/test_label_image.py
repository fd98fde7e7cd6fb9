"""Tests of label_image.py: output formats, several images, bad input, and
its fast path: the model folder's classifier.tflite, without TensorFlow."""

import csv
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import conftest
import numpy as np
import pytest

from bottleneck import errors
from bottleneck.data import images
from bottleneck.export import formats
from bottleneck.run import release

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, hub_module):
  """One retrain run shared by this module's tests: (photos, outputs)."""
  root = tmp_path_factory.mktemp('trained')
  photos = conftest.write_photos(root / 'photos')
  outputs = conftest.output_flags(root)
  assert conftest.run_retrain(image_dir=str(root / 'photos'),
                              tfhub_module=hub_module,
                              how_many_training_steps=300, learning_rate=1.0,
                              **outputs) == 0
  return photos, outputs


def label(capsys, *args, **flag_values):
  capsys.readouterr()
  code = conftest.run_label_image(*args, **flag_values)
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def copy_model(model, copy, *, classifier=True, digest=True):
  """Copies a model folder, optionally without its classifier.tflite and
  without that file's digest in bottleneck.json (as earlier versions
  exported it); returns the copy's path as a str."""
  shutil.copytree(model, copy)
  if not classifier:
    os.remove(copy / formats.CLASSIFIER_FILE)
  if not digest:
    meta = copy / 'assets' / formats.METADATA_FILE
    values = json.loads(meta.read_text())
    del values[formats.CLASSIFIER_DIGEST]
    meta.write_text(json.dumps(values))
  return str(copy)


def test_the_model_folder_carries_its_classifier_tflite(trained):
  _, outputs = trained
  folder = pathlib.Path(outputs['saved_model_dir'])
  meta = json.loads((folder / 'assets' / formats.METADATA_FILE).read_text())
  assert meta[formats.CLASSIFIER_DIGEST] == images.file_digest(
      folder / formats.CLASSIFIER_FILE)
  # Measured on the test photos: the one form that runs other code than the
  # training vectors' (LiteRT).
  metrics = json.loads((folder / release.METRICS_FILE).read_text())
  assert set(metrics['exports']) == {'saved_model_tflite'}
  assert (metrics['exports']['saved_model_tflite']['test_accuracy'] ==
          metrics['test_accuracy'])


def test_the_classifier_answers_as_the_saved_model(trained, tmp_path, capsys):
  photos, outputs = trained
  folder = os.path.dirname(os.path.dirname(photos['red'][0]))
  earlier = copy_model(outputs['saved_model_dir'], tmp_path / 'earlier',
                       classifier=False, digest=False)
  answers, notes = {}, {}
  for name, model in (('fast', outputs['saved_model_dir']),
                      ('saved_model', earlier)):
    code, out, err = label(capsys, image=folder, top_k=3, output_format='json',
                           saved_model_dir=model)
    assert code == 0
    answers[name], notes[name] = json.loads(out), err
  assert notes['fast'] == ''
  # A folder exported before classifier.tflite existed: the SavedModel, and
  # one line that says why it is slow.
  assert len(notes['saved_model'].splitlines()) == 1
  assert (f'{earlier} has no {formats.CLASSIFIER_FILE}' in
          notes['saved_model'])
  assert len(answers['fast']) == 60
  for fast, slow in zip(answers['fast'], answers['saved_model']):
    assert fast['image'] == slow['image']
    assert ([p['label'] for p in fast['predictions']] ==
            [p['label'] for p in slow['predictions']])
    np.testing.assert_allclose([p['score'] for p in fast['predictions']],
                               [p['score'] for p in slow['predictions']],
                               atol=2e-5)
  # One photo, text: the same lines.
  outs = [label(capsys, image=photos['green'][3], saved_model_dir=model)[1]
          for model in (outputs['saved_model_dir'], earlier)]
  assert ([line.split()[0] for line in outs[0].splitlines()] ==
          [line.split()[0] for line in outs[1].splitlines()] ==
          ['green', 'blue', 'red'])


@pytest.mark.parametrize('what', ['photo', 'folder'])
def test_the_fast_path_never_imports_tensorflow(trained, what):
  photos, outputs = trained
  image = (photos['blue'][0] if what == 'photo' else
           os.path.dirname(photos['blue'][0]))
  script = '\n'.join((
      'import sys',
      'from absl import flags',
      'import label_image',
      'code = label_image.main(flags.FLAGS(sys.argv))',
      'loaded = sorted(m for m in sys.modules if m.split(".")[0] in',
      '                ("tensorflow", "keras", "tf_keras", "tensorflow_hub"))',
      'print("imported:", loaded, file=sys.stderr)',
      'sys.exit(code or 9 * bool(loaded))'))
  proc = subprocess.run(
      [sys.executable, '-c', script, f'--image={image}',
       f'--saved_model_dir={outputs["saved_model_dir"]}'], cwd=ROOT,
      capture_output=True, text=True, timeout=300, check=False)
  assert (proc.returncode, proc.stderr) == (0, 'imported: []\n')
  assert len(proc.stdout.splitlines()) == (3 if what == 'photo' else 20)


def test_folder_with_bad_files_labels_the_good_ones(trained, tmp_path, capsys):
  photos, outputs = trained
  folder = tmp_path / 'mixed'
  folder.mkdir()
  for name in ('red', 'blue'):
    os.link(photos[name][0], folder / f'{name}.jpg')
  (folder / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really')
  (folder / 'notes.txt').write_text('ignored: not an image extension')
  code, out, err = label(capsys, image=str(folder), top_k=1,
                         saved_model_dir=outputs['saved_model_dir'])
  assert code == 0
  assert out.splitlines() == [
      f'{folder}/blue.jpg: blue ' + out.splitlines()[0].split()[-1],
      f'{folder}/red.jpg: red ' + out.splitlines()[1].split()[-1]]
  assert err.strip().startswith(
      f'label_image.py: error: {folder}/broken.jpg: cannot decode image')
  assert len(err.strip().splitlines()) == 1


def test_json_and_csv(trained, capsys):
  photos, outputs = trained
  code, out, _ = label(capsys, image=photos['green'][0], output_format='json',
                       top_k=2, saved_model_dir=outputs['saved_model_dir'])
  assert code == 0
  records = json.loads(out)
  assert records[0]['image'] == photos['green'][0]
  assert [p['label'] for p in records[0]['predictions']][0] == 'green'
  assert len(records[0]['predictions']) == 2

  code, out, _ = label(capsys, photos['blue'][1], image=photos['red'][1],
                       output_format='csv', top_k=1,
                       saved_model_dir=outputs['saved_model_dir'])
  rows = list(csv.reader(io.StringIO(out)))
  assert rows[0] == ['image', 'rank', 'label', 'score']
  assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
      (photos['red'][1], '1', 'red'), (photos['blue'][1], '1', 'blue')]


def test_glob(trained, capsys):
  photos, outputs = trained
  pattern = os.path.join(os.path.dirname(photos['red'][0]), 'photo_00*.jpg')
  code, out, _ = label(capsys, image=pattern,
                       saved_model_dir=outputs['saved_model_dir'])
  assert code == 0 and len(out.splitlines()) == 10
  assert all(': red ' in line for line in out.splitlines())


def test_problems_give_one_line_and_a_non_zero_exit(trained, tmp_path,
                                                     capsys):
  photos, outputs = trained
  model = outputs['saved_model_dir']
  (tmp_path / 'page.jpg').write_text('<html>')
  (tmp_path / 'wrong_labels.txt').write_text('a\nb\n')
  (tmp_path / 'no_meta').mkdir()
  (tmp_path / 'no_meta' / 'saved_model.pb').write_bytes(b'')
  shutil.copytree(model, tmp_path / 'newer')
  meta = tmp_path / 'newer' / 'assets' / 'bottleneck.json'
  meta.write_text(meta.read_text().replace('"format": 1', '"format": 99'))
  # These three are about the SavedModel: without classifier.tflite,
  # label_image.py reads it.
  half = copy_model(model, tmp_path / 'half', classifier=False)
  shutil.rmtree(tmp_path / 'half' / 'variables')
  (tmp_path / 'noise.pb').write_bytes(bytes(range(256)) * 4)
  truncated = copy_model(model, tmp_path / 'truncated', classifier=False)
  for data in (tmp_path / 'truncated' / 'variables').glob('variables.data*'):
    data.write_bytes(data.read_bytes()[:100])
  no_labels = copy_model(model, tmp_path / 'no_labels', classifier=False)
  meta = tmp_path / 'no_labels' / 'assets' / 'bottleneck.json'
  meta.write_text(meta.read_text().replace('"labels"', '"not_labels"'))
  # A classifier.tflite cut short, with one byte changed, or from another
  # export, is an error, never a silent fall back to the SavedModel.
  short = copy_model(model, tmp_path / 'short')
  classifier = tmp_path / 'short' / formats.CLASSIFIER_FILE
  classifier.write_bytes(classifier.read_bytes()[:1000])
  flipped = copy_model(model, tmp_path / 'flipped')
  classifier = tmp_path / 'flipped' / formats.CLASSIFIER_FILE
  data = bytearray(classifier.read_bytes())
  data[len(data) // 3] ^= 1
  classifier.write_bytes(bytes(data))
  # Not a model, with a digest to match: LiteRT's error.
  garbage = copy_model(model, tmp_path / 'garbage')
  (tmp_path / 'garbage' / formats.CLASSIFIER_FILE).write_bytes(b'x' * 100)
  meta = tmp_path / 'garbage' / 'assets' / formats.METADATA_FILE
  values = json.loads(meta.read_text())
  values[formats.CLASSIFIER_DIGEST] = images.file_digest(
      tmp_path / 'garbage' / formats.CLASSIFIER_FILE)
  meta.write_text(json.dumps(values))
  no_meta_fast = copy_model(model, tmp_path / 'no_meta_fast')
  os.remove(tmp_path / 'no_meta_fast' / 'assets' / formats.METADATA_FILE)
  cases = [
      (dict(image=str(tmp_path / 'missing.jpg'), saved_model_dir=model),
       errors.EXIT_NO_DATA, 'No image found'),
      (dict(image=str(tmp_path / 'page.jpg'), saved_model_dir=model),
       errors.EXIT_NO_DATA, 'not an image'),
      (dict(image=photos['red'][0], saved_model_dir=str(tmp_path)),
       errors.EXIT_MODEL, 'not a SavedModel'),
      (dict(image=photos['red'][0], saved_model_dir=str(tmp_path / 'no_meta')),
       errors.EXIT_MODEL, 'not an export of retrain.py'),
      (dict(image=photos['red'][0], saved_model_dir=str(tmp_path / 'gone')),
       errors.EXIT_MODEL, 'not found'),
      (dict(image=photos['red'][0], saved_model_dir=str(tmp_path / 'newer')),
       errors.EXIT_MODEL, 'exported by a newer version (format 99)'),
      (dict(image=photos['red'][0], saved_model_dir=half),
       errors.EXIT_MODEL, 'variables/variables.index missing'),
      (dict(image=photos['red'][0], saved_model_dir=truncated),
       errors.EXIT_MODEL, 'Cannot load the model in'),
      (dict(image=photos['red'][0], saved_model_dir=no_labels),
       errors.EXIT_MODEL, "has no 'labels'"),
      (dict(image=photos['red'][0], saved_model_dir=short),
       errors.EXIT_MODEL, 'classifier.tflite is damaged or from another'),
      (dict(image=photos['red'][0], saved_model_dir=flipped),
       errors.EXIT_MODEL, 'classifier.tflite is damaged or from another'),
      (dict(image=photos['red'][0], saved_model_dir=garbage),
       errors.EXIT_MODEL, 'classifier.tflite is not a TFLite model'),
      (dict(image=photos['red'][0], saved_model_dir=no_meta_fast),
       errors.EXIT_MODEL, 'not an export of retrain.py'),
      (dict(image=photos['red'][0], graph=outputs['output_graph'],
            labels=str(tmp_path / 'wrong_labels.txt')),
       errors.EXIT_MODEL, 'gives 3 classes but its labels file has 2'),
      (dict(image=photos['red'][0], graph=outputs['output_labels']),
       errors.EXIT_MODEL, 'not a frozen GraphDef'),
      (dict(image=photos['red'][0], graph=str(tmp_path / 'noise.pb'),
            labels=outputs['output_labels']),
       errors.EXIT_MODEL, 'noise.pb is not a frozen GraphDef'),
      (dict(image=photos['red'][0], saved_model_dir=model, top_k=0),
       errors.EXIT_USAGE, '--top_k'),
  ]
  for flag_values, expected_code, message in cases:
    code, out, err = label(capsys, **flag_values)
    assert (code, out) == (expected_code, ''), flag_values
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, (message, err)


def test_a_bug_while_loading_is_not_a_user_error(trained, monkeypatch):
  photos, outputs = trained
  def broken(data):
    raise AttributeError('a bug')
  monkeypatch.setattr(formats, 'labels_from_bytes', broken)
  with pytest.raises(AttributeError, match='a bug'):
    conftest.run_label_image(image=photos['red'][0],
                             graph=outputs['output_graph'],
                             labels=outputs['output_labels'])


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
