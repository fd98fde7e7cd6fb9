"""Tests of label_image.py: output formats, several images, bad input."""

import csv
import io
import json
import os
import shutil
import sys

import conftest
import pytest

from bottleneck import errors
from bottleneck.export import formats


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
  shutil.copytree(model, tmp_path / 'half')
  shutil.rmtree(tmp_path / 'half' / 'variables')
  (tmp_path / 'noise.pb').write_bytes(bytes(range(256)) * 4)
  shutil.copytree(model, tmp_path / 'truncated')
  for data in (tmp_path / 'truncated' / 'variables').glob('variables.data*'):
    data.write_bytes(data.read_bytes()[:100])
  shutil.copytree(model, tmp_path / 'no_labels')
  meta = tmp_path / 'no_labels' / 'assets' / 'bottleneck.json'
  meta.write_text(meta.read_text().replace('"labels"', '"not_labels"'))
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
      (dict(image=photos['red'][0], saved_model_dir=str(tmp_path / 'half')),
       errors.EXIT_MODEL, 'variables/variables.index missing'),
      (dict(image=photos['red'][0],
            saved_model_dir=str(tmp_path / 'truncated')),
       errors.EXIT_MODEL, 'Cannot load the model in'),
      (dict(image=photos['red'][0],
            saved_model_dir=str(tmp_path / 'no_labels')),
       errors.EXIT_MODEL, "has no 'labels'"),
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
