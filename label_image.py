r"""Label images with a model exported by retrain.py.

  python label_image.py --image photo.jpg
  python label_image.py --image photos/ --output_format csv
  python label_image.py --image 'photos/*/*.jpg' --output_format json
  python label_image.py --graph /tmp/output_graph.pb \
      --labels /tmp/output_labels.txt --image photo.jpg
  python label_image.py --tflite_model model.tflite --image photo.jpg

With no model flag it reads the model folder that retrain.py exports by
default (--saved_model_dir): its classifier.tflite, the same backbone and head
as the SavedModel beside it, run with LiteRT, so that TensorFlow is never
imported (one photo in a fraction of a second instead of seconds). Only a
folder exported before that file existed falls back to the SavedModel, with
TensorFlow, and says so in one line. --verbosity 1 logs which file is run.
The input size and preprocessing come from the model itself.

A photo that looks like none of the classes the model was trained on (its
"unknown" score, fitted by retrain.py on the training photos, is above
--unknown_threshold) gets "unknown" as its first line; the labels follow as
usual.
"""

import csv
import json
import sys

from absl import app
from absl import flags
from absl import logging

from bottleneck.run import cli
from bottleneck import config
from bottleneck import errors
from bottleneck import predict
from bottleneck.data import images

flags.DEFINE_string('image', None,
                    'Image file, folder of images, or glob ("photos/*.jpg").')
flags.DEFINE_string('graph', None,
                    'Frozen graph (retrain.py --output_graph) to use instead '
                    'of --saved_model_dir.')
flags.DEFINE_string(
    'tflite_model', None,
    '.tflite model (retrain.py --tflite_output_file or '
    '--tflite_int8_output_file) to use instead of --saved_model_dir; its '
    'labels are inside it.')
flags.DEFINE_string(
    'labels', None,
    'Labels file, one label per line: of --graph (default: '
    f'{config.RETRAIN_DEFAULTS["output_labels"]}, where retrain.py writes it), '
    'or of a --tflite_model from another tool (retrain.py\'s carry theirs).')
flags.DEFINE_string('input_layer', 'Placeholder', 'Input node of --graph.')
flags.DEFINE_string('output_layer', config.RETRAIN_DEFAULTS['final_tensor_name'],
                    'Output node of --graph.')
flags.DEFINE_integer('top_k', config.DEFAULT_TOP_K,
                     'How many labels to print per image.')
flags.DEFINE_enum('output_format', 'text', config.OUTPUT_FORMATS,
                  'text: "label score" lines (one line per image for several '
                  'images); json; csv.')
flags.DEFINE_float(
    'unknown_threshold', config.DEFAULT_UNKNOWN_THRESHOLD,
    'An image whose "unknown" score is above this is reported as unknown '
    '(first line "unknown"; json "unknown": true; a csv row labelled unknown). '
    'The score is 1.0 at the threshold retrain.py fitted on its validation '
    'photos (about 5%% of photos like the training ones are turned away); '
    'higher turns away fewer. -1: never. Models without the score (frozen '
    'graphs, older exports) never say unknown.')
flags.DEFINE_integer('batch_size', config.DEFAULT_BATCH_SIZE,
                     'Images per model call.')

FLAGS = flags.FLAGS


def _label(extra_images):
  """Labels --image and any further arguments (an unquoted glob expands)."""
  patterns = ([FLAGS.image] if FLAGS.image else []) + list(extra_images)
  if not patterns:
    raise errors.UsageError('--image is required: an image file, a folder or '
                            'a glob.')
  if FLAGS.top_k < 1 or FLAGS.batch_size < 1:
    raise errors.UsageError('--top_k and --batch_size must be >= 1.')
  paths = [path for pattern in patterns
           for path in images.find_images(pattern)]
  if FLAGS.graph and FLAGS.tflite_model:
    raise errors.UsageError('Pass --graph or --tflite_model, not both.')
  if FLAGS.tflite_model:
    model = predict.load_tflite(FLAGS.tflite_model, labels_path=FLAGS.labels)
  elif FLAGS.graph:
    model = predict.load_frozen_graph(
        FLAGS.graph, FLAGS.labels or config.RETRAIN_DEFAULTS['output_labels'],
        input_layer=FLAGS.input_layer, output_layer=FLAGS.output_layer)
  else:
    model, note = predict.load_model_folder(FLAGS.saved_model_dir)
    if note:
      print(f'label_image.py: {note}', file=sys.stderr)
  logging.debug('Labelling with %s.', model.source)
  results = predict.label_images(model, paths, top_k=FLAGS.top_k,
                                 batch_size=FLAGS.batch_size,
                                 unknown_threshold=FLAGS.unknown_threshold)
  labelled = _print(results, FLAGS.output_format, single=len(paths) == 1)
  if not labelled and len(paths) == 1:
    return errors.EXIT_NO_DATA  # Its one-line error is printed already.
  if not labelled:
    raise errors.DataError(f'None of the {len(paths)} images could be '
                           'labelled; see the lines above.')
  return errors.EXIT_OK


# What an image that looks like none of the classes is reported as.
UNKNOWN = 'unknown'


def _print(results, output_format, *, single):
  """Prints results to stdout and errors to stderr; returns how many labelled."""
  labelled = 0
  records = []
  writer = csv.writer(sys.stdout)
  if output_format == 'csv':
    writer.writerow(['image', 'rank', 'label', 'score'])
  for path, result in results:
    if isinstance(result, errors.DecodeError):
      cli.print_error('label_image.py', result)
      records.append({'image': path, 'error': result.reason})
      continue
    labelled += 1
    record = {'image': path, 'unknown': result.unknown}
    if result.unknown_score is not None:
      record['unknown_score'] = result.unknown_score
    records.append(dict(record, predictions=[
        {'label': label, 'score': score} for label, score in result]))
    unknown = [UNKNOWN] if result.unknown else []
    if output_format == 'csv':
      writer.writerows([[path, 0, UNKNOWN, f'{result.unknown_score:.6f}']]
                       if result.unknown else [])
      writer.writerows([path, rank, label, f'{score:.6f}']
                       for rank, (label, score) in enumerate(result, 1))
    elif output_format == 'text' and single:
      print('\n'.join(unknown + [f'{label} {score:.5f}'
                                 for label, score in result]))
    elif output_format == 'text':
      print(f'{path}: ' + ', '.join(unknown + [f'{label} {score:.5f}'
                                               for label, score in result]))
    sys.stdout.flush()
  if output_format == 'json':
    print(json.dumps(records, indent=2))
  return labelled


def main(argv):
  # A file name that is not valid UTF-8 is printed as its original bytes
  # rather than failing the run with UnicodeEncodeError.
  if hasattr(sys.stdout, 'reconfigure'):
    sys.stdout.reconfigure(errors='surrogateescape')
  return cli.run('label_image.py', lambda: _label(argv[1:]))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
