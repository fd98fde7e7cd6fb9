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
from bottleneck.train import standard

DIM = 40


def test_the_standard_head_is_the_same_from_lazy_vectors(
    tmp_path, hub_module, monkeypatch):
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
  order = rng.permutation(300)
  lazy = s.vectors([digests[i] for i in order])
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
