"""Exceptions the library raises for problems a user can fix, and their exit codes.

Library code raises these; only the command-line tools turn them into a one-line
message and an exit code. Anything else that escapes is a bug (exit code 1).
"""

EXIT_OK = 0
EXIT_INTERNAL = 1     # An unexpected exception: a bug, reported with a traceback.
EXIT_USAGE = 2        # Bad flags or flag values; nothing was done.
EXIT_NO_DATA = 3      # The photos (or the images to label) cannot give a result.
EXIT_MODEL = 4        # A backbone or an exported model cannot be loaded.
EXIT_QUALITY = 5      # A model was trained but not published (quality gate).
EXIT_LOCKED = 6       # Another run holds the lock on the cache or the outputs.


class BottleneckError(Exception):
  """Base class: a problem the user can fix. The message says what and how."""
  exit_code = EXIT_INTERNAL


class UsageError(BottleneckError):
  """A flag or argument value is not allowed."""
  exit_code = EXIT_USAGE


class DataError(BottleneckError):
  """The image folder cannot give a model (missing, empty, too few classes)."""
  exit_code = EXIT_NO_DATA


class ModelError(BottleneckError):
  """A backbone or an exported model cannot be loaded or used."""
  exit_code = EXIT_MODEL


class QualityError(BottleneckError):
  """The new model failed the quality gate; the model in place was kept."""
  exit_code = EXIT_QUALITY


class LockedError(BottleneckError):
  """Another run holds a lock this run needs."""
  exit_code = EXIT_LOCKED


class DecodeError(BottleneckError):
  """One file is not an image that can be used. Callers skip the file.

  Attributes:
    path: the file.
    reason: what is wrong with it, in a few words.
  """
  exit_code = EXIT_NO_DATA

  def __init__(self, path, reason):
    super().__init__(f'{path}: {reason}')
    self.path = path
    self.reason = reason
