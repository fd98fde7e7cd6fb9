"""Progress of a long loop: a bar on a terminal, plain log lines under cron.

  progress = Progress(len(todo), 'Caching bottlenecks', unit='images')
  for item in todo:
    ...
    progress.update()
  progress.close()

On a terminal, one line is redrawn in place at most 5 times a second:

  Caching bottlenecks [#########...........] 912/2,000 44.8 images/s ETA 0:24

Otherwise (cron mail, a log file, a pipe) a log line is written every
`interval` seconds, so that the output stays readable and small.
"""

import sys
import time

from absl import logging

_BAR_WIDTH = 20
_REDRAW_SECONDS = 0.2
LOG_SECONDS = 10.0


class Progress:
  """Counts finished items and reports count, rate and time left."""

  def __init__(self, total, what, *, unit='items', stream=None,
               interval=LOG_SECONDS, clock=time.monotonic):
    """Starts the clock.

    Args:
      total: number of items the loop will finish.
      what: what the loop does, starting with a capital ("Caching photos").
      unit: plural name of an item, for the rate.
      stream: where a bar is drawn; sys.stderr by default. The bar is drawn
        only if it is a terminal; otherwise progress is logged.
      interval: seconds between log lines when not on a terminal.
      clock: function returning seconds; tests pass a fake one.
    """
    self._total = total
    self._what = what
    self._unit = unit
    self._stream = stream or sys.stderr
    self._tty = _isatty(self._stream)
    self._interval = _REDRAW_SECONDS if self._tty else interval
    self._clock = clock
    self._start = self._last = clock()
    self._done = 0
    self._drawn = False

  def update(self, count=1):
    """Adds `count` finished items and reports if it is time to."""
    self._done += count
    now = self._clock()
    if now - self._last >= self._interval:
      self._last = now
      self._report(now)

  def clear(self):
    """Wipes the bar so that a log line can be written; the next update redraws."""
    if self._drawn:
      self._stream.write('\r\033[K')
      self._stream.flush()
      self._drawn = False

  def close(self):
    """Draws the final state (on a terminal) and ends the line."""
    if self._tty and self._total:
      self._report(self._clock())
      self._stream.write('\n')
      self._stream.flush()
      self._drawn = False

  def text(self, now):
    """The progress line without the bar: count, rate and time left."""
    elapsed = max(now - self._start, 1e-9)
    rate = self._done / elapsed
    left = (self._total - self._done) / rate if rate else None
    return (f'{self._done:,}/{self._total:,} {rate:.1f} {self._unit}/s '
            f'ETA {_clock_time(left)}')

  def _report(self, now):
    if not self._tty:
      logging.info('%s: %s', self._what, self.text(now))
      return
    filled = (_BAR_WIDTH * self._done // self._total if self._total
              else _BAR_WIDTH)
    bar = '#' * filled + '.' * (_BAR_WIDTH - filled)
    self._stream.write(f'\r{self._what} [{bar}] {self.text(now)}\033[K')
    self._stream.flush()
    self._drawn = True


def _isatty(stream):
  try:
    return stream.isatty()
  except (AttributeError, ValueError):  # No isatty, or a closed stream.
    return False


def _clock_time(seconds):
  """'1:02:03', '2:03' or '?' for an unknown time."""
  if seconds is None:
    return '?'
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{secs:02d}' if hours else f'{minutes}:{secs:02d}'
