"""Tests of the Beam cache stage (retrain.py --beam_runner; features/beam_*).

The pipeline tests need Apache Beam (requirements-beam.txt, which CI installs:
.ci/run); in a venv of requirements.txt alone they are skipped and say why.
The shard, flag and missing-install tests run everywhere.
"""

import importlib.util
import os
import sys

import conftest
import numpy as np
import pytest

from bottleneck import config
from bottleneck import errors
from bottleneck.data import decode
from bottleneck.data import images
from bottleneck.features import backbones
from bottleneck.features import beam_stage
from bottleneck.features import cache
from bottleneck.features import runtimes
from bottleneck.features import shards
from bottleneck.features import store
from bottleneck.run import pipeline

needs_beam = pytest.mark.skipif(
    importlib.util.find_spec('apache_beam') is None,
    reason='Apache Beam is not installed here: pip install -r '
    'requirements-beam.txt (CI installs it, see .ci/run)')
# Two worker processes, on Beam's FnApiRunner (beam_stage pins DirectRunner
# to it).
TWO_WORKERS = '--direct_num_workers=2 --direct_running_mode=multi_processing'
BAD = {'red/broken.jpg': b'not a jpeg', 'blue/empty.png': b''}


def photo_folder(root):
  """6 photos per class and two files that cannot be decoded."""
  conftest.write_photos(root, per_class=6)
  for name, data in BAD.items():
    with open(os.path.join(root, name), 'wb') as f:
      f.write(data)
  return str(root)


def run(tmp_path, name, image_dir, hub_module, **flags):
  """pipeline.retrain with outputs in tmp_path/name; its RunSummary."""
  return pipeline.retrain(config.RetrainConfig(
      image_dir=image_dir, tfhub_module=hub_module, cache_batch_size=4,
      how_many_training_steps=20, **dict(
          conftest.output_flags(tmp_path / name), summaries_dir=''), **flags))


def cached_vectors(image_dir, backbone, bottleneck_dir):
  """{path: vector} of a cache that holds every decodable photo."""
  _, photos = images.find_photos(image_dir)
  photos, _ = images.digest_photos(photos)
  result = cache.cache_bottlenecks(photos, backbone, bottleneck_dir,
                                   batch_size=4)
  assert result.computed == 0
  return dict(zip([p.path for p in result.photos], result.vectors))


@needs_beam
@pytest.mark.parametrize('runtime', ['tensorflow', 'litert'])
def test_beam_run_computes_what_a_local_run_would(tmp_path, hub_module,
                                                  runtime):
  image_dir = photo_folder(tmp_path / 'photos')
  in_beam = run(tmp_path, 'beam', image_dir, hub_module,
                backbone_runtime=runtime, beam_runner='DirectRunner',
                beam_pipeline_args=TWO_WORKERS)
  local = run(tmp_path, 'local', image_dir, hub_module,
              backbone_runtime=runtime)
  assert (in_beam.computed, in_beam.reused) == (local.computed, 0) == (18, 0)
  # Bad files are skipped and named as in a local run.
  assert sorted(in_beam.skipped) == sorted(local.skipped)
  assert {os.path.relpath(p, image_dir) for p, _ in in_beam.skipped} == set(BAD)

  backbone = backbones.load_backbone(hub_module)
  got = cached_vectors(image_dir, backbone, str(tmp_path / 'beam' /
                                                'bottlenecks'))
  expected = cached_vectors(image_dir, backbone, str(tmp_path / 'local' /
                                                     'bottlenecks'))
  assert got.keys() == expected.keys()
  paths = sorted(expected)
  assert runtimes.relative_difference(
      np.stack([expected[p] for p in paths]),
      np.stack([got[p] for p in paths])) <= runtimes.tolerance(stored_sides=2)
  # The shards are folded in and gone.
  assert not os.listdir(beam_stage.runs_folder(
      str(tmp_path / 'beam' / 'bottlenecks'), backbone))

  # A later local run in the same cache computes nothing, same accuracy.
  again = run(tmp_path, 'beam', image_dir, hub_module,
              backbone_runtime=runtime, force=True)
  assert (again.computed, again.reused) == (0, 18)
  assert again.test_accuracy == in_beam.test_accuracy == 1.0
  assert sorted(again.skipped) == sorted(local.skipped)


def write_run(root, records, *, failures=(), complete=True):
  """A run folder as the pipeline leaves it: one vectors shard, one of
  failures, and COMPLETE if `complete`; returns (folder, vectors shard)."""
  run_dir = shards.new_run(str(root))
  path = os.path.join(run_dir, 'vectors-00000-of-00001' + shards.SUFFIX)
  with open(path, 'wb') as f:
    for digest, vector in records:
      f.write(shards.frame(shards.vector_payload(digest, vector)))
  with open(os.path.join(run_dir, 'failures-00000-of-00001' + shards.SUFFIX),
            'wb') as f:
    for failure in failures:
      f.write(shards.frame(shards.failure_payload(*failure)))
  if complete:
    shards.mark_complete(run_dir)
  return run_dir, path


def test_only_complete_runs_whose_every_record_checks_are_folded(
    tmp_path, hub_module):
  backbone = backbones.load_backbone(hub_module)
  rng = np.random.default_rng(0)

  def records(n):
    return [(os.urandom(32).hex(), rng.random(3, np.float32))
            for _ in range(n)]

  good = records(3)
  failure = (os.urandom(32).hex(), 'a/b.jpg', 'empty file (0 bytes)')
  write_run(tmp_path / 'runs', good, failures=[failure])
  killed = records(2)
  write_run(tmp_path / 'runs', killed, complete=False)  # No COMPLETE.
  torn = records(2)
  _, path = write_run(tmp_path / 'runs', torn)
  with open(path, 'r+b') as f:  # Torn since, and the size no longer listed.
    f.truncate(os.path.getsize(path) - 3)
  flipped = records(2)
  _, path = write_run(tmp_path / 'runs', flipped)
  with open(path, 'r+b') as f:  # Same size, one byte of a vector flipped.
    f.seek(45)
    byte = f.read(1)
    f.seek(45)
    f.write(bytes([byte[0] ^ 1]))

  vectors = store.VectorStore(str(tmp_path / 'bn' / 'gap.h5'), backbone)
  count, failures = shards.fold(str(tmp_path / 'runs'), vectors, 3)
  vectors.commit()
  assert count == 3
  assert failures == {failure[0]: failure[1:]}
  assert os.listdir(tmp_path / 'runs') == []  # Folded or discarded, all.
  for digest, _ in killed + torn + flipped:
    assert digest not in vectors
  np.testing.assert_array_equal(vectors.read([d for d, _ in good]),  # float16:
                                np.stack([v for _, v in good]).astype(
                                    np.float16))
  vectors.close()


def test_a_torn_record_is_never_read():
  data = b''.join(shards.frame(bytes([i]) * 10) for i in range(3))
  assert list(shards.records(data, 's')) == [bytes([i]) * 10
                                              for i in range(3)]
  for cut in (1, 4, len(data) - 1):
    with pytest.raises(shards.BadShard):
      list(shards.records(data[:cut], 's'))


def test_a_killed_runs_complete_shards_are_folded_next_time(tmp_path,
                                                            hub_module):
  backbone = backbones.load_backbone(hub_module)
  conftest.write_photos(tmp_path / 'photos', per_class=6)
  _, photos = images.find_photos(str(tmp_path / 'photos'))
  photos, _ = images.digest_photos(photos)
  expected = cached_vectors_of(photos, backbone, tmp_path / 'local')
  bottleneck_dir = str(tmp_path / 'bn')
  # What a run killed after its pipeline finished, before folding, leaves.
  write_run(beam_stage.runs_folder(bottleneck_dir, backbone),
            list(expected.items()))
  stage = beam_stage.BeamStage(backbone, bottleneck_dir, 'DirectRunner')
  result = cache.cache_bottlenecks(photos, backbone, bottleneck_dir,
                                   batch_size=4, stage=stage)
  assert (result.reused, result.computed, result.undecodable) == (18, 0, 0)
  for p, vector in zip(result.photos, result.vectors):
    np.testing.assert_array_equal(vector, expected[p.digest])


def cached_vectors_of(photos, backbone, bottleneck_dir):
  """{digest: vector} computed by the local stage."""
  result = cache.cache_bottlenecks(photos, backbone, str(bottleneck_dir),
                                   batch_size=4)
  return {p.digest: v for p, v in zip(result.photos, result.vectors)}


def test_without_beam_the_run_says_how_to_install_it(
    monkeypatch, photo_flags, capsys):
  monkeypatch.setitem(sys.modules, 'apache_beam', None)  # import fails.
  assert conftest.run_retrain(beam_runner='DirectRunner',
                              **photo_flags) == errors.EXIT_USAGE
  err = capsys.readouterr().err
  assert err.strip() == f'retrain.py: error: {beam_stage.INSTALL}'
  assert not os.path.exists(photo_flags['saved_model_dir'])


@pytest.mark.parametrize('flags, problem', [
    (dict(beam_pipeline_args='--direct_num_workers=2'), 'without --beam_runner'),
    (dict(beam_runner='DirectRunner', fine_tune_blocks=1), 'fine_tune_blocks'),
    (dict(beam_runner='DirectRunner', beam_pipeline_args='--runner=Flink'),
     'as --beam_runner'),
    (dict(beam_runner='DirectRunner', beam_pipeline_args='"--a'),
     'does not parse'),
])
def test_beam_flags_that_cannot_work_are_refused(flags, problem):
  with pytest.raises(errors.UsageError, match=problem):
    config.RetrainConfig(image_dir='photos', **flags)


@needs_beam
def test_photos_the_workers_cannot_read_fail_with_a_clear_message(
    tmp_path, hub_module, monkeypatch):
  image_dir = photo_folder(tmp_path / 'photos')

  def unreachable(path, size, **unused):
    raise errors.DecodeError(path, 'cannot read file (No such file or '
                             'directory)')
  # In one process (no --direct_running_mode) the workers see the patch.
  monkeypatch.setattr(decode, 'load_image', unreachable)
  with pytest.raises(errors.UsageError, match='workers could read none'):
    run(tmp_path, 'beam', image_dir, hub_module,
        backbone_runtime='tensorflow', beam_runner='DirectRunner')
