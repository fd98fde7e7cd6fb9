"""report.html: one page that says what a run trained, and how well, at a glance.

Written into every published model folder beside metrics.json, and beside
the refused metrics as <saved_model_dir>.refused-report.html when the quality
gate refuses a model. It is built from the metrics.json dict (see
`train.metrics`) and the test photos the head got wrong:

  the decision and the test accuracy of each exported form; the calibration
  and "unknown" figures when the run has them; the classes with their photo
  counts per split; the backbone and the settings; per-class precision,
  recall and F1; the confusion matrix as a heat map and the most confused
  pairs; the training curves; the misclassified test photos as thumbnails,
  the most confident mistakes first (fastai's "top losses"); the skipped
  files with their reasons.

The page is self-contained (inline CSS and SVG, thumbnails as base64 JPEG
data: URIs; no script, nothing fetched), reflows on a phone's width, and
escapes every label and path, which are the user's text. A few hundred KB
with the 60 thumbnails it shows at most.
"""

import base64
import html
import io
import os
import time

import numpy as np
from PIL import Image
from PIL import ImageOps

from bottleneck.run import report_charts
from bottleneck.run import report_tables

# Misclassified test photos shown as thumbnails; the count of the rest is said.
MAX_MISTAKES = 60
THUMBNAIL_PX = 128
# Most confused pairs listed (off-diagonal cells of the confusion matrix).
CONFUSED_PAIRS = 5

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
 margin:0 auto;max-width:1000px;padding:12px;color:#202124;line-height:1.45}
h1{font-size:1.6em;margin:.3em 0}h2{font-size:1.25em;margin-top:1.6em;
 border-bottom:1px solid #ddd}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:14px;margin:.4em 0}
th,td{border-bottom:1px solid #e0e0e0;padding:3px 8px;text-align:left;
 vertical-align:top;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.path{white-space:normal;word-break:break-all;min-width:12em}
.decision{padding:10px 14px;border-radius:4px;margin:.6em 0}
.published{background:#e6f4ea;border-left:6px solid #1e8e3e}
.refused{background:#fce8e6;border-left:6px solid #d93025}
.big{font-size:2em;font-weight:600}
.muted{color:#5f6368;font-size:.9em}
code{overflow-wrap:anywhere}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.charts svg{width:100%;max-width:480px;height:auto}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}
figure.thumb{margin:0;width:128px;font-size:12px;overflow-wrap:anywhere}
figure.thumb img{width:128px;height:128px;object-fit:contain;
 background:#f1f3f4;display:block}
@media (max-width:600px){body{padding:8px}h1{font-size:1.35em}
 .big{font-size:1.6em}}
"""


def refused_path(saved_model_dir):
  """Where the report of a model the quality gate refused is written."""
  return os.path.abspath(saved_model_dir) + '.refused-report.html'


def mistakes(head, test_data, test_photos, labels):
  """The test photos the head classifies wrong, the most confident first.

  Args:
    head: the trained `head.Head`.
    test_data: (float32 [n, feature_dim] vectors, int [n] classes).
    test_photos: list of n `images.Photo`, in the same order.
    labels: list of str, class-index order.

  Returns:
    list of {'path', 'truth', 'predicted' (labels), 'score' (the head's
    probability of its wrong answer), 'truth_score'}, highest score first.
  """
  vectors, truth = test_data
  if not len(truth):
    return []
  probabilities = head.probabilities(np.asarray(vectors, np.float32))
  predicted = probabilities.argmax(axis=1)
  wrong = [i for i in range(len(truth)) if predicted[i] != truth[i]]
  found = [{'path': test_photos[i].path, 'truth': labels[truth[i]],
            'predicted': labels[predicted[i]],
            'score': float(probabilities[i, predicted[i]]),
            'truth_score': float(probabilities[i, truth[i]])} for i in wrong]
  return sorted(found, key=lambda m: -m['score'])


def render(metrics, *, mistakes=(), created=None):  # pylint: disable=redefined-outer-name
  """The report page of a run.

  Args:
    metrics: the metrics.json dict (`train.metrics.build`, with 'exports' when
      published), optionally with 'calibration' ({'temperature', 'ece_before',
      'ece_after'}) and 'unknown' ({'method', 'threshold',
      'validation_unknown_rate', 'test_unknown_rate'}).
    mistakes: from `mistakes`, the most confident first.
    created: str, when the report was made; None for now.

  Returns:
    bytes: the HTML page, UTF-8.
  """
  labels = metrics.get('labels') or []
  decision = metrics.get('decision') or ''
  title = (f'{len(labels)}-class model: '
           f'{"published" if decision == "published" else decision[:80]}')
  created = created or time.strftime('%Y-%m-%d %H:%M:%S %z')
  body = [f'<h1>Model report</h1><p class="muted">{_e(created)} · '
          f'{len(labels)} classes: {_e(", ".join(labels))}</p>',
          report_tables.decision(metrics),
          report_tables.calibration(metrics.get('calibration')),
          report_tables.unknown(metrics.get('unknown')),
          report_tables.data(metrics),
          report_tables.model(metrics),
          report_tables.per_class(metrics),
          _confusion(metrics),
          _curves(metrics.get('curves') or {}, metrics.get('flags') or {}),
          _mistakes(list(mistakes), metrics.get('confusion_matrix') or []),
          report_tables.skipped(metrics)]
  page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          '<meta name="viewport" content="width=device-width, '
          'initial-scale=1">'
          f'<title>{_e(title)}</title><style>{_CSS}</style></head><body>'
          + '\n'.join(part for part in body if part) + '</body></html>\n')
  return page.encode('utf-8')


def _e(text):
  return html.escape(str(text), quote=True)


def _confusion(metrics):
  matrix, labels = metrics.get('confusion_matrix'), metrics.get('labels')
  if not matrix or not sum(map(sum, matrix)):
    return ('<section id="confusion"><h2>Confusion matrix</h2><p>No test '
            'photos: nothing to show.</p></section>')
  pairs = sorted(((count, labels[i], labels[j])
                  for i, row in enumerate(matrix)
                  for j, count in enumerate(row) if i != j and count),
                 key=lambda p: -p[0])
  if pairs:
    items = ''.join(f'<li>{_e(true)} → {_e(predicted)}: {count}</li>'
                    for count, true, predicted in pairs[:CONFUSED_PAIRS])
    confused = (f'<h3>Most confused pairs</h3><ol id="confused-pairs">'
                f'{items}</ol>')
  else:
    confused = '<p id="confused-pairs">No test photo was confused.</p>'
  return (f'<section id="confusion"><h2>Confusion matrix</h2><p '
          f'class="muted">Test photos; row: true class, column: predicted '
          f'class; the colour is the share of the row.</p><div '
          f'class="scroll">{report_charts.confusion_svg(matrix, labels)}'
          f'</div>{confused}</section>')


def _curves(curves, flags):
  charts = []
  head = curves.get('head')
  if head and head.get('step'):
    x_label = ('step (L-BFGS steps, counted on across the L2 strengths '
               'tried)' if flags.get('head_recipe') == 'standard' else 'step')
    charts.append(_chart_pair(head, head['step'], 'Head', x_label))
  tuned = curves.get('fine_tune')
  if tuned and tuned.get('epoch'):
    charts.append(_chart_pair(tuned, tuned['epoch'], 'Fine-tuning',
                              'epoch (0: the linear head)'))
  if not charts:
    return ''
  return ('<section id="curves"><h2>Training curves</h2>'
          + ''.join(charts) + '</section>')


def _chart_pair(curve, x, name, x_label):
  """An accuracy and a loss chart of one curve (`head.Head.curves`)."""
  def series(kind):
    return {split: curve[f'{split_key}_{kind}']
            for split, split_key in (('training', 'train'),
                                     ('validation', 'validation'))
            if any(v is not None for v in curve.get(f'{split_key}_{kind}', []))}
  parts = []
  accuracy = series('accuracy')
  if accuracy:
    parts.append(report_charts.line_chart(
        x, accuracy, title=f'{name}: accuracy', x_label=x_label,
        y_range=(0.0, 1.0)))
  loss = series('loss')
  if loss:
    parts.append(report_charts.line_chart(
        x, loss, title=f'{name}: cross entropy', x_label=x_label))
  return f'<div class="charts">{"".join(parts)}</div>'


def _mistakes(found, matrix):
  if not found:
    wrong = sum(count for i, row in enumerate(matrix)
                for j, count in enumerate(row) if i != j)
    return ('<section id="mistakes"><h2>Misclassified test photos</h2><p>'
            + (f'{wrong} (not collected for this page).' if wrong else
               'None: every test photo was classified right.')
            + '</p></section>')
  figures = []
  for m in found[:MAX_MISTAKES]:
    uri = thumbnail(m['path'])
    picture = (f'<img src="{uri}" alt="{_e(os.path.basename(m["path"]))}">'
               if uri else '<div class="muted">(cannot show this file)</div>')
    figures.append(
        f'<figure class="thumb">{picture}<figcaption><b>'
        f'{_e(m["predicted"])}</b> {m["score"]:.0%}<br>true: '
        f'{_e(m["truth"])} ({m["truth_score"]:.0%})<br><span class="muted">'
        f'{_e(os.path.basename(m["path"]))}</span></figcaption></figure>')
  left_out = len(found) - len(figures)
  note = (f'<p class="muted">{left_out} more not shown (the '
          f'{MAX_MISTAKES} most confident are).</p>' if left_out else '')
  return (f'<section id="mistakes"><h2>Misclassified test photos '
          f'({len(found)})</h2><p class="muted">The most confident mistakes '
          f'first: the prediction and its probability, then the true class '
          f'and its probability.</p><div class="thumbs">{"".join(figures)}'
          f'</div>{note}</section>')


def thumbnail(path, size=THUMBNAIL_PX):
  """A photo as a JPEG data: URI at most size x size px, upright; None if it
  cannot be read (moved or deleted since the run)."""
  try:
    with Image.open(path) as img:
      img.draft('RGB', (size * 2, size * 2))  # JPEG: decode at 1/2..1/8.
      img.load()
      img = ImageOps.exif_transpose(img)
      if 'A' in img.getbands() or 'transparency' in img.info:
        rgba = img.convert('RGBA')
        img = Image.alpha_composite(
            Image.new('RGBA', rgba.size, (255, 255, 255, 255)), rgba)
      img = img.convert('RGB')
      img.thumbnail((size, size))
      out = io.BytesIO()
      img.save(out, 'JPEG', quality=80)
  except (OSError, ValueError, SyntaxError, EOFError,
          Image.DecompressionBombError):
    return None
  return 'data:image/jpeg;base64,' + base64.b64encode(
      out.getvalue()).decode('ascii')
