"""The quality gate: a model is published only if it is good enough.

--min_test_accuracy P   refuses a model whose final test accuracy is below P
                        percent (or that has no test photos to measure it on).
--promote_if_better     refuses a model that scores lower than the model in
                        place on this run's validation photos. The model in
                        place is evaluated on the cached vectors when it has
                        the same backbone, else end to end on the photo files;
                        a photo of a class it does not know counts as a
                        mistake.

Why the validation photos decide: the final test accuracy is reported for the
model that is published. Chosen on the test photos, a model would be published
because it did well on them, and the figure would flatter it. The head is
never trained on the validation photos; the standard recipe only chooses its
L2 strength among a few on them, which flatters the new model's validation
figure a little (one choice among about ten, by cross entropy), against the
model in place. That is the price of an unbiased test figure; the margin is
logged, so a close call can be seen. Without validation photos
(--validation_percentage 0) the test photos decide, with a warning that the
test figure is then biased: a run should not stop publishing over a flag that
a user may set on purpose. The log and metrics.json ('gate') say which set
decided and give both models' accuracy on it.

The model in place, for --promote_if_better:
  missing (no folder or link)         nothing to compare with: publish.
  a file of it cannot be read         kept (refused): a permission or I/O error
    (permission, I/O error)           says nothing of the model itself.
  damaged beyond use: the loader of   replaced, with a warning that says why:
    label_image.py fails on it        nobody can use it.
  loads, but evaluating it fails      kept (refused), with the reason.

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


class _CannotCompare(Exception):
  """The model in place may be good but cannot be compared: keep it."""


def check(config, *, test_accuracy, head, labels, backbone, splits, data):
  """Why the new model must not be published, or None if it may be.

  Args:
    config: the run's `config.RetrainConfig`.
    test_accuracy: the new model's final test accuracy in [0, 1], or None.
    head: the new `head.Head`.
    labels: this run's labels, class-index order.
    backbone: the `backbones.Backbone` of this run's vectors.
    splits: {'validation'|'testing': list of `images.Photo`}.
    data: {split: (float32 [n, feature_dim] vectors, int32 [n] classes)}.

  Returns:
    (a sentence or None, the 'gate' dict of metrics.json or None): the dict
    says which set decided (`compared_on`), on how many photos, both models'
    accuracy on it, and what became of the model in place (`in_place`).
  """
  if config.min_test_accuracy:
    if test_accuracy is None:
      return (f'--min_test_accuracy {config.min_test_accuracy:g} needs test '
              'photos, and this run has none (--testing_percentage '
              f'{config.testing_percentage:g}).'), None
    if test_accuracy * 100 < config.min_test_accuracy:
      return (f'Final test accuracy {test_accuracy:.1%} is below '
              f'--min_test_accuracy {config.min_test_accuracy:g}%.'), None
  if not config.promote_if_better:
    return None, None
  on = 'validation' if splits['validation'] else 'testing'
  photos, (vectors, truth) = splits[on], data[on]
  figures = {'compared_on': on, 'photos': len(photos), 'new_accuracy': None,
             'in_place_accuracy': None, 'in_place': 'none'}
  try:
    model, figures['in_place'] = _model_in_place(config.saved_model_dir)
    if model is None:
      return None, figures
    if not photos:
      raise _CannotCompare('this run has no validation or test photos')
    if on == 'testing':
      logging.warning(
          'No validation photos (--validation_percentage %g): '
          '--promote_if_better compares the models on the test photos, so the '
          'final test accuracy of a published model flatters it.',
          config.validation_percentage)
    old = _accuracy_in_place(model, config.saved_model_dir, backbone,
                             [labels[t] for t in truth], photos, vectors)
  except _CannotCompare as e:
    figures['in_place'] = f'kept: {e}'
    return (f'--promote_if_better cannot compare the new model with the model '
            f'in place: {e}. Fix that, or move the model in place away to '
            'publish the new one.'), figures
  new = float(np.mean(head_lib.predicted_classes(head, vectors) == truth))
  figures.update(new_accuracy=new, in_place_accuracy=old)
  logging.info('Quality gate on the %d %s photos: the model in place scores '
               '%.1f%%, the new one %.1f%%.', len(photos), on, old * 100,
               new * 100)
  if new < old:
    return (f'The new model scores {new:.1%} on this run\'s {len(photos)} {on} '
            f'photos, {(old - new) * 100:.1f} points below the model in place '
            f'({old:.1%}) on the same photos (--promote_if_better).'), figures
  return None, figures


def _model_in_place(saved_model_dir):
  """The model in place as label_image.py loads it.

  Returns:
    (`predict.LoadedModel`, 'evaluated'), or (None, 'none') if there is none,
    or (None, 'replaced: <why>') if it is damaged beyond use.

  Raises:
    _CannotCompare: a file of it cannot be read.
  """
  if not os.path.lexists(saved_model_dir):
    return None, 'none'
  path = os.path.realpath(saved_model_dir)  # One export, even if relinked.
  _check_readable(path)
  try:
    return predict.load_saved_model(path), 'evaluated'
  # IndexError: TensorFlow's reader of a truncated variables file ("Read less
  # bytes than requested"), which predict does not wrap.
  except (errors.ModelError, tf.errors.OpError, IndexError) as e:
    why = _first_line(e)
    logging.warning('The model in place in %s cannot be used (%s); '
                    'label_image.py could not use it either, so the new model '
                    'replaces it.', saved_model_dir, why)
    return None, f'replaced: {why}'


def _check_readable(path):
  """Reads every file of an export; raises _CannotCompare for an OSError.

  A file that cannot be read (EACCES, EIO) would make the loader fail as if
  the model were damaged; this tells the two apart. A missing file (a dangling
  link, say) is damage, for the loader to judge.
  """
  def fail(error):
    if not isinstance(error, FileNotFoundError):
      raise _CannotCompare(f'cannot read {error.filename}: {error.strerror}')

  for root, _, names in os.walk(path, onerror=fail):
    for name in names:
      try:
        with open(os.path.join(root, name), 'rb') as f:
          while f.read(1 << 20):
            pass
      except OSError as e:
        fail(e)


def _accuracy_in_place(model, saved_model_dir, backbone, truth, photos,
                       vectors):
  """Accuracy in [0, 1] of the model in place on the photos.

  Args:
    model: its `predict.LoadedModel`.
    saved_model_dir: where it is.
    backbone: this run's `backbones.Backbone`.
    truth: list of str, the true label of each photo.
    photos: list of `images.Photo`.
    vectors: float32 [len(photos), feature_dim], their cached vectors.

  Raises:
    _CannotCompare: evaluating it failed.
  """
  path = os.path.realpath(saved_model_dir)
  metadata = formats.read_metadata(path) or {}
  try:
    if metadata.get('backbone_identity') == backbone.identity:
      # Only the head is needed: read it from the checkpoint, as the loader
      # has loaded (and checked) the whole model already.
      reader = tf.train.load_checkpoint(os.path.join(path, 'variables',
                                                     'variables'))
      old_head = head_lib.Head(*(reader.get_tensor(
          f'{name}/.ATTRIBUTES/VARIABLE_VALUE')
          for name in ('head_weights', 'head_biases')))
      guesses = [model.labels[i] for i in
                 head_lib.predicted_classes(old_head, vectors)]
      return float(np.mean([g == t for g, t in zip(guesses, truth)]))
    return predict.accuracy(model, [p.path for p in photos], truth)
  except (OSError, tf.errors.OpError) as e:
    raise _CannotCompare(f'it loads, but evaluating it failed '
                         f'({type(e).__name__}: {_first_line(e)})') from e


def _first_line(error):
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
