"""The text sections of report.html (see `report`), each from metrics.json.

Each function takes the metrics dict (or one entry of it) and returns an HTML
<section>, or '' when the run has nothing for it. Every value that comes from
the user (labels, paths, flags, reasons) is escaped here.
"""

import html
import json
import os

# The settings shown up front; every flag is listed under them, folded.
KEY_FLAGS = ('image_dir', 'tfhub_module', 'bottleneck_layers', 'image_sizes',
             'backbone_precision', 'mirror_average', 'head_recipe',
             'fine_tune_blocks', 'how_many_training_steps',
             'testing_percentage', 'validation_percentage', 'random_seed',
             'min_test_accuracy', 'promote_if_better')
FORM_NAMES = {'saved_model': 'SavedModel',
              'saved_model_tflite': 'classifier.tflite (in the model folder)',
              'frozen_graph': 'frozen graph',
              'tflite_float32': 'TFLite float32', 'tflite_int8': 'TFLite int8'}
SPLITS = ('training', 'validation', 'testing')
# Skipped files listed; the rest are in metrics.json.
MAX_SKIPPED = 500


def _e(text):
  return html.escape(str(text), quote=True)


def percent(value, digits=1):
  return '–' if value is None else f'{value:.{digits}%}'


def _section(section_id, title, content):
  return f'<section id="{section_id}"><h2>{_e(title)}</h2>{content}</section>'


def _table(header, rows, *, numeric=()):
  """A scrollable table; cells are already-escaped HTML; columns whose index
  is in `numeric` are right-aligned."""
  def cells(tag, values):
    return ''.join(f'<{tag}{" class=num" if i in numeric else ""}>{v}</{tag}>'
                   for i, v in enumerate(values))
  body = ''.join(f'<tr>{cells("td", row)}</tr>' for row in rows)
  return (f'<div class="scroll"><table><thead><tr>{cells("th", header)}</tr>'
          f'</thead><tbody>{body}</tbody></table></div>')


def decision(metrics):
  """The decision, the test accuracy, and each exported form's."""
  verdict = metrics.get('decision') or 'unknown'
  published = verdict == 'published'
  accuracy = metrics.get('test_accuracy')
  box = (f'<div class="decision {"published" if published else "refused"}">'
         f'<b>{"Published" if published else "Not published"}</b>'
         f'{"" if published else ": " + _e(verdict)}</div>'
         f'<p>Final test accuracy <span class="big" id="test-accuracy">'
         f'{percent(accuracy)}</span> '
         f'<span class="muted">(N={metrics.get("test_photos", 0):,} test '
         f'photos, the head on the cached vectors)</span></p>')
  exports = metrics.get('exports') or {}
  if exports:
    box += '<h3>Exported forms on the test photos</h3>' + _table(
        ('form', 'features', 'test accuracy', 'path'),
        [(_e(FORM_NAMES.get(form, form)), _e(e.get('features', '')),
          percent(e.get('test_accuracy')), _e(e.get('path', '')))
         for form, e in exports.items()], numeric=(2,))
  elif published:
    box += ('<p class="muted">The exports run the very function the head was '
            'trained on; no form was measured apart.</p>')
  gate = metrics.get('gate')
  if gate:
    box += ('<p class="muted">Quality gate (--promote_if_better): on '
            f'{gate.get("photos")} {_e(gate.get("compared_on"))} photos, new '
            f'{percent(gate.get("new_accuracy"))} against '
            f'{percent(gate.get("in_place_accuracy"))} for the model in '
            f'place ({_e(gate.get("in_place"))}).</p>')
  return _section('decision', 'Decision', box)


def calibration(figures):
  """metrics['calibration'] (temperature scaling), if the run has it."""
  if not figures:
    return ''
  return _section('calibration', 'Calibration', (
      '<p>The logits are divided by a temperature fitted on the validation '
      'photos, so that a score of 0.9 is right about 9 times in 10. On the '
      'test photos, expected calibration error (ECE) and mean cross entropy '
      '(lower is better):</p>' + _table(
          ('temperature', 'ECE before', 'ECE after', 'cross entropy before',
           'after'),
          [(f'{figures["temperature"]:.3f}',
            percent(figures.get('ece_before'), 2),
            percent(figures.get('ece_after'), 2),
            _number(figures.get('nll_before')),
            _number(figures.get('nll_after')))], numeric=(0, 1, 2, 3, 4))))


def _number(value):
  return '–' if value is None else f'{value:.4f}'


def unknown(figures):
  """metrics['unknown'] (the open-set score and threshold), if present."""
  if not figures:
    return ''
  return _section('unknown', 'Unknown photos', (
      '<p>A photo too far from every class it was taught is answered '
      '<b>unknown</b>. Share of photos of the known classes turned away at '
      'the threshold:</p>' + _table(
          ('method', 'threshold', 'validation', 'test'),
          [(_e(figures.get('method', '')), f'{figures["threshold"]:.4g}',
            percent(figures.get('validation_unknown_rate')),
            percent(figures.get('test_unknown_rate')))], numeric=(1, 2, 3))))


def data(metrics):
  """The classes and their photo counts per split."""
  counts = metrics.get('counts') or {}
  totals = {name: sum(c.get(name, 0) for c in counts.values())
            for name in SPLITS}
  rows = [(_e(label), *(f'{c.get(name, 0):,}' for name in SPLITS),
           f'{sum(c.get(name, 0) for name in SPLITS):,}')
          for label, c in counts.items()]
  rows.append(('<b>all</b>', *(f'<b>{totals[n]:,}</b>' for n in SPLITS),
               f'<b>{sum(totals.values()):,}</b>'))
  image_dir = (metrics.get('flags') or {}).get('image_dir', '')
  return _section('classes', 'Photos', (
      f'<p>{len(counts)} classes from <code>{_e(image_dir)}</code>; '
      f'{metrics.get("skipped_count", 0)} file(s) skipped (below).</p>'
      + _table(('class', *SPLITS, 'total'), rows, numeric=(1, 2, 3, 4))))


def model(metrics):
  """The backbone, and the run's settings."""
  b = metrics.get('backbone') or {}
  flags = metrics.get('flags') or {}
  sizes = b.get('image_sizes') or []
  rows = [('backbone', b.get('name')), ('identity', b.get('identity')),
          ('input size', 'x'.join(map(str, b.get('image_size') or []))),
          ('passes at', ', '.join(map(str, sizes)) if len(sizes) > 1 else None),
          ('layers pooled', ', '.join(b.get('layers') or [])),
          ('features', b.get('feature_dim')),
          ('precision', b.get('precision')),
          ('fine-tuned blocks', b.get('tuned_blocks')),
          ('preprocessing', b.get('preprocessing'))]
  backbone = _table(('', ''), [(_e(k), _e(v)) for k, v in rows
                                if v not in (None, '')])
  key = _table(('flag', 'value'), [(f'--{_e(k)}', _e(_flag(flags[k])))
                                    for k in KEY_FLAGS if k in flags])
  every = _table(('flag', 'value'), [(f'--{_e(k)}', _e(_flag(v)))
                                      for k, v in sorted(flags.items())])
  seconds = metrics.get('durations_seconds') or {}
  durations = ('<p class="muted">Time: ' + _e(', '.join(
      f'{k} {v:.1f} s' for k, v in seconds.items())) + '.</p>'
               if seconds else '')
  return _section('model', 'Backbone and settings', (
      backbone + '<h3>Key settings</h3>' + key +
      f'<details><summary>All {len(flags)} settings</summary>{every}'
      f'</details>{durations}'))


def _flag(value):
  return value if isinstance(value, str) else json.dumps(value)


def per_class(metrics):
  """Precision, recall and F1 of each class on the test photos."""
  rows = []
  for label, c in (metrics.get('per_class') or {}).items():
    p, r = c.get('precision'), c.get('recall')
    if p is None or r is None:
      f1 = None
    else:
      f1 = 2 * p * r / (p + r) if p + r else 0.0
    rows.append((_e(label), percent(p), percent(r), percent(f1),
                 f'{c.get("support", 0):,}'))
  return _section('per-class', 'Per class (test photos)', _table(
      ('class', 'precision', 'recall', 'F1', 'test photos'), rows,
      numeric=(1, 2, 3, 4)) + '<p class="muted">–: no test photo was '
      'predicted as (precision) or is of (recall) that class.</p>')


def skipped(metrics):
  """The files the run skipped, with their reasons."""
  files = metrics.get('skipped') or []
  if not files:
    return _section('skipped', 'Skipped files', '<p>None.</p>')
  rows = [(f'<span title="{_e(s["path"])}">{_e(os.path.basename(s["path"]))}'
           f'</span>', _e(s.get('reason', '')), _e(s['path']))
          for s in files[:MAX_SKIPPED]]
  more = (f'<p class="muted">{len(files) - MAX_SKIPPED} more in '
          'metrics.json.</p>' if len(files) > MAX_SKIPPED else '')
  table = _table(('file', 'reason', 'path'), rows).replace(
      '<td>', '<td class="path">')  # Long paths and reasons wrap.
  return _section('skipped', f'Skipped files ({len(files)})', table + more)
