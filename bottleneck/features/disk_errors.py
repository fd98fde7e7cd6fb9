"""The bottleneck cache's disk, as the machine sees it: errors that are not damage.

h5py raises OSError both for a damaged file and for a machine that cannot
read or write it (permissions, a full disk, an I/O error). `store` renames a
damaged file aside and rebuilds it; a file the machine cannot use is left
where it is, and the run ends with `errors.UsageError` (exit code 2) that
names the file and what to do. This module tells the two apart.
"""

import contextlib
import errno
import os
import re

from bottleneck import errors


def errno_of(error):
  """The errno of an OSError the machine raised (EACCES, EIO...); 0 for damage.

  h5py raises OSError for both. Its message carries the system's errno
  ("... errno = 13, error message = 'Permission denied' ...") when a system
  call failed, and h5py 3.x copies it into `errno`; a damaged file fails
  HDF5's own checks ("file signature not found", "truncated file", "filter
  returned failure during read": Fletcher-32) with no errno.
  """
  if not isinstance(error, OSError):
    return 0
  found = re.search(r'errno = (\d+)', str(error))
  return error.errno or (int(found.group(1)) if found else 0)


def cannot_use(path, doing, error):
  """The `errors.UsageError` for a cache file the machine cannot use."""
  code = errno_of(error)
  if code in (errno.EACCES, errno.EPERM, errno.EROFS):
    fix = ('give the user running retrain.py read and write access to it and '
           'to its folder')
  elif code in (errno.ENOSPC, errno.EDQUOT):
    fix = 'free some space on its disk'
  else:
    fix = 'check the disk (an I/O error may mean a failing disk)'
  return errors.UsageError(
      f'Cannot {doing} the bottleneck cache {path}: {os.strerror(code)} '
      f'(errno {errno.errorcode.get(code, code)}); it was left as it is. To '
      f'fix: {fix}, or pass another --bottleneck_dir.')


@contextlib.contextmanager
def machine_errors(path, doing):
  """Turns h5py's OSErrors that carry an errno into `cannot_use`'s error."""
  try:
    yield
  except OSError as e:
    if not errno_of(e) or e.filename:
      raise  # Damage, or a Python OSError that names its file already.
    raise cannot_use(path, doing, e) from e
