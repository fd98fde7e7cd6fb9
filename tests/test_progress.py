"""Tests of the progress reports: a bar on a terminal, log lines otherwise."""

import io
import logging
import sys

import pytest

from bottleneck import progress


class Terminal(io.StringIO):

  def isatty(self):
    return True


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_terminal_gets_a_bar_with_count_rate_and_eta():
  stream, clock = Terminal(), FakeClock()
  report = progress.Progress(100, 'Caching', unit='images', stream=stream,
                             clock=clock)
  clock.now += 5
  report.update(25)  # 25 in 5 s: 5 images/s, 75 left: 15 s.
  assert stream.getvalue() == (
      '\rCaching [#####...............] 25/100 5.0 images/s ETA 0:15\033[K')
  report.clear()
  assert stream.getvalue().endswith('\r\033[K')
  clock.now += 0.1
  report.update(1)  # Sooner than the redraw interval: nothing drawn.
  assert stream.getvalue().endswith('\r\033[K')
  clock.now += 14.9
  report.update(74)
  report.close()
  assert stream.getvalue().endswith(
      '[####################] 100/100 5.0 images/s ETA 0:00\033[K\n')


def test_a_pipe_gets_log_lines_at_the_interval(caplog):
  caplog.set_level(logging.INFO)
  stream, clock = io.StringIO(), FakeClock()
  report = progress.Progress(7200, 'Caching', unit='images', stream=stream,
                             interval=10, clock=clock)
  clock.now += 9
  report.update(9)
  assert 'Caching' not in caplog.text
  clock.now += 1
  report.update(1)  # 10 images in 10 s: 7190 s left.
  assert 'Caching: 10/7,200 1.0 images/s ETA 1:59:50' in caplog.text
  report.close()
  assert stream.getvalue() == ''  # Nothing drawn for a pipe.


def test_eta_is_unknown_before_the_first_item():
  report = progress.Progress(10, 'Caching', stream=io.StringIO())
  assert report.text(report._start + 1).endswith('ETA ?')


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
