"""bottleneck: transfer learning on cached backbone features, on a CPU.

The pipeline, one subpackage per stage; imports only point down this list:

  data/      folder -> photos (images) -> decoded pixels (decode)
  features/  pixels -> bottleneck vectors: backbones, runtimes, the cache
  train/     cached vectors -> softmax head, metrics, TensorBoard summaries
  export/    backbone + head -> SavedModel, frozen graph, .tflite, labels
  predict    load an export; label files, folders and bytes
  run/       the retrain run: stages in order, locks, quality gate, publish

Shared by every stage: errors (exceptions and exit codes), config (every
default, in one place), publish (atomic, durable file writes) and progress
(the progress bar).

Python API (run/api.py), for notebooks:

  summary = bottleneck.retrain(image_dir='photos/', saved_model_dir='model/')
  model = bottleneck.load('model/')
  model.predict(['photo.jpg'], top_k=3)

They are imported on first use, so that `import bottleneck` (and label_image.py)
never pays for TensorFlow.
"""

import importlib

_API = ('retrain', 'load', 'Classifier')


def __getattr__(name):
  if name in _API:
    # By name: every module imports this package, and the API imports every
    # stage; a Bazel target that uses the API depends on //:api.
    return getattr(importlib.import_module('bottleneck.run.api'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_API))
