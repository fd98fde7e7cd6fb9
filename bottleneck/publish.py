"""Atomic publication: a reader sees the old complete output or the new one.

Files are written beside their destination under a hidden temporary name,
fsynced, and renamed over it (`rename` replaces a file atomically).

A folder cannot be replaced by one rename, so the SavedModel folder is a
symbolic link to a version folder kept beside it:

  /tmp/retrained_model -> .retrained_model.versions/20261123-153000-4242
  /tmp/.retrained_model.versions/
      20261123-153000-4242/     the model now published
      20261122-030000-1717/     the one before, kept for readers that opened it

Publishing writes the new version folder, then renames a new link over the
old one. A run killed at any point leaves the link on the previous complete
version; the half-written folders it leaves are removed by the next run. (An
export folder of an earlier release, a real folder, is moved into the
versions folder the first time: only that once is there a moment without a
model.)
"""

import os
import re
import shutil
import tempfile
import time

# Files written here get the permissions open() would give (mkstemp's are 0600).
_UMASK = os.umask(0)
os.umask(_UMASK)
_KEEP_VERSIONS = 2


def write_file(path, data):
  """Writes bytes to `path` atomically."""
  replace_files([stage_file(path, data)])


def stage_file(path, data):
  """Writes bytes beside `path` under a temporary name, durably.

  Returns:
    (temporary path, path), for `replace_files`.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.',
                             dir=directory)
  try:
    os.chmod(tmp, 0o666 & ~_UMASK)
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  except BaseException:
    os.remove(tmp)
    raise
  return tmp, path


def replace_files(staged):
  """Renames each staged (temporary path, path) over its path."""
  for tmp, path in staged:
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def versions_dir(final_dir):
  """The hidden folder of the versions of the folder `final_dir`."""
  parent, name = os.path.split(os.path.abspath(final_dir))
  return os.path.join(parent, f'.{name}.versions')


def replace_dir(new_dir, final_dir):
  """Publishes the folder new_dir at final_dir (a link to a version folder).

  Args:
    new_dir: a complete folder on the same file system as final_dir.
    final_dir: the path readers use.
  """
  versions = versions_dir(final_dir)
  os.makedirs(versions, exist_ok=True)
  stem = os.path.join(versions,
                      f'{time.strftime("%Y%m%d-%H%M%S")}-{os.getpid()}')
  version, n = stem, 1
  while os.path.lexists(version):
    n += 1
    version = f'{stem}-{n}'
  os.rename(new_dir, version)
  fsync_dir(versions)
  parent = os.path.dirname(os.path.abspath(final_dir))
  link = os.path.join(parent, f'.{os.path.basename(final_dir)}.link-'
                      f'{os.getpid()}')
  if os.path.lexists(link):
    os.remove(link)
  os.symlink(os.path.relpath(version, parent), link)
  if os.path.isdir(final_dir) and not os.path.islink(final_dir):
    os.rename(final_dir, version + '-earlier')  # An earlier release's folder.
  os.replace(link, final_dir)
  fsync_dir(parent)
  remove_stale(final_dir)


def staging_dir(final_dir):
  """A new empty folder beside final_dir, to build its next version in."""
  parent, name = os.path.split(os.path.abspath(final_dir))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=f'.{name}.export-', dir=parent)


def remove_stale(final_dir):
  """Deletes what killed runs left beside final_dir, and old versions.

  The published version and the one before it are kept. The caller must hold
  final_dir's lock: another run's temporary files would look stale.
  """
  versions = versions_dir(final_dir)
  current = os.path.realpath(final_dir)
  parent, name = os.path.split(os.path.abspath(final_dir))
  if not os.path.isdir(parent):
    return
  if os.path.isdir(versions):
    done = sorted((v for v in os.listdir(versions)
                   if os.path.join(versions, v) != current),
                  key=lambda v: os.path.getmtime(os.path.join(versions, v)))
    for old in done[:max(0, len(done) - (_KEEP_VERSIONS - 1))]:
      shutil.rmtree(os.path.join(versions, old), ignore_errors=True)
  for entry in os.listdir(parent):
    if entry.startswith((f'.{name}.link-', f'.{name}.export-')):
      path = os.path.join(parent, entry)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        os.remove(path)


def remove_stale_files(path):
  """Deletes temporary files that a killed `stage_file` left for `path`."""
  directory, name = os.path.split(os.path.abspath(path))
  pattern = re.compile(rf'\.{re.escape(name)}\.[a-z0-9_]{{8}}$')
  if os.path.isdir(directory):
    for entry in os.listdir(directory):
      if pattern.match(entry):
        os.remove(os.path.join(directory, entry))


def fsync_dir(path):
  """Makes renames in the folder `path` durable."""
  fd = os.open(path or '.', os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
