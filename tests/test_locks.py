"""Tests of the run locks."""

import sys
import threading
import time

import pytest

from bottleneck import errors
from bottleneck.run import locks


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
  path = locks.lock_path(str(tmp_path / 'cache'), folder=True)
  with locks.hold([path], timeout=0):
    with pytest.raises(errors.LockedError, match=r'Another run \(PID \d+\)'):
      with locks.hold([path], timeout=0):
        pass
  with locks.hold([path], timeout=0):  # Released on leaving the block.
    pass


def test_a_waiting_holder_gets_the_lock_when_it_is_released(tmp_path):
  path = locks.lock_path(str(tmp_path / 'model'))
  assert path == str(tmp_path / '.model.lock')
  released = threading.Event()

  def hold_briefly(ready):
    with locks.hold([path], timeout=0):
      ready.set()
      time.sleep(0.5)
    released.set()

  ready = threading.Event()
  thread = threading.Thread(target=hold_briefly, args=(ready,))
  thread.start()
  ready.wait()
  with pytest.raises(errors.LockedError, match='after waiting 0.1 s'):
    with locks.hold([path], timeout=0.1):
      pass
  with locks.hold([path], timeout=5):
    assert released.is_set()
  thread.join()


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
