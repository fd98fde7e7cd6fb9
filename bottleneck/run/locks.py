"""Locks that keep two runs from writing the same cache or outputs at once.

A run takes an exclusive `flock` on a lock file for its bottleneck folder and
for each output path before it writes anything:

  <bottleneck_dir>/.lock
  <parent>/.<name>.lock      for --saved_model_dir, --output_labels and
                             --output_graph

The kernel releases a flock when its process ends, however it ends (SIGKILL,
a crash), so a lock is never left stale. A second run either exits at once
with `errors.LockedError` (the default) or waits up to --lock_timeout seconds.
The lock file holds the PID of the run that has it, for the error message.
"""

import contextlib
import fcntl
import os
import time

from bottleneck import errors

_POLL_SECONDS = 0.2


def lock_path(path, *, folder=False):
  """The lock file of an output path, or of a folder used as a whole."""
  path = os.path.abspath(path)
  if folder:
    return os.path.join(path, '.lock')
  return os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.lock')


@contextlib.contextmanager
def hold(lock_files, *, timeout):
  """Holds exclusive locks on all of `lock_files` inside a `with` block.

  Args:
    lock_files: paths of lock files (created if missing); taken in sorted
      order, so that two waiting runs cannot deadlock.
    timeout: seconds to wait for a lock held by another run; 0 to fail at
      once, a negative number to wait for as long as it takes.

  Raises:
    errors.LockedError: a lock is still held by another run after `timeout`.
  """
  with contextlib.ExitStack() as stack:
    for path in sorted(set(lock_files)):
      stack.enter_context(_locked(path, timeout))
    yield


@contextlib.contextmanager
def _locked(path, timeout):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    deadline = time.monotonic() + timeout
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if timeout >= 0 else 0))
        break
      except BlockingIOError:
        if time.monotonic() >= deadline:
          raise errors.LockedError(_held_message(path, fd, timeout)) from None
        time.sleep(_POLL_SECONDS)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode('ascii'), 0)
    yield
  finally:
    os.close(fd)  # Closing releases the lock.


def _held_message(path, fd, timeout):
  holder = os.pread(fd, 32, 0).decode('ascii', 'replace').strip() or '?'
  waited = (f'after waiting {timeout:g} s' if timeout > 0 else
            'and --lock_timeout is 0')
  return (f'Another run (PID {holder}) holds {path} {waited}: it is writing '
          'the same bottleneck cache or outputs. Let it finish, or pass '
          '--lock_timeout SECONDS to wait for it (-1: as long as it takes).')
