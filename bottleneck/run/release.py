"""The end of a run: write every output, check the exported forms, publish.

The outputs, all written before any of them is published:

  --output_labels            labels, one per line (retrain.py's file)
  --output_graph             frozen graph (retrain.py's contract; see `export`)
  --tflite_output_file       .tflite, float32 backbone + head (`export_tflite`)
  --tflite_int8_output_file  .tflite, int8 backbone + head
  --saved_model_dir          the SavedModel, with metrics.json, report.html
                             and classifier.tflite; published last, as it
                             records the digests of the files beside it.

classifier.tflite is the float32 .tflite classifier, written with every export
(the same bytes as --tflite_output_file, converted once): label_image.py runs
it without importing TensorFlow. It is the float32 form also when the head
was trained on int8 vectors (--backbone_precision int8), so that the folder
gives one answer whatever reads it: label_image.py with or without
TensorFlow, and TensorFlow Serving all run the float backbone. The int8
classifier, whose features the head was trained on, is
--tflite_int8_output_file. A backbone the converter cannot take leaves the
folder without classifier.tflite (with a warning) unless --tflite_output_file
asks for the file.

Each exported form is measured on the test photos, through the loaders that
label_image.py uses, whenever a form may compute other features than those the
head was trained on: with --backbone_precision int8 (the SavedModel and the
frozen graph run the float backbone), whenever a .tflite file is asked for
(another runtime, or int8), and with --fine_tune_blocks (the head's test
accuracy was measured on cached float16 activations). The figures go to
metrics.json ('exports') and to the log. Otherwise every form but
classifier.tflite runs the very function that computed the training vectors,
and the final test accuracy is theirs: classifier.tflite alone is measured.
"""

import dataclasses
import hashlib
import os
import shutil

from absl import logging

from bottleneck.export import saved_model
from bottleneck.export import tflite_file
from bottleneck.run import fingerprint
from bottleneck.export import formats
from bottleneck import predict
from bottleneck import publish
from bottleneck import errors
from bottleneck.features import tflite

METRICS_FILE = 'metrics.json'
REPORT_FILE = 'report.html'
_FORM_NAMES = {'saved_model': 'SavedModel',
               'saved_model_tflite': formats.CLASSIFIER_FILE,
               'frozen_graph': 'frozen graph',
               'tflite_float32': 'TFLite float32', 'tflite_int8': 'TFLite int8'}
# Forms written from the same bytes as another, measured once.
_SAME_BYTES = {'tflite_float32': 'saved_model_tflite'}


@dataclasses.dataclass(frozen=True)
class Trained:
  """What a run trained, and what its exports are built from.

  Attributes:
    labels: list of str, class-index order.
    head: a `head.Head`.
    backbone: the `backbones.Backbone` whose vectors the head was trained on.
    float_backbone: the float32 backbone (the same as `backbone` unless the
      run used --backbone_precision int8).
    int8_backbone: function of no arguments that returns the int8 copy of the
      backbone (converting it if it is not cached yet).
  """
  labels: list
  head: object
  backbone: object
  float_backbone: object
  int8_backbone: object


def release(config, trained, *, test_photos, metadata, metrics, report=None):
  """Writes, checks and publishes every output of a run.

  Args:
    config: the run's `config.RetrainConfig`.
    trained: a `Trained`.
    test_photos: list of `images.Photo`, the test set (labels renumbered as
      `trained.labels`).
    metadata: dict of JSON values for the SavedModel's assets/bottleneck.json.
    metrics: function from the exports' figures (a dict, see the module
      docstring) to the dict written as metrics.json.
    report: function from that dict to the bytes of report.html (see
      `run.report`), or None for no report.

  Returns:
    {form: {'path', 'features', 'test_accuracy'}} for the forms measured, or
    {} if none was.
  """
  staged, forms = [], []
  try:
    staged.append(publish.stage_file(config.output_labels, formats.text_bytes(
        formats.labels_text(trained.labels))))
    labels_file = staged[0][0]
    if config.output_graph:
      staged.append(publish.stage_file(config.output_graph, saved_model.frozen_graph(
          trained.float_backbone, trained.head,
          final_tensor_name=config.final_tensor_name)))
      forms.append(('frozen_graph', 'float32', config.output_graph,
                    _loader(predict.load_frozen_graph, staged[-1][0],
                            labels_file,
                            output_layer=config.final_tensor_name)))
    classifier = _classifier(config, trained)
    for precision, path in (('float32', config.tflite_output_file),
                            ('int8', config.tflite_int8_output_file)):
      if path:
        staged.append(publish.stage_file(path, classifier if precision ==
                                         'float32' else _tflite_file(
                                             trained, precision)))
        forms.append((f'tflite_{precision}', precision, path,
                      _loader(predict.load_tflite, staged[-1][0])))
    staging = publish.staging_dir(config.saved_model_dir)
    try:
      model_dir = saved_model.write_model(
          trained.float_backbone, trained.head, trained.labels, staging,
          metadata=dict(metadata, outputs=fingerprint.output_digests(staged),
                        **{formats.CLASSIFIER_DIGEST: classifier and
                           hashlib.sha256(classifier).hexdigest()}),
          trained_on=trained.backbone)
      forms.insert(0, ('saved_model', 'float32', config.saved_model_dir,
                       _loader(predict.load_saved_model, model_dir)))
      if classifier:
        path = os.path.join(model_dir, formats.CLASSIFIER_FILE)
        with open(path, 'wb') as f:  # publish_model makes it durable.
          f.write(classifier)
        forms.insert(1, ('saved_model_tflite', 'float32', os.path.join(
            config.saved_model_dir, formats.CLASSIFIER_FILE),
                         _loader(predict.load_tflite, path)))
      if not (trained.backbone.precision != 'float32' or
              trained.backbone.tuned_blocks or config.tflite_output_file or
              config.tflite_int8_output_file):
        forms = [f for f in forms if f[0] == 'saved_model_tflite']
      exports = (_measure(forms, test_photos, trained)
                 if test_photos and forms else {})
      figures = metrics(exports)
      extra_files = {METRICS_FILE: formats.json_bytes(figures)}
      if report:
        extra_files[REPORT_FILE] = report(figures)
      saved_model.publish_model(model_dir, config.saved_model_dir,
                                extra_files=extra_files)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  except BaseException:
    for tmp, _ in staged:
      if os.path.exists(tmp):
        os.remove(tmp)
    raise
  publish.replace_files(staged)
  return exports


def _loader(load, *args, **kwargs):
  return lambda: load(*args, **kwargs)


def _classifier(config, trained):
  """The float32 .tflite classifier's bytes (see the module docstring), or None.

  Raises:
    errors.ModelError: the backbone cannot be converted and
      --tflite_output_file asks for the file.
  """
  try:
    return _tflite_file(trained, 'float32')
  except errors.ModelError as e:
    if config.tflite_output_file:
      raise
    reason = str(e.__cause__ or e).strip().splitlines() or ['']
    logging.warning(
        'Cannot convert %s to a float32 .tflite (%s): the model folder will '
        'have no %s, and label_image.py will load the SavedModel with '
        'TensorFlow instead (seconds longer).', trained.float_backbone.name,
        reason[0], formats.CLASSIFIER_FILE)
    return None


def _tflite_file(trained, precision):
  """The .tflite classifier of one precision, with its files attached."""
  if precision == 'int8':
    model = tflite_file.int8_classifier(trained.int8_backbone(), trained.head)
  else:
    model = tflite_file.float_classifier(trained.float_backbone,
                                           trained.head)
  return tflite.attach_files(model, {
      formats.LABELS_FILE: formats.text_bytes(
          formats.labels_text(trained.labels)),
      formats.METADATA_FILE: formats.json_bytes(dict(
          formats.export_metadata(
              labels=trained.labels, backbone=trained.float_backbone,
              trained_on=trained.backbone, computes_features_in=precision),
          output='float32 [batch, classes] probabilities'))})


def _measure(forms, test_photos, trained):
  """Test accuracy of each exported form; see the module docstring."""
  paths = [p.path for p in test_photos]
  truth = [trained.labels[p.label] for p in test_photos]
  exports = {}
  for form, features, path, load in forms:
    twin = exports.get(_SAME_BYTES.get(form))
    exports[form] = {'path': os.path.abspath(path), 'features': features,
                     'test_accuracy': twin['test_accuracy'] if twin else
                                      predict.accuracy(load(), paths, truth)}
  logging.info(
      'Exported forms on the %d test photos: %s (the head was trained on %s '
      'features).', len(paths), ', '.join(
          f'{_FORM_NAMES[form]} ({e["features"]} features) '
          f'{e["test_accuracy"]:.1%}' for form, e in exports.items()),
      trained.backbone.precision)
  return exports
