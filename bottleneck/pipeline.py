"""The retrain run: folder -> photos -> cached vectors -> head -> exports.

`retrain(config)` is everything `retrain.py` does once its flags are parsed.
"""

import collections
import dataclasses
import os
import time

from absl import logging
import numpy as np

from bottleneck import backbones
from bottleneck import cache
from bottleneck import errors
from bottleneck import export
from bottleneck import fingerprint
from bottleneck import head as head_lib
from bottleneck import images


@dataclasses.dataclass
class RunSummary:
  """What a retrain run did.

  Attributes:
    labels: list of str, class-index order.
    split_sizes: dict from split name to number of photos.
    test_accuracy: float in [0, 1], or None without test photos.
    reused: vectors found in the cache.
    computed: vectors computed by this run.
    skipped: list of (path, reason) for files that were not used.
    kept: True if the model in place was kept because nothing had changed.
  """
  labels: list
  split_sizes: dict
  test_accuracy: float
  reused: int
  computed: int
  skipped: list
  kept: bool = False


def retrain(config):
  """Runs the whole pipeline for a `config.RetrainConfig`.

  Returns:
    A `RunSummary`.

  Raises:
    errors.BottleneckError: something the user can fix; the message says what.
  """
  start = time.monotonic()
  export.check_destinations(config.saved_model_dir,
                            [config.output_labels, config.output_graph])
  labels, photos = images.find_photos(config.image_dir)
  backbone = backbones.load_backbone(
      config.tfhub_module, keras_weights=config.keras_weights,
      image_size=config.image_size, seed=config.random_seed)
  logging.info('Backbone %s: input %dx%d, %d features, preprocessing %s.',
               backbone.name, *backbone.image_size, backbone.feature_dim,
               backbone.preprocessing)
  photos, unreadable = images.digest_photos(photos)
  cached = cache.cache_bottlenecks(photos, backbone, config.bottleneck_dir,
                                   batch_size=config.cache_batch_size)
  skipped = unreadable + cached.skipped
  _check_every_class_usable(labels, cached.photos, config.image_dir)
  run_fingerprint = fingerprint.run_fingerprint(config, backbone, labels,
                                                photos)
  outputs = [config.output_labels, config.output_graph]
  in_place = None if config.force else fingerprint.model_in_place(
      config.saved_model_dir, run_fingerprint, outputs)
  if in_place:
    logging.info(
        'The model in %s was trained on these same photos with these same '
        'flags (final test accuracy %s); keeping it. Pass --force to retrain '
        'anyway.', config.saved_model_dir,
        _percent(in_place.get('test_accuracy')))
    _log_skipped(skipped)
    logging.info('Done in %.1f s; model in %s unchanged.',
                 time.monotonic() - start, config.saved_model_dir)
    return RunSummary(labels, in_place.get('split_sizes', {}),
                      in_place.get('test_accuracy'), cached.reused,
                      cached.computed, skipped, kept=True)
  splits = images.split_photos(
      cached.photos, testing_percentage=config.testing_percentage,
      validation_percentage=config.validation_percentage)
  rows = {p: i for i, p in enumerate(cached.photos)}
  data = {name: (cached.vectors[[rows[p] for p in members]],
                 np.array([p.label for p in members], np.int32))
          for name, members in splits.items()}
  sizes = {name: len(members) for name, members in splits.items()}
  logging.info('Photos: %d training, %d validation, %d testing.',
               sizes['training'], sizes['validation'], sizes['testing'])
  if not sizes['training']:
    raise errors.DataError('No photo is left for training; lower '
                           '--testing_percentage or --validation_percentage.')
  untrained = set(range(len(labels))) - set(data['training'][1].tolist())
  for index in sorted(untrained):
    logging.warning('Class %r has no training photo; add photos to it.',
                    labels[index])

  head = head_lib.train_head(
      data['training'], data['validation'], num_classes=len(labels),
      schedule=head_lib.Schedule(
          steps=config.how_many_training_steps,
          learning_rate=config.learning_rate,
          train_batch_size=config.train_batch_size,
          eval_step_interval=config.eval_step_interval,
          validation_batch_size=config.validation_batch_size),
      seed=config.random_seed, summaries_dir=_new_run_dir(config.summaries_dir))
  test_accuracy = _test(head, data['testing'], splits['testing'], labels, config)

  # The files beside the model first: the SavedModel, which records their
  # digests and the run's fingerprint, is the last thing to change.
  export.write_labels(labels, config.output_labels)
  if config.output_graph:
    export.write_frozen_graph(backbone, head, config.output_graph,
                              final_tensor_name=config.final_tensor_name)
  metadata = {'test_accuracy': test_accuracy, 'split_sizes': sizes,
              'fingerprint': run_fingerprint,
              'outputs': fingerprint.output_digests(outputs),
              'exported': time.strftime('%Y-%m-%dT%H:%M:%S%z')}
  export.save_model(backbone, head, labels, config.saved_model_dir,
                    metadata=metadata)
  logging.info('Exported SavedModel to %s, labels to %s%s.',
               config.saved_model_dir, config.output_labels,
               f', frozen graph to {config.output_graph}'
               if config.output_graph else '')
  _log_skipped(skipped)
  logging.info('Done in %.1f s: %d classes, %s training photos, final test '
               'accuracy %s, %d file(s) skipped; model in %s.',
               time.monotonic() - start, len(labels),
               f'{sizes["training"]:,}', _percent(test_accuracy), len(skipped),
               config.saved_model_dir)
  return RunSummary(labels, sizes, test_accuracy, cached.reused,
                    cached.computed, skipped)


def _percent(accuracy):
  return 'not measured' if accuracy is None else f'{accuracy:.1%}'


def _log_skipped(skipped):
  if skipped:
    logging.warning('Skipped %d file(s):\n%s', len(skipped), '\n'.join(
        f'  {path}: {reason}' for path, reason in skipped))


def _check_every_class_usable(labels, photos, image_dir):
  counts = collections.Counter(p.label for p in photos)
  empty = [labels[i] for i in range(len(labels)) if not counts[i]]
  if empty:
    raise errors.DataError(
        f'No usable image in the class folder(s) for {", ".join(empty)} in '
        f'{image_dir}: every file failed to decode (see the lines above). Add '
        'images that can be decoded, or remove the folder(s).')


def _test(head, test_data, test_photos, labels, config):
  """Logs retrain.py's final test line; returns the accuracy or None."""
  vectors, truth = test_data
  if not len(truth):
    logging.warning('No test photos (--testing_percentage %s): the final test '
                    'accuracy cannot be measured.', config.testing_percentage)
    return None
  rng = np.random.default_rng(config.random_seed + 1)
  indices = head_lib.sample(rng, len(truth), config.test_batch_size)
  predictions = head.probabilities(vectors[indices]).argmax(axis=1)
  accuracy = float(np.mean(predictions == truth[indices]))
  logging.info('Final test accuracy = %.1f%% (N=%d)', accuracy * 100,
               len(indices))
  if config.print_misclassified_test_images:
    logging.info('=== MISCLASSIFIED TEST IMAGES ===')
    for i, predicted in zip(indices, predictions):
      if predicted != truth[i]:
        logging.info('%70s  %s', test_photos[i].path, labels[predicted])
  return accuracy


def _new_run_dir(summaries_dir):
  """A new subfolder of summaries_dir for this run; earlier ones are kept."""
  if not summaries_dir:
    return None
  base = os.path.join(summaries_dir, time.strftime('run-%Y%m%d-%H%M%S'))
  path, n = base, 1
  while os.path.exists(path):
    n += 1
    path = f'{base}-{n}'
  os.makedirs(path)
  return path
