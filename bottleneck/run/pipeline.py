"""The retrain run: folder -> photos -> cached vectors -> head -> exports.

`retrain(config)` is everything `retrain.py` does once its flags are parsed:
it takes the locks (see `locks`), and then runs the stages one after another.
The model is published last and atomically (see `publish`), and only if the
quality gate lets it (see `gate`).
"""

import dataclasses
import functools
import os
import time

from absl import logging
import numpy as np

from bottleneck.features import backbones
from bottleneck.features import beam_stage
from bottleneck.features import blocks
from bottleneck.features import cache
from bottleneck.features import mirror
from bottleneck import errors
from bottleneck.export import saved_model
from bottleneck.run import fingerprint
from bottleneck.export import formats
from bottleneck.run import gate
from bottleneck.data import images
from bottleneck.run import locks
from bottleneck.train import metrics
from bottleneck import publish
from bottleneck.features import probe
from bottleneck.features import quantize
from bottleneck.train import calibration
from bottleneck.train import open_set
from bottleneck.train import recipes
from bottleneck.run import release
from bottleneck.run import report
from bottleneck.run import splits as splits_lib
from bottleneck.run import tuning
from bottleneck.train import summaries


@dataclasses.dataclass
class RunSummary:
  """What a retrain run did.

  Attributes:
    labels: list of str, class-index order.
    split_sizes: dict from split name to number of photos.
    test_accuracy: float in [0, 1], or None without test photos.
    reused: distinct photo contents whose vector was found in the cache.
    computed: distinct photo contents whose vector this run computed.
    skipped: list of (path, reason) for files that were not used.
    kept: True if the model in place was kept because nothing had changed.
    exports: {form: {'path', 'features', 'test_accuracy'}} of the exported
      forms measured on the test photos (see `release`); {} if none was.
    duplicates: photos with the same bytes as another photo of the run.
    saved_model_dir: where the model is (set by the Python API, `api`).
  """
  labels: list
  split_sizes: dict
  test_accuracy: float
  reused: int
  computed: int
  skipped: list
  kept: bool = False
  exports: dict = dataclasses.field(default_factory=dict)
  duplicates: int = 0
  saved_model_dir: str = ''


def refused_metrics_path(saved_model_dir):
  """Where the metrics of a model the quality gate refused are written."""
  return os.path.abspath(saved_model_dir) + '.refused-metrics.json'


def retrain(config):
  """Runs the whole pipeline for a `config.RetrainConfig`.

  Returns:
    A `RunSummary`.

  Raises:
    errors.BottleneckError: something the user can fix, another run holds a
      lock, or the quality gate refused the model; the message says what.
  """
  start = time.monotonic()
  if config.beam_runner:
    beam_stage.import_beam()  # A missing install fails before any work.
  outputs = [p for p in (config.output_labels, config.output_graph,
                         config.tflite_output_file,
                         config.tflite_int8_output_file) if p]
  saved_model.check_destinations(config.saved_model_dir, outputs)
  lock_files = [locks.lock_path(config.bottleneck_dir, folder=True),
                locks.lock_path(config.saved_model_dir)]
  with locks.hold(lock_files + [locks.lock_path(p) for p in outputs],
                  timeout=config.lock_timeout):
    publish.remove_stale(config.saved_model_dir)
    for path in outputs:
      publish.remove_stale_files(path)
    return _retrain(config, outputs, start)


def _retrain(config, outputs, start):
  """The run, with the locks held."""
  durations = {}
  lap = _laps(durations)
  labels, photos = images.find_photos(config.image_dir)
  float_backbone = backbones.load_backbone(
      config.tfhub_module, keras_weights=config.keras_weights,
      image_sizes=config.sizes, seed=config.random_seed,
      layers=config.bottleneck_layers)
  if config.mirror_average:
    float_backbone = mirror.averaged(float_backbone)
  logging.info('Backbone %s: input %dx%d%s, %d features (%s), preprocessing '
               '%s.', float_backbone.name, *float_backbone.image_size,
               _passes(float_backbone.image_sizes), float_backbone.feature_dim,
               ', '.join(float_backbone.layers) or 'last layer',
               float_backbone.preprocessing)
  lap('list_and_load')
  photos, unreadable = images.digest_photos(photos)
  int8_backbone = _int8_backbone(config, float_backbone, photos)
  backbone = (int8_backbone() if config.backbone_precision == 'int8' else
              float_backbone)
  split = (blocks.split(float_backbone, config.fine_tune_blocks)
           if config.fine_tune_blocks else None)
  if split:
    cached, flipped = tuning.cache_records(config, split, photos)
  else:
    cached = cache.cache_bottlenecks(
        photos, backbone, config.bottleneck_dir,
        engine=probe.for_config(config, backbone),
        memory_mb=config.vector_memory_mb,
        stage=beam_stage.for_config(config, backbone))
  skipped = unreadable + cached.skipped
  lap('cache')
  run_fingerprint = fingerprint.run_fingerprint(config, backbone, labels,
                                                photos)
  in_place = None if config.force else fingerprint.model_in_place(
      config.saved_model_dir, run_fingerprint, outputs)
  if in_place:
    logging.info(
        'The model in %s was trained on these same photos with these same '
        'flags (final test accuracy %s); keeping it. Pass --force to retrain '
        'anyway.', config.saved_model_dir,
        _percent(in_place.get('test_accuracy')))
    _log_skipped(skipped)
    logging.info('Done in %.1f s: nothing changed; the model in %s is kept.',
                 time.monotonic() - start, config.saved_model_dir)
    return RunSummary(in_place.get('labels', labels),
                      in_place.get('split_sizes', {}),
                      in_place.get('test_accuracy'), cached.reused,
                      cached.computed, skipped, kept=True,
                      duplicates=cached.duplicates)

  labels, splits, data = splits_lib.split_vectors(config, labels, cached)
  sizes = {name: len(members) for name, members in splits.items()}

  run_dir = summaries.new_run_dir(config.summaries_dir)
  if split:  # The tuned backbone is what the head was trained on.
    backbone, head, data = tuning.train(
        config, split, data, flipped, training_photos=splits['training'],
        num_classes=len(labels), summaries_dir=run_dir)
    float_backbone = backbone
    int8_backbone = _int8_backbone(config, backbone, photos, keep=False)
  else:
    head = recipes.train_head(config, data['training'], data['validation'],
                              num_classes=len(labels), summaries_dir=run_dir,
                              groups=backbone.groups)
  head, trust = _trust(head, data, len(labels))
  test_accuracy, truth, predicted = metrics.final_test(
      head, data['testing'], splits['testing'], labels, config)
  mistakes = report.mistakes(head, data['testing'], splits['testing'], labels)
  lap('train_and_test')
  if run_dir:
    matrix = metrics.confusion_matrix(truth, predicted, len(labels))
    writer = summaries.Writer(run_dir, ('test',))
    writer.image('test', config.how_many_training_steps, 'confusion_matrix',
                 *metrics.confusion_png(matrix, labels))
    writer.close()

  refusal, gate_figures = gate.check(
      config, test_accuracy=test_accuracy, head=head, labels=labels,
      backbone=backbone, splits=splits, data=data)

  def run_metrics(decision):
    return metrics.build(labels=labels, splits=splits, truth=truth,
                         predicted=predicted, config=config, backbone=backbone,
                         durations=durations, skipped=skipped,
                         bottlenecks=dict(cached.counts,
                                          engine=cached.engine),
                         gate=gate_figures,
                         decision=decision, curves=head.curves, **trust)

  if refusal:
    path = refused_metrics_path(config.saved_model_dir)
    refused = run_metrics(f'refused: {refusal}')
    publish.write_file(path, formats.json_bytes(refused))
    report_path = report.refused_path(config.saved_model_dir)
    publish.write_file(report_path, report.render(refused, mistakes=mistakes))
    _log_skipped(skipped)
    logging.info('Report: %s', report_path)
    raise errors.QualityError(
        f'{refusal} The new model was not published; the model in '
        f'{config.saved_model_dir} (if any) is kept. Its metrics: {path}')

  def published_metrics(exports):
    lap('export')
    return dict(run_metrics('published'), exports=exports)

  exports = release.release(
      config, release.Trained(labels, head, backbone, float_backbone,
                              int8_backbone),
      test_photos=splits['testing'], metadata={
          'test_accuracy': test_accuracy, 'split_sizes': sizes,
          'fingerprint': run_fingerprint,
          'exported': time.strftime('%Y-%m-%dT%H:%M:%S%z')},
      metrics=published_metrics,
      report=functools.partial(report.render, mistakes=mistakes))
  logging.info('Exported the model to %s.', ', '.join(
      [config.saved_model_dir] + outputs))
  _log_skipped(skipped)
  logging.info('Done in %.1f s: published a model of %d classes trained on %s '
               'photos, final test accuracy %s, %d file(s) skipped; model in '
               '%s.', time.monotonic() - start, len(labels),
               f'{sizes["training"]:,}', _percent(test_accuracy), len(skipped),
               config.saved_model_dir)
  logging.info('Report: %s', os.path.join(config.saved_model_dir,
                                          release.REPORT_FILE))
  return RunSummary(labels, sizes, test_accuracy, cached.reused,
                    cached.computed, skipped, exports=exports,
                    duplicates=cached.duplicates)


def _trust(head, data, num_classes):
  """Calibrates the head and fits its "unknown" score (see the modules).

  Returns:
    (the `head.Head` that exports carry, {'calibration': ..., 'unknown':
    ...} for metrics.json).
  """
  # Lazy vectors (above --vector_memory_mb) of the small sets (10-20% of the
  # photos) are read whole, once; open_set.fit streams the training ones.
  validation, testing = ((np.asarray(v, np.float32), c) for v, c in (
      data['validation'], data['testing']))
  head, calibrated = calibration.calibrate(head, validation, testing)
  unknown = open_set.fit(data['training'], validation,
                         num_classes=num_classes)
  return (dataclasses.replace(head, unknown=unknown),
          {'calibration': calibrated, 'unknown': open_set.figures(
              unknown, validation[0], testing[0])})


def _int8_backbone(config, float_backbone, photos, keep=True):
  """A function that returns the int8 copy of the backbone (see `quantize`).

  It converts the backbone on its first call if no copy is cached, calibrated
  on this run's training photos; keep=False: a copy of a fine-tuned backbone,
  whose weights no later run has, is not cached.
  """
  def calibration():
    training = images.split_photos(
        photos, testing_percentage=config.testing_percentage,
        validation_percentage=config.validation_percentage)['training']
    return quantize.calibration_photos(training)

  @functools.cache
  def int8_backbone():
    return quantize.int8_backbone(float_backbone, config.bottleneck_dir,
                                  calibration, keep=keep)
  return int8_backbone


def _laps(durations):
  """A function that records the seconds since its last call under a name."""
  last = [time.monotonic()]

  def lap(name):
    now = time.monotonic()
    durations[name] = now - last[0]
    last[0] = now
  return lap


def _passes(sizes):
  """' (passes at 224 and 320 px)' for several sizes (see `passes`), else ''."""
  if len(sizes) < 2:
    return ''
  return (f' (passes at {", ".join(map(str, sizes[:-1]))} and {sizes[-1]} '
          'px)')


def _percent(accuracy):
  return 'not measured' if accuracy is None else f'{accuracy:.1%}'


def _log_skipped(skipped):
  if skipped:
    logging.warning('Skipped %d file(s):\n%s', len(skipped), '\n'.join(
        f'  {path}: {reason}' for path, reason in skipped))
