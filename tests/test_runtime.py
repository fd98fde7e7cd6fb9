"""The cache stage's runtimes: the checked float32 LiteRT copy, and the probe.

features/runtimes.py converts a float32 backbone to LiteRT once, checks its
vectors against TensorFlow's and shares the cache with them; features/probe.py
measures which runtime, batch size and split of the cores is fastest, once per
backbone, flags, CPU model and core count, and keeps it in machine.json.
"""

import json
import os

import conftest
import numpy as np
import pytest

from bottleneck import errors
from bottleneck.data import decode
from bottleneck.data import images
from bottleneck.features import backbones
from bottleneck.features import cache
from bottleneck.features import probe
from bottleneck.features import quantize
from bottleneck.features import runtimes
from bottleneck.features import tflite


def _backbone(seed=0):
  """A small MobileNetV2 (random weights, 32 px) with the auto layers."""
  return backbones.load_backbone('keras:mobilenet_v2', keras_weights='none',
                                 image_size=32, layers='auto', seed=seed)


def _photos(root, per_class=6):
  conftest.write_photos(root, per_class=per_class)
  _, photos = images.find_photos(str(root))
  return images.digest_photos(photos)[0]


def _cache(photos, backbone, folder, runtime, batch_size=4):
  return cache.cache_bottlenecks(
      photos, backbone, str(folder), engine=probe.chooser(
          backbone, runtime=runtime, batch_size=batch_size,
          bottleneck_dir=str(folder)))


def test_litert_copy_matches_tensorflow_and_shares_its_cache(tmp_path):
  backbone, photos = _backbone(), _photos(tmp_path / 'photos')
  by_litert = _cache(photos, backbone, tmp_path / 'bn', 'litert')
  assert by_litert.engine['runtime'] == 'litert'
  assert by_litert.computed == len(photos)
  path = runtimes.copy_path(str(tmp_path / 'bn'), backbone)
  with open(path + '.json', encoding='utf-8') as f:
    record = json.load(f)
  assert record['accepted'] and record['photos'] == runtimes.CHECK_PHOTOS
  assert record['max_relative_difference'] <= runtimes.TOLERANCE
  # The same vectors as TensorFlow's, within the tolerance, for every photo.
  pixels = decode.load_images([p.path for p in by_litert.photos],
                              backbone.image_size)
  expected = np.asarray(backbone.features(
      np.stack(list(pixels)).astype(np.float32) / 255))
  # (Those of the store: float16, rounded by up to runtimes.STORE_ROUNDING.)
  assert runtimes.relative_difference(expected, by_litert.vectors) <= (
      runtimes.tolerance(stored_sides=1))
  # TensorFlow reuses them: one cache for both runtimes.
  by_tensorflow = _cache(photos, backbone, tmp_path / 'bn', 'tensorflow')
  assert (by_tensorflow.reused, by_tensorflow.computed) == (len(photos), 0)
  assert by_tensorflow.engine is None  # Nothing ran.


def test_copy_is_converted_once_and_again_when_damaged(tmp_path, monkeypatch):
  backbone, photos = _backbone(), _photos(tmp_path / 'photos', per_class=2)
  folder = str(tmp_path / 'bn')
  images_for_check = lambda: np.zeros((2, 32, 32, 3), np.float32)
  first = runtimes.float_copy(backbone, folder, images_for_check)
  converted = []
  real = quantize.to_tflite
  monkeypatch.setattr(quantize, 'to_tflite', lambda *a, **k: converted.append(
      1) or real(*a, **k))
  assert runtimes.float_copy(backbone, folder, images_for_check) == first
  assert not converted
  path = runtimes.copy_path(folder, backbone)
  with open(path, 'r+b') as f:  # One byte of the weights changes.
    f.seek(len(first) // 2)
    byte = f.read(1)
    f.seek(len(first) // 2)
    f.write(bytes([byte[0] ^ 0xFF]))
  assert runtimes.float_copy(backbone, folder, images_for_check) == first
  assert converted == [1]
  del photos


def test_a_copy_that_differs_from_tensorflow_is_never_used(tmp_path,
                                                           monkeypatch,
                                                           caplog):
  backbone, photos = _backbone(), _photos(tmp_path / 'photos')
  other = _backbone(seed=1)  # Same shapes, other weights.
  real = quantize.to_tflite
  monkeypatch.setattr(quantize, 'to_tflite', lambda function, **k: real(
      other.features.get_concrete_function(), **k))
  with pytest.raises(errors.ModelError, match='--backbone_runtime tensorflow'):
    _cache(photos, backbone, tmp_path / 'bn', 'litert')
  with open(runtimes.copy_path(str(tmp_path / 'bn'), backbone) + '.json',
            encoding='utf-8') as f:
    assert not json.load(f)['accepted']
  # auto keeps TensorFlow, says why, and does not convert again.
  monkeypatch.setattr(quantize, 'to_tflite', None)
  result = _cache(photos, backbone, tmp_path / 'bn', 'auto', batch_size=0)
  assert result.engine['runtime'] == 'tensorflow'
  assert 'differs from TensorFlow' in caplog.text
  alone = _cache(photos, backbone, tmp_path / 'alone', 'tensorflow')
  np.testing.assert_array_equal(result.vectors, alone.vectors)


def test_probe_is_kept_per_backbone_flags_cpu_and_cores(tmp_path,
                                                        monkeypatch):
  monkeypatch.setattr(probe, 'SPLIT_PHOTOS', 10)
  backbone, photos = _backbone(), _photos(tmp_path / 'photos')
  folder = tmp_path / 'bn'
  _cache(photos, backbone, folder, 'auto', batch_size=0)
  with open(folder / 'machine.json', encoding='utf-8') as f:
    kept = json.load(f)
  (key, entry), = kept.items()
  assert key.startswith(backbone.identity[:16] + ' auto ')
  assert key.endswith(f'{tflite.default_threads()} cores')
  assert set(entry['rates']) == {'tensorflow', 'litert'}
  assert all(r > 0 for rates in entry['rates'].values()
             for r in rates.values())
  split = entry['split']  # Measured on the run's photos.
  best = max(entry['rates'], key=lambda r: max(entry['rates'][r].values()))
  assert split['runtime'] == best
  assert split['rates'][f'{split["backbone_threads"]}x{split["workers"]}+'
                        f'{split["decode_threads"]}'] == max(
                            split['rates'].values())

  def measure(*args):
    raise AssertionError('measured again')
  monkeypatch.setattr(probe, '_rates', measure)
  monkeypatch.setattr(probe, '_split', measure)
  engine = probe.chooser(backbone, runtime='auto', batch_size=0,
                         bottleneck_dir=str(folder))([p.path for p in photos])
  assert (engine.runtime, engine.batch_size) == (best, split['batch_size'])
  assert engine.chosen_by.startswith('measured on ')
  # A batch size given wins over the measured one.
  given = probe.chooser(backbone, runtime='auto', batch_size=3,
                        bottleneck_dir=str(folder))([photos[0].path])
  assert given.batch_size == 3
  # Another core count is another machine: measured again.
  monkeypatch.setattr(tflite, 'default_threads', lambda: 7)
  with pytest.raises(AssertionError, match='measured again'):
    probe.chooser(backbone, runtime='auto', batch_size=0,
                  bottleneck_dir=str(folder))([photos[0].path])


def test_interpreters_side_by_side_give_the_vectors_of_one(tmp_path):
  backbone, photos = _backbone(), _photos(tmp_path / 'photos', per_class=7)
  copy = runtimes.float_copy(backbone, str(tmp_path / 'bn'), lambda: np.zeros(
      (1, 32, 32, 3), np.float32))
  paths = [p.path for p in photos] + [str(tmp_path / 'not_a_photo.jpg')]
  with open(paths[-1], 'wb') as f:
    f.write(b'not an image')
  one = cache.Engine('litert', tflite.Runner(copy, name='one', threads=1), 3)
  pool = cache.Engine('litert', tflite.RunnerPool(copy, name='pool', threads=1,
                                                  count=3), 2, workers=3)
  results = []
  for engine in (one, pool):
    rows, vectors, failed = [], [], []
    for at, got in cache.compute_vectors(paths, backbone.image_size, engine):
      if isinstance(got, errors.DecodeError):
        failed.append(at)
      else:
        rows.extend(at)
        vectors.append(got)
    assert failed == [len(paths) - 1]
    assert rows == list(range(len(paths) - 1))  # In order.
    results.append(np.concatenate(vectors))
  np.testing.assert_array_equal(results[0], results[1])


def test_nothing_is_measured_when_the_flags_say_everything(tmp_path,
                                                           monkeypatch):
  backbone, photos = _backbone(), _photos(tmp_path / 'photos', per_class=2)
  monkeypatch.setattr(probe, '_rates', None)
  result = _cache(photos, backbone, tmp_path / 'bn', 'tensorflow')
  assert result.engine == {'runtime': 'tensorflow', 'batch_size': 4,
                           'decode_threads': probe.DEFAULT_DECODE_THREADS,
                           'backbone_threads': 0, 'workers': 1,
                           'chosen_by': 'given'}
  assert not os.path.exists(tmp_path / 'bn' / 'machine.json')


def test_a_default_run_records_its_engine_and_a_rerun_measures_nothing(
    tmp_path, monkeypatch):
  flags = dict(conftest.output_flags(tmp_path), image_dir=str(
      tmp_path / 'photos'), tfhub_module='keras:mobilenet_v2',
               keras_weights='none', image_sizes='32')
  conftest.write_photos(tmp_path / 'photos', per_class=8)
  assert conftest.run_retrain(**flags) == 0
  with open(os.path.join(flags['saved_model_dir'], 'metrics.json'),
            encoding='utf-8') as f:
    engine = json.load(f)['bottlenecks']['engine']
  assert engine['runtime'] in ('tensorflow', 'litert')
  assert engine['chosen_by'].startswith('measured now')
  assert os.path.exists(os.path.join(flags['bottleneck_dir'], 'machine.json'))
  def measure(*args):
    raise AssertionError('an engine for a run with nothing to compute')
  monkeypatch.setattr(probe, '_runners', measure)
  assert conftest.run_retrain(**flags) == 0
