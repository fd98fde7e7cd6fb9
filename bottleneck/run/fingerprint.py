"""Is the model in place already the answer? A run's fingerprint says.

A nightly run over a folder in which nothing changed would train the same head
and export the same model again: the head's training, the test and every
export, all for nothing, and a model
folder that changes under the programs that read it. The export therefore
records the fingerprint of everything that decides the model (the photos'
digests, keys and labels, the backbone's identity, the flags that shape
training) and the digests of the files written beside it and of its
classifier.tflite. A later run with the same fingerprint, whose labels file,
frozen graph and classifier.tflite are still the ones written, keeps the model
in place; `--force` retrains anyway. An export made before classifier.tflite
existed is exported again, so that label_image.py gets its fast path.
"""

import dataclasses
import hashlib
import json
import os

from bottleneck.export import formats
from bottleneck.data import images

# RetrainConfig fields that do not change the model: where things are kept,
# what is logged, and how the cache stage batches its work.
_NOT_IN_MODEL = frozenset((
    'image_dir', 'bottleneck_dir', 'summaries_dir', 'saved_model_dir',
    'output_labels', 'output_graph', 'tflite_output_file',
    'tflite_int8_output_file', 'print_misclassified_test_images',
    'cache_batch_size', 'backbone_runtime', 'force', 'lock_timeout',
    'min_test_accuracy', 'promote_if_better', 'beam_runner',
    'beam_pipeline_args'))


def run_fingerprint(config, backbone, labels, photos):
  """Hex SHA-256 of everything that decides the trained model.

  Args:
    config: the `config.RetrainConfig` of the run.
    backbone: the `backbones.Backbone`.
    labels: list of str, class-index order.
    photos: every `images.Photo` of the run, with digests (undecodable ones
      too: if one becomes decodable, the model changes).

  Returns:
    A 64-character hex string.
  """
  settings = {name: value for name, value in dataclasses.asdict(config).items()
              if name not in _NOT_IN_MODEL}
  content = {
      'export_format': formats.FORMAT_VERSION,
      'settings': settings,
      'backbone': backbone.identity,
      'labels': list(labels),
      'photos': sorted((p.key, p.label, p.digest) for p in photos),
  }
  return hashlib.sha256(json.dumps(content, sort_keys=True).encode(
      'utf-8', 'surrogateescape')).hexdigest()


def output_digests(staged):
  """{absolute path: hex SHA-256} of the files to be published beside the model.

  Args:
    staged: list of (temporary path, final path) from `publish.stage_file`.
  """
  return {os.path.abspath(path): images.file_digest(tmp)
          for tmp, path in staged}


def model_in_place(saved_model_dir, fingerprint, outputs):
  """The metadata of the export in place if it is the answer, else None.

  Args:
    saved_model_dir: the export folder.
    fingerprint: `run_fingerprint` of this run.
    outputs: paths of the files this run would write beside the model ('' for
      none); each must still hold what the export in place wrote, and so must
      its classifier.tflite (unless its backbone could not be converted).

  Returns:
    The export's assets/bottleneck.json as a dict, or None.
  """
  metadata = formats.read_metadata(saved_model_dir)
  if not metadata or metadata.get('fingerprint') != fingerprint:
    return None
  if formats.CLASSIFIER_DIGEST not in metadata:
    return None  # Exported before classifier.tflite: give it one.
  written = dict(metadata.get('outputs', {}))
  if metadata[formats.CLASSIFIER_DIGEST]:
    classifier = os.path.join(os.path.realpath(saved_model_dir),
                              formats.CLASSIFIER_FILE)
    written[classifier] = metadata[formats.CLASSIFIER_DIGEST]
    outputs = [*outputs, classifier]
  for path in filter(None, outputs):
    path = os.path.abspath(path)
    try:
      if written.get(path) != images.file_digest(path):
        return None
    except OSError:  # Deleted or unreadable: write it again.
      return None
  return metadata
