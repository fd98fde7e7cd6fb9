"""The files every export carries, and how they are encoded.

labels.txt (one label per line, class-index order) and bottleneck.json (labels,
input size, the size of each backbone pass, backbone, preprocessing, figures)
go into the SavedModel's assets/ and into each .tflite (see `tflite`). This
module does not import TensorFlow, so that label_image.py can read a .tflite
without paying for TensorFlow.

The SavedModel folder also holds classifier.tflite at its top level, beside
saved_model.pb (TensorFlow's loader reads only the files it knows): the
float32 .tflite classifier of the same backbone and head, which label_image.py
runs without importing TensorFlow. Its SHA-256 is in assets/bottleneck.json
under CLASSIFIER_DIGEST (null when the backbone could not be converted; the
key is missing in exports made before the file existed).
"""

import json
import os

METADATA_FILE = 'bottleneck.json'
LABELS_FILE = 'labels.txt'
FORMAT_VERSION = 1
CLASSIFIER_FILE = 'classifier.tflite'
CLASSIFIER_DIGEST = 'classifier_tflite_sha256'
# The names of every export's outputs (see `outputs`).
PROBABILITIES = 'probabilities'
UNKNOWN_SCORE = 'unknown_score'


def read_metadata(saved_model_dir):
  """assets/bottleneck.json of an export as a dict; None if there is none."""
  try:
    with open(os.path.join(saved_model_dir, 'assets', METADATA_FILE),
              encoding='utf-8') as f:
      metadata = json.load(f)
  except (OSError, ValueError):
    return None
  return metadata if isinstance(metadata, dict) else None


def export_metadata(*, labels, backbone, trained_on, computes_features_in):
  """The bottleneck.json fields that every exported form shares.

  Args:
    labels: list of str, class-index order.
    backbone: the float32 `backbones.Backbone` (name, input size, pass
      sizes, preprocessing).
    trained_on: the `backbones.Backbone` whose vectors the head was trained
      on; `gate` reuses cached vectors of the same identity.
    computes_features_in: 'float32' or 'int8': what this form runs.

  Returns:
    A dict of JSON values.
  """
  return {'format': FORMAT_VERSION, 'labels': list(labels),
          'image_size': list(backbone.image_size),
          'image_sizes': list(backbone.image_sizes), 'backbone': backbone.name,
          'tuned_blocks': backbone.tuned_blocks,
          'backbone_identity': trained_on.identity,
          'backbone_precision': trained_on.precision,
          'computes_features_in': computes_features_in,
          'preprocessing': backbone.preprocessing,
          'input': 'float32 [batch, height, width, 3] in [0, 1]'}


def labels_text(labels):
  """One label per line, class-index order, as retrain.py wrote them."""
  return ''.join(label + '\n' for label in labels)


def labels_from_bytes(data):
  """The labels of a labels file's bytes (blank lines and \\r ignored)."""
  text = data.decode('utf-8', 'surrogateescape')
  return [line.rstrip('\r') for line in text.split('\n') if line.strip()]


def text_bytes(text):
  """UTF-8 (file names that are not UTF-8 keep their bytes)."""
  return text.encode('utf-8', 'surrogateescape')


def json_bytes(value):
  """Indented JSON, as bytes."""
  return text_bytes(json.dumps(value, indent=2, sort_keys=True) + '\n')
