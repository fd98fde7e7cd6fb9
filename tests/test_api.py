"""The Python API: bottleneck.retrain and bottleneck.load (run/api.py)."""

import io
import os
import re
import subprocess
import sys

import conftest
import numpy as np
import pytest
from PIL import Image

import bottleneck
from bottleneck import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def api_run(tmp_path_factory, hub_module):
  root = tmp_path_factory.mktemp('api')
  photos = conftest.write_photos(root / 'photos', per_class=40)
  summary = bottleneck.retrain(
      image_dir=root / 'photos', tfhub_module=hub_module,
      validation_percentage=25, **conftest.output_flags(root))
  return summary, photos, root


def test_retrain_returns_the_summary(api_run):
  summary, _, root = api_run
  assert summary.labels == ['blue', 'green', 'red']
  assert summary.test_accuracy >= 0.9
  assert summary.saved_model_dir == str(root / 'model')
  assert os.path.isfile(os.path.join(summary.saved_model_dir, 'report.html'))


def test_load_predicts_paths_bytes_arrays_and_pil_images_alike(api_run):
  summary, photos, _ = api_run
  model = bottleneck.load(summary.saved_model_dir)
  assert model.labels == ['blue', 'green', 'red']
  path = photos['green'][0]
  with open(path, 'rb') as f:
    data = f.read()
  pil = Image.open(io.BytesIO(data)).convert('RGB')
  array = np.asarray(pil)
  results = model.predict([path, data, pil, array, array / 255.0], top_k=2)
  assert len(results) == 5
  for result in results:
    assert [label for label, _ in result][0] == 'green' and len(result) == 2
    assert result.unknown is False and result.unknown_score is not None
  np.testing.assert_allclose([r[0][1] for r in results],
                             results[0][0][1], atol=1e-6)
  [single] = model.predict(path)  # One image, not in a list.
  assert single[0][0] == 'green'


def test_predict_says_unknown_and_names_a_bad_image(api_run):
  summary, _, _ = api_run
  model = bottleneck.load(summary.saved_model_dir)
  # Black and white stripes: unlike any noisy solid colour of the classes.
  stripes = np.zeros((48, 64, 3), np.uint8)
  stripes[:, ::2] = 255
  [result] = model.predict([stripes])
  assert result.unknown and result.unknown_score > 1
  [result] = model.predict([stripes], unknown_threshold=-1)
  assert not result.unknown
  with pytest.raises(errors.DecodeError, match=r'image 1 \(bytes\)'):
    model.predict([stripes, b'not an image'])


def test_retrain_refuses_an_option_retrain_py_does_not_have(tmp_path):
  with pytest.raises(errors.UsageError, match='no option how_many_steps'):
    bottleneck.retrain(image_dir=tmp_path, how_many_steps=10)


def test_readme_example_runs_as_written(tmp_path):
  """The README's Python API example on the flower photos (../shared/data),
  from the project's root as the README's commands run, its two output
  folders moved into tmp_path (no test writes outside its own folder)."""
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  section = readme.split('## Python API', 1)[1]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  for folder in ('flowers_model', 'flowers_bottlenecks'):
    assert f"'{folder}'" in code
    code = code.replace(f"'{folder}'", repr(str(tmp_path / folder)))
  script = tmp_path / 'example.py'
  script.write_text(code)
  result = subprocess.run(
      [sys.executable, str(script)], capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, timeout=900,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  accuracy = float(re.match(r'Test accuracy (\d+\.\d)%', lines[0]).group(1))
  assert accuracy >= 85, result.stdout
  assert lines[1].startswith("roses "), result.stdout
