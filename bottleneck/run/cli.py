"""What retrain.py and label_image.py share: one flag, log settings, errors.

The tools import this module before any module that imports TensorFlow, so
that the log level below is set in time.

Library code raises `errors.BottleneckError`; `run` turns it into one line on
stderr and the error's exit code, so that a user mistake never shows a
traceback. Any other exception is a bug and keeps its traceback.
"""

import logging
import os
import sys

from absl import flags
from absl import logging as absl_logging

from bottleneck import config
from bottleneck import errors

# TensorFlow's C++ log lines (CUDA probing on a CPU machine) are noise in a
# terminal and in cron mail; its errors still reach Python as exceptions. Set
# TF_CPP_MIN_LOG_LEVEL=0 to see them. (Two lines logged while TensorFlow loads
# only obey the variable when it is set before Python starts.)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# Both tools take --saved_model_dir: retrain.py writes the export there and
# label_image.py reads it, and they must agree on the default.
flags.DEFINE_string(
    'saved_model_dir', config.DEFAULT_SAVED_MODEL_DIR,
    'Folder of the exported model: the SavedModel (backbone, preprocessing, '
    'head, labels) and its classifier.tflite.')


class _LibraryInfoFilter(logging.Filter):
  """Drops INFO lines that TensorFlow and Keras log through absl.

  Saving a SavedModel alone logs a line of hundreds of renamed inputs, and a
  Beam pipeline a line per channel it opens; a person reading retrain.py's
  output (or cron's mail) wants this project's lines.
  """
  _NOISY = tuple(os.sep + name + os.sep for name in
                 ('tensorflow', 'keras', 'tf_keras', 'tensorflow_hub',
                  'apache_beam'))

  def filter(self, record):
    return (record.levelno >= logging.WARNING or
            not any(part in record.pathname for part in self._NOISY))


def quiet_library_logs():
  """Keeps TensorFlow's and Keras's own INFO lines out of the output."""
  logging.getLogger('tensorflow').setLevel(logging.WARNING)
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())


def print_error(program, message):
  """Prints `program: error: message` on stderr: the one form of every error."""
  print(f'{program}: error: {message}', file=sys.stderr)


def parse_flags(argv):
  """app.run's flags_parser: a malformed flag exits with EXIT_USAGE (absl: 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print_error(os.path.basename(argv[0]),
                f'{e}. Pass --helpshort to see the flags.')
    sys.exit(errors.EXIT_USAGE)


def run(program, work):
  """Calls work() and maps what it raises to an exit code.

  Args:
    program: the tool's name, printed before error messages.
    work: a function of no arguments that returns an exit code or None.

  Returns:
    The exit code: work()'s, or the raised error's.
  """
  quiet_library_logs()
  try:
    return work() or errors.EXIT_OK
  except errors.BottleneckError as e:
    print_error(program, e)
    return e.exit_code
  except OSError as e:
    if e.filename is None:
      raise  # Not about a path the user gave: a bug, keep the traceback.
    print_error(program, f'cannot use {e.filename}: {e.strerror}. Check the '
                'path and its permissions.')
    return errors.EXIT_USAGE
  except KeyboardInterrupt:
    print(f'{program}: interrupted', file=sys.stderr)
    return 130
