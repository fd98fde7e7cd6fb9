"""The benchmark's table: figures, ratios side by side, targets and verdicts.

The table is printed in Markdown, so that the README's Performance section is
a copy of what bench/run.py printed.
"""

import os
import platform
import sys


class Table:
  """Rows of (measurement, figure, ratio, target, met)."""

  def __init__(self, repeats):
    self._rows = []
    self._repeats = repeats

  def _add(self, name, figure, value=None, reference=None, reference_name='',
           target=None, at_most=False):
    """Adds a row; the ratio is value / reference, checked against target."""
    ratio = met = target_text = ''
    if reference:
      ratio = f'{value / reference:.2f}' + (
          f' x {reference_name}' if reference_name else '')
    if target is not None:
      target_text = f'{"<=" if at_most else ">="} {target:g}'
      ok = value / reference <= target if at_most else (
          value / reference >= target)
      met = 'yes' if ok else '**no**'
    self._rows.append((name, figure, ratio, target_text, met))

  def speed(self, name, rate, reference=None, reference_name='', target=None):
    """A throughput in images/s, optionally as a ratio of another."""
    self._add(name, f'{rate:.1f} images/s', rate, reference, reference_name,
              target)

  def ratio(self, name, value, reference, target):
    """A ratio of two figures shown in rows above."""
    self._add(name, '', value, reference, '', target)

  def seconds(self, name, seconds, reference=None, reference_name='',
              target=None, at_most=True):
    """A duration, optionally as a ratio of another."""
    self._add(name, f'{seconds:.2f} s', seconds, reference, reference_name,
              target, at_most)

  def accuracy(self, name, first, second, *, names=('reduced', 'full'),
               target=1.0):
    """Two test accuracies, and their gap against a target in points."""
    gap = abs(first - second) * 100
    self._rows.append((
        name, f'{names[0]} {first:.1%}, {names[1]} {second:.1%}',
        f'{gap:.1f} points apart',
        '' if target is None else f'<= {target:g} point',
        '' if target is None else 'yes' if gap <= target else '**no**'))

  def agreement(self, name, agreement, difference, *, target=1.0):
    """Two forms' answers: top-1 agreement (a share) and the largest
    difference of a probability, against a target share."""
    self._rows.append((
        name, f'top-1 agreement {agreement:.1%}, largest probability '
        f'difference {difference:.1e}', '', f'>= {target:.0%}',
        'yes' if agreement >= target else '**no**'))

  def memory(self, name, child, reference=None):
    """A child's peak RSS, optionally as a ratio of another child's."""
    rss = child['peak_rss_bytes']
    figure = (f'{rss / 2**20:,.0f} MiB ({child["photos"]:,} photos in '
              f'{child["seconds"]:.0f} s, one run)')
    if reference is None:
      self._add(name, figure)
    else:
      self._add(name, figure, rss, reference['peak_rss_bytes'], 'the above',
                1.2, at_most=True)

  def vectors_agreement(self, name, difference, cosine, tolerance):
    """Two sets of vectors: largest relative difference and smallest cosine."""
    self._rows.append((name, f'largest relative difference {difference:.1e}, '
                       f'smallest cosine {cosine:.7f}', '',
                       f'<= {tolerance:g}',
                       'yes' if difference <= tolerance else '**no**'))

  def print(self, *, machine, seconds):
    """Prints the table with the machine and the benchmark's own time."""
    print(f'\n{machine}; speeds are medians of {self._repeats} runs; the '
          f'benchmark took {seconds / 60:.0f} min.\n')
    print('| measurement | figure | ratio | target | met |')
    print('| --- | --- | --- | --- | --- |')
    for row in self._rows:
      print('| ' + ' | '.join(row) + ' |')
    sys.stdout.flush()


def machine(cores):
  """'<CPU model>, N cores, M GiB, Python x, TensorFlow y'.

  Args:
    cores: the cores the benchmark may run on (its CPU affinity); if the
      machine has more, '(of M)' follows.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bottleneck.features import probe  # pylint: disable=g-import-not-at-top
  model = probe.cpu_model()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      flags = next((line.split(':', 1)[1].split() for line in f
                    if line.startswith('flags')), [])
  except OSError:
    flags = []
  units = [name for flag, name in (('avx2', 'AVX2'), ('avx512f', 'AVX-512'),
                                   ('avx512_vnni', 'VNNI'),
                                   ('amx_int8', 'AMX')) if flag in flags]
  model += f', {" ".join(units)}' if units else ''
  memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
  of = '' if os.cpu_count() == cores else f' (of {os.cpu_count()})'
  return (f'{model}, {cores} cores{of}, {memory:.0f} GiB, Python '
          f'{platform.python_version()}, TensorFlow {tf.__version__}')
