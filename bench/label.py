"""The label_image rows of the benchmark.

- Over a folder, in this process: the model folder as label_image.py runs it
  (its classifier.tflite, LiteRT), its SavedModel (TensorFlow) and the int8
  .tflite, interleaved with the backbone limit they are divided by.
- One photo, whole process (start, load, label, exit): the model folder
  (classifier.tflite; the default path, which needs no flag but
  --saved_model_dir where the benchmark keeps its model), the same folder
  without classifier.tflite (an earlier version's export: the SavedModel,
  with TensorFlow) and --tflite_model with the int8 file, each against
  `python -c "import tensorflow"`. Target (issue 12): the default path in at
  most 0.6 of the import.
- Agreement of the default path with the SavedModel on the folder's photos:
  the share of photos with the same top label, and the largest difference of
  any class's probability.
"""

import os
import shutil
import statistics
import sys

import numpy as np

from bench import measure
from bottleneck import config
from bottleneck.export import formats
from bottleneck import predict


def label_rows(table, *, backbone, pixels, model_dir, int8_path, paths,
               import_seconds, repeats):
  """Measures label_image.py and adds its rows to the table.

  Args:
    table: the `report.Table`.
    backbone: the float32 `backbones.Backbone` of the limit.
    pixels: uint8 [n, height, width, 3] decoded photos for the limit.
    model_dir: a model folder retrain.py exported (with classifier.tflite).
    int8_path: a --tflite_int8_output_file of the same run.
    paths: the photos to label (of every class).
    import_seconds: `python -c "import tensorflow"`, measured before.
    repeats: runs per figure (the median is reported).
  """
  earlier = os.path.join(os.path.dirname(model_dir), 'model_before_tflite')
  shutil.rmtree(earlier, ignore_errors=True)
  shutil.copytree(model_dir, earlier)  # The link's target, copied.
  os.remove(os.path.join(earlier, formats.CLASSIFIER_FILE))
  fast, note = predict.load_model_folder(model_dir)
  assert note is None and fast.source.endswith('.tflite (LiteRT)'), note
  models = (('label', fast),
            ('label_saved_model', predict.load_saved_model(model_dir)),
            ('label_int8', predict.load_tflite(int8_path)))
  # Interleaved with the backbone limit, as the cache stages' rounds are.
  samples = {'limit': [], **{name: [] for name, _ in models}}
  for _ in range(repeats):
    samples['limit'].append(measure.backbone_limit(
        backbone.features, pixels, batch_size=config.DEFAULT_BATCH_SIZE)[0])
    for name, model in models:
      samples[name].append(measure.label_folder(model, paths))
  rate = {k: statistics.median(v) for k, v in samples.items()}
  limit = rate['limit']
  table.speed(f'backbone limit, batch {config.DEFAULT_BATCH_SIZE}, measured '
              'between the label_image runs', limit)
  table.speed(f'label_image over a folder, {len(paths)} photos of every '
              'class (the model folder: its classifier.tflite)',
              rate['label'], limit, 'backbone limit', 0.8)
  table.speed(f'label_image over a folder, the SavedModel (TensorFlow), '
              f'{len(paths)} photos of every class', rate['label_saved_model'],
              limit, 'backbone limit')
  table.speed(f'label_image over a folder, int8 .tflite, {len(paths)} '
              'photos of every class', rate['label_int8'], limit,
              'backbone limit')

  def one_photo(flag):
    return statistics.median(measure.wall_time([
        sys.executable, 'label_image.py', f'--image={paths[0]}', flag])[0]
                             for _ in range(repeats))
  table.seconds('label_image.py, one photo, no model flag but the folder '
                '(its classifier.tflite, no TensorFlow; whole process)',
                one_photo(f'--saved_model_dir={model_dir}'), import_seconds,
                'import time', 0.6, at_most=True)
  table.seconds('label_image.py, one photo, a folder without '
                'classifier.tflite (the SavedModel; whole process)',
                one_photo(f'--saved_model_dir={earlier}'), import_seconds,
                'import time')
  table.seconds('label_image.py --tflite_model, int8, one photo (whole '
                'process)', one_photo(f'--tflite_model={int8_path}'),
                import_seconds, 'import time')

  agreement, difference = compare(fast, models[1][1], paths)
  table.agreement(f'label_image, the folder\'s classifier.tflite against its '
                  f'SavedModel, {len(paths)} photos of every class',
                  agreement, difference)


def compare(first, second, paths):
  """(share of photos with the same top label, largest probability gap).

  Args:
    first, second: `predict.LoadedModel`s with the same labels.
    paths: image files; every one must decode.
  """
  def probabilities(model):
    rows = []
    for _, result in predict.label_images(model, paths,
                                          top_k=len(model.labels)):
      assert not isinstance(result, Exception), result
      scores = dict(result)
      rows.append([scores[label] for label in first.labels])
    return np.array(rows)
  a, b = probabilities(first), probabilities(second)
  return (float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))),
          float(np.abs(a - b).max()))
