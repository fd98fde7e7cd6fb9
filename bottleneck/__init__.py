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
"""
