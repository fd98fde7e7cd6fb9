"""The pictures of report.html, as inline SVG: no image files, no scripts.

SVG keeps the class names as text (sharp at any zoom, searchable, and
escaped like the rest of the page) and costs a few hundred bytes per class;
the page embeds it directly, so nothing is loaded from anywhere.
"""

import html
import math

# Character width of the 12 px sans-serif labels, to size the margins; long
# labels are cut to _LABEL_CHARS characters (the whole label is in the
# cell's tooltip and in the tables).
_CHAR_PX = 7
_LABEL_CHARS = 24
# Colours: a white-to-blue ramp for the heat map, and the curves'.
_LOW, _HIGH = (255, 255, 255), (8, 69, 148)
COLOURS = {'training': '#1f77b4', 'validation': '#d62728'}


def _e(text):
  return html.escape(str(text), quote=True)


def _short(label):
  return label if len(label) <= _LABEL_CHARS else label[:_LABEL_CHARS - 1] + '…'


def confusion_svg(matrix, labels):
  """The confusion matrix as an SVG heat map with the class names on its axes.

  Rows are true classes, columns predictions; a cell's colour is its share of
  its row (so each class's recall reads on the diagonal whatever its size),
  and it shows its count when there are at most 30 classes.

  Args:
    matrix: int [n, n] nested lists or array; row true class, column
      prediction.
    labels: list of n str.

  Returns:
    str, an <svg> element.
  """
  n = len(labels)
  cell = 36 if n <= 12 else 24 if n <= 30 else 12
  longest = max((len(_short(label)) for label in labels), default=1)
  left = 28 + _CHAR_PX * longest  # Room for the row labels and axis title.
  top = 28 + _CHAR_PX * longest  # Column labels, turned upright.
  width, height = left + n * cell + 2, top + n * cell + 2
  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="confusion" '
           f'role="img" aria-label="Confusion matrix" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" '
           'font-size="12">']
  parts.append(f'<text x="{left + n * cell / 2:.0f}" y="14" '
               'text-anchor="middle" font-weight="bold">predicted class</text>')
  parts.append(f'<text transform="translate(14 {top + n * cell / 2:.0f}) '
               'rotate(-90)" text-anchor="middle" font-weight="bold">true '
               'class</text>')
  for i, label in enumerate(labels):
    middle = i * cell + cell / 2 + 4
    parts.append(f'<text x="{left - 6}" y="{top + middle:.0f}" '
                 f'text-anchor="end">{_e(_short(label))}</text>')
    parts.append(f'<text transform="translate({left + middle:.0f} {top - 6}) '
                 f'rotate(-90)">{_e(_short(label))}</text>')
  for i, row in enumerate(matrix):
    total = sum(row)
    for j, count in enumerate(row):
      share = count / total if total else 0.0
      fill = '#%02x%02x%02x' % tuple(
          round(lo + (hi - lo) * share) for lo, hi in zip(_LOW, _HIGH))
      x, y = left + j * cell, top + i * cell
      parts.append(
          f'<g><title>{_e(labels[i])} -&gt; {_e(labels[j])}: {count}'
          f'</title><rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
          f'fill="{fill}" stroke="#999" stroke-width="0.5"/>')
      if n <= 30:
        parts.append(f'<text x="{x + cell / 2:.0f}" y="{y + cell / 2 + 4:.0f}"'
                     f' text-anchor="middle" fill="'
                     f'{"white" if share > 0.5 else "black"}">{count}</text>')
      parts.append('</g>')
  parts.append('</svg>')
  return ''.join(parts)


def line_chart(x, series, *, title, x_label, y_range=None):
  """A line chart of one or more series over the same x, as SVG.

  Args:
    x: list of numbers, increasing.
    series: {name: list of float or None, as long as x}; None leaves a gap.
      A name of `COLOURS` gets its colour.
    title: str, drawn above the chart.
    x_label: str, under the x axis.
    y_range: (low, high), or None for 0 up to the largest value.

  Returns:
    str, an <svg> element scaled to the page's width (its viewBox).
  """
  width, height = 480, 250
  left, right, top, bottom = 48, 12, 44, 40  # The legend is above.
  values = [v for points in series.values() for v in points if v is not None]
  low, high = y_range or (0.0, _round_up(max(values, default=1.0) or 1.0))
  x_low, x_high = (x[0], x[-1]) if x else (0, 1)
  x_high = x_high if x_high > x_low else x_low + 1

  def px(value):
    return left + (value - x_low) / (x_high - x_low) * (width - left - right)

  def py(value):
    return top + (high - value) / (high - low) * (height - top - bottom)

  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" '
           f'role="img" aria-label="{_e(title)}" viewBox="0 0 {width} '
           f'{height}" font-size="11">',
           f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" '
           f'font-weight="bold" font-size="13">{_e(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{width - left - right}" '
           f'height="{height - top - bottom}" fill="none" stroke="#999"/>']
  for tick in _ticks(low, high):
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(tick):.1f}" '
                 f'y2="{py(tick):.1f}" stroke="#eee"/><text x="{left - 4}" '
                 f'y="{py(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
  for tick in _ticks(x_low, x_high,
                     integer=all(isinstance(v, int) for v in x)):
    parts.append(f'<text x="{px(tick):.1f}" y="{height - bottom + 14}" '
                 f'text-anchor="middle">{tick:g}</text>')
  parts.append(f'<text x="{(left + width - right) / 2:.0f}" '
               f'y="{height - 6}" text-anchor="middle">{_e(x_label)}</text>')
  for k, (name, points) in enumerate(series.items()):
    colour = COLOURS.get(name, '#555')
    runs, run = [], []
    for xv, yv in zip(x, points):
      if yv is None:
        runs, run = runs + [run] if run else runs, []
      else:
        run.append(f'{px(xv):.1f},{py(yv):.1f}')
    runs += [run] if run else []
    for run in runs:
      parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"'
                   f' points="{" ".join(run)}"/>')
      if len(x) <= 30:  # Few points (epochs): mark them.
        parts.extend(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" '
                     f'r="3" fill="{colour}"/>' for p in run)
    legend_x = left + 110 * k
    parts.append(f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{top - 10}" '
                 f'y2="{top - 10}" stroke="{colour}" stroke-width="3"/>'
                 f'<text x="{legend_x + 22}" y="{top - 6}">{_e(name)}</text>')
  parts.append('</svg>')
  return ''.join(parts)


def _round_up(value):
  """The first of `_ticks`' round numbers at or above a positive value."""
  ticks = _ticks(0.0, value)
  step = ticks[1] - ticks[0] if len(ticks) > 1 else value
  return ticks[-1] if ticks[-1] >= value else round(ticks[-1] + step, 10)


def _ticks(low, high, count=5, integer=False):
  """About `count` round numbers between low and high (whole ones if
  `integer`: steps and epochs)."""
  span = high - low
  if span <= 0:
    return [low]
  step = 10 ** math.floor(math.log10(span / count))
  if integer:
    step = max(step, 1)
  for factor in (1, 2, 5, 10):
    if span / (step * factor) <= count:
      step *= factor
      break
  first = math.ceil(low / step) * step
  return [round(first + i * step, 10)
          for i in range(int((high - first) / step + 1e-9) + 1)]
