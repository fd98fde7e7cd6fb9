"""Head training and testing on vectors streamed from the store in blocks."""

import dataclasses
import json
import os
import sys

import conftest
import numpy as np
import pytest

from bottleneck.features import backbones
from bottleneck.features import segments
from bottleneck.features import store
from bottleneck.train import head as head_lib
from bottleneck.train import open_set
from bottleneck.train import standard

DIM = 40


def stored(tmp_path, hub_module, monkeypatch):
  """(labels int [300], vectors float32 [300, DIM], lazy vectors, order)."""
  monkeypatch.setattr(segments, 'BLOCK_ROWS', 16)  # Many blocks.
  backbone = dataclasses.replace(backbones.load_backbone(hub_module),
                                 feature_dim=DIM, groups=(30, 10))
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 300)
  centres = rng.normal(size=(3, DIM))
  vectors = (centres[labels] + rng.normal(size=(300, DIM)) * 2).astype(
      np.float32) * np.linspace(0.1, 50, DIM).astype(np.float32)
  digests = [f'{i:064x}' for i in range(300)]
  s = store.VectorStore(str(tmp_path / 'v.h5'), backbone)
  for start in range(0, 300, 70):  # Several segments.
    s.append(digests[start:start + 70], vectors[start:start + 70])
    s.commit()
  # As the store keeps them (float16): streamed and in memory, the same values.
  vectors = s.read(digests)
  order = rng.permutation(300)
  return labels, vectors, s.vectors([digests[i] for i in order]), order


def test_the_standard_head_is_the_same_from_lazy_vectors(
    tmp_path, hub_module, monkeypatch):
  labels, vectors, lazy, order = stored(tmp_path, hub_module, monkeypatch)
  schedule = head_lib.Schedule(steps=200, learning_rate=0.01,
                               train_batch_size=100, eval_step_interval=50,
                               validation_batch_size=-1)
  heads = [standard.train_head((x[:240], labels[order][:240]),
                               (x[240:], labels[order][240:]), num_classes=3,
                               schedule=schedule, seed=0, groups=(30, 10))
           for x in (vectors[order], lazy)]
  np.testing.assert_allclose(heads[1].weights, heads[0].weights, rtol=1e-3,
                             atol=1e-4)
  np.testing.assert_array_equal(
      head_lib.predicted_classes(heads[1], lazy[240:]),
      heads[0].probabilities(vectors[order][240:]).argmax(axis=1))


def test_the_unknown_score_is_the_same_from_lazy_vectors(
    tmp_path, hub_module, monkeypatch):
  labels, vectors, lazy, order = stored(tmp_path, hub_module, monkeypatch)
  labels, vectors = labels[order], vectors[order]
  def read_whole(*_, **__):
    raise AssertionError('the training vectors were read whole')
  monkeypatch.setattr(segments.StoredVectors, '__array__', read_whole)
  # Rank 10 of 40: the low-rank part and the shrinkage both matter.
  fitted = [open_set.fit((x[:240], labels[:240]), (vectors[240:], labels[240:]),
                         num_classes=3, rank=10) for x in (vectors, lazy)]
  np.testing.assert_allclose(fitted[1].threshold, fitted[0].threshold,
                             rtol=1e-6)
  np.testing.assert_allclose(fitted[1].scores(vectors), fitted[0].scores(
      vectors), rtol=1e-5)
  # Both equal the formulas on the whole residual matrix.
  x = vectors[:240].astype(np.float64)
  means = np.stack([x[labels[:240] == c].mean(0) for c in range(3)])
  residuals = x - means[labels[:240]]
  center, centred_means, covariance, alpha = open_set.moments(
      lazy[:240], labels[:240], 3)
  np.testing.assert_allclose(center, x.mean(0), rtol=1e-9)
  np.testing.assert_allclose(centred_means, means - x.mean(0), atol=1e-9)
  np.testing.assert_allclose(covariance, residuals.T @ residuals / 240,
                             rtol=1e-9, atol=1e-9)
  assert 0.01 < alpha < 0.99
  np.testing.assert_allclose(alpha, open_set.shrinkage(residuals), rtol=1e-6)


def test_the_retrain_head_is_the_same_from_lazy_vectors_read_in_passes(
    tmp_path, hub_module, monkeypatch):
  labels, vectors, lazy, order = stored(tmp_path, hub_module, monkeypatch)
  labels, vectors = labels[order], vectors[order]
  reads, real = [], segments.StoredVectors.__array__

  def counted(self, *args, **kwargs):
    reads.append(len(self))
    return real(self, *args, **kwargs)
  monkeypatch.setattr(segments.StoredVectors, '__array__', counted)
  schedule = head_lib.Schedule(steps=40, learning_rate=0.05,
                               train_batch_size=20, eval_step_interval=7,
                               validation_batch_size=10)
  budget = 50 * DIM * 4 / 2**20  # 50 vectors: the batches of 2 steps a pass.
  heads = [head_lib.train_head((x[:240], labels[:240]),
                               (vectors[240:], labels[240:]), num_classes=3,
                               schedule=schedule, seed=3, memory_mb=budget)
           for x in (vectors, lazy)]
  assert len(reads) == 20 and max(reads) <= 40, reads
  np.testing.assert_array_equal(heads[1].weights, heads[0].weights)
  assert heads[1].curves == heads[0].curves


@pytest.mark.parametrize('recipe', ['standard', 'retrain'])
def test_retrain_below_and_above_the_memory_budget_agree(
    photo_flags, outputs, recipe):
  accuracies = []
  for budget in (1024, 1e-4):  # 1e-4 MiB: 100 bytes, so every vector streams.
    assert conftest.run_retrain(**photo_flags, force=True, head_recipe=recipe,
                                vector_memory_mb=budget,
                                how_many_training_steps=100) == 0
    with open(os.path.join(outputs['saved_model_dir'],
                           'metrics.json')) as f:
      accuracies.append(json.load(f)['test_accuracy'])
  assert accuracies[0] == accuracies[1] and accuracies[0] >= 0.9


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
