"""The files every export carries, and how they are encoded.

labels.txt (one label per line, class-index order) and bottleneck.json (labels,
input size, backbone, preprocessing, figures) go into the SavedModel's assets/
and into each .tflite (see `tflite`). This module does not import TensorFlow,
so that label_image.py can read a .tflite without paying for TensorFlow.
"""

import json
import os

METADATA_FILE = 'bottleneck.json'
LABELS_FILE = 'labels.txt'
FORMAT_VERSION = 1


def read_metadata(saved_model_dir):
  """assets/bottleneck.json of an export as a dict; None if there is none."""
  try:
    with open(os.path.join(saved_model_dir, 'assets', METADATA_FILE),
              encoding='utf-8') as f:
      metadata = json.load(f)
  except (OSError, ValueError):
    return None
  return metadata if isinstance(metadata, dict) else None


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
