"""The quality gate: a model is published only if it is good enough.

--min_test_accuracy P   refuses a model whose final test accuracy is below P
                        percent (or that has no test photos to measure it on).
--promote_if_better     refuses a model that scores lower on this run's test
                        photos than the model in place scores on the same
                        photos. The model in place is evaluated on the cached
                        vectors when it has the same backbone, else end to end
                        on the photo files; a test photo of a class it does not
                        know counts as a mistake.

A refused model is not published: the model in place stays, the run exits
with errors.EXIT_QUALITY, and the candidate's metrics are written beside it.
"""

import os

from absl import logging
import numpy as np
import tensorflow as tf

from bottleneck import errors
from bottleneck.export import formats
from bottleneck.train import head as head_lib
from bottleneck import predict


def refusal(config, test_accuracy, old_accuracy):
  """Why the new model must not be published, or None if it may be.

  Args:
    config: the run's `config.RetrainConfig`.
    test_accuracy: the new model's test accuracy in [0, 1], or None.
    old_accuracy: function of no arguments: the model in place's accuracy on
      the same test photos, or None if there is no model in place.

  Returns:
    A sentence, or None.
  """
  if config.min_test_accuracy:
    if test_accuracy is None:
      return (f'--min_test_accuracy {config.min_test_accuracy:g} needs test '
              'photos, and this run has none (--testing_percentage '
              f'{config.testing_percentage:g}).')
    if test_accuracy * 100 < config.min_test_accuracy:
      return (f'Final test accuracy {test_accuracy:.1%} is below '
              f'--min_test_accuracy {config.min_test_accuracy:g}%.')
  if config.promote_if_better and test_accuracy is not None:
    old = old_accuracy()
    if old is not None:
      logging.info('The model in place scores %.1f%% on the same test photos; '
                   'the new one %.1f%%.', old * 100, test_accuracy * 100)
      if test_accuracy < old:
        return (f'The new model scores {test_accuracy:.1%} on this run\'s test '
                f'photos, {(old - test_accuracy) * 100:.1f} points below the '
                f'model in place ({old:.1%}) on the same photos '
                '(--promote_if_better).')
  return None


def old_model_accuracy(saved_model_dir, backbone, labels, test_photos,
                       test_vectors):
  """Test accuracy of the model in place on this run's test photos.

  Args:
    saved_model_dir: the export folder.
    backbone: this run's `backbones.Backbone`.
    labels: this run's labels, class-index order.
    test_photos: list of `images.Photo`, the test set.
    test_vectors: float32 [len(test_photos), feature_dim], their vectors.

  Returns:
    Accuracy in [0, 1]; None if there is no model in place or no test photo.
  """
  path = os.path.realpath(saved_model_dir)  # Metadata and model: one export.
  metadata = formats.read_metadata(path)
  if not metadata or not test_photos:
    return None
  truth = [labels[p.label] for p in test_photos]
  try:
    if metadata.get('backbone_identity') == backbone.identity:
      model = tf.saved_model.load(path)
      old_head = head_lib.Head(model.head_weights.numpy(),
                               model.head_biases.numpy())
      old_labels = metadata['labels']
      guesses = [old_labels[i] for i in
                 old_head.probabilities(test_vectors).argmax(axis=1)]
      return float(np.mean([g == t for g, t in zip(guesses, truth)]))
    return predict.accuracy(predict.load_saved_model(path),
                            [p.path for p in test_photos], truth)
  except (errors.BottleneckError, OSError, KeyError, ValueError,
          tf.errors.OpError) as e:
    logging.warning('Cannot evaluate the model in place (%s); the new model '
                    'replaces it.', e)
    return None
