"""report.html: written by a run, rendered by headless Chromium, checked.

The browser is Debian's `chromium` package (.ci/run installs it). Without it
these tests fail, never skip: a report nobody has seen rendered is not
checked.
"""

import html.parser
import json
import os
import re
import shutil
import subprocess

import conftest
import numpy as np
from PIL import Image

from bottleneck import errors
from bottleneck.run import release
from bottleneck.run import report

# The tiny pooling backbone wants a large step (as in test_retrain).
FAST = dict(how_many_training_steps=300, learning_rate=1.0)
THUMBNAIL = 'data:image/jpeg;base64,'


def chromium():
  """The path of the Chromium binary; fails the test if there is none."""
  for candidate in (shutil.which('chromium'), '/usr/bin/chromium'):
    if candidate and os.access(candidate, os.X_OK):
      return candidate
  raise AssertionError(
      'Chromium is not installed, and these tests render report.html with '
      'it: run `apt-get install -y chromium` (Debian; .ci/run does this).')


def browse(page, tmp_path, *args):
  """Runs headless Chromium on a file with extra arguments; returns stdout."""
  profile = tmp_path / 'chromium-profile'
  profile.mkdir(exist_ok=True)
  result = subprocess.run(
      [chromium(), '--headless', '--no-sandbox', '--disable-gpu',
       '--disable-background-networking', '--disable-component-update',
       '--disable-sync', '--no-first-run', f'--user-data-dir={profile}',
       *args, f'file://{os.path.abspath(page)}'],
      capture_output=True, text=True, timeout=180, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


def rendered_dom(page, tmp_path):
  dom = browse(page, tmp_path, '--dump-dom')
  assert '</html>' in dom, dom[-500:]
  return dom


def section(dom, section_id):
  """The HTML of one <section id=...> of the rendered page."""
  match = re.search(rf'<section id="{section_id}">(.*?)</section>', dom,
                    re.DOTALL)
  assert match, f'no section {section_id}'
  return match.group(1)


class _Elements(html.parser.HTMLParser):
  """Collects (tag, {attribute: value}) of every element, and <style> text."""

  def __init__(self):
    super().__init__()
    self.elements, self.styles, self._in_style = [], [], False

  def handle_starttag(self, tag, attrs):
    self.elements.append((tag, dict(attrs)))
    self._in_style = tag == 'style'

  def handle_data(self, data):
    if self._in_style:
      self.styles.append(data)

  def handle_endtag(self, tag):
    self._in_style = False


def external_references(dom):
  """What in the page refers to anything outside it (should be nothing)."""
  parser = _Elements()
  parser.feed(dom)
  found = [(tag, name, value) for tag, attrs in parser.elements
           for name, value in attrs.items()
           if name in ('src', 'href', 'srcset', 'poster', 'action', 'data')
           and not (value or '').startswith(('data:', '#'))]
  found += [tag for tag, _ in parser.elements
            if tag in ('script', 'link', 'iframe', 'object', 'embed')]
  found += re.findall(r'url\((?!\s*["\']?data:)[^)]*\)|@import',
                      ''.join(parser.styles))
  return found


def write_confusable_photos(root):
  """conftest's three colours, 30 photos each, and in 'red' 15 green photos
  (a mislabelled third): test photos among those are certain mistakes. Plus
  a file that is not an image, which the run skips."""
  conftest.write_photos(root, per_class=30)
  green = conftest.write_photos(root / 'extra', {'green': (40, 190, 40)},
                                per_class=15, seed=5)['green']
  for i, path in enumerate(green):
    os.replace(path, root / 'red' / f'mislabelled_{i}.jpg')
  shutil.rmtree(root / 'extra')
  (root / 'blue' / 'broken <1>.jpg').write_bytes(b'this is not a JPEG')


def test_a_published_run_writes_a_report_that_chromium_shows(
    tmp_path, hub_module, outputs):
  write_confusable_photos(tmp_path / 'photos')
  assert conftest.run_retrain(image_dir=str(tmp_path / 'photos'),
                              tfhub_module=hub_module, testing_percentage=30,
                              **outputs, **FAST) == 0
  folder = outputs['saved_model_dir']
  page = os.path.join(folder, release.REPORT_FILE)
  with open(os.path.join(folder, release.METRICS_FILE)) as f:
    metrics = json.load(f)
  assert metrics['decision'] == 'published'
  curve = metrics['curves']['head']
  assert len(curve['step']) > 2 and len(curve['validation_loss']) == len(
      curve['step'])
  matrix = np.array(metrics['confusion_matrix'])
  wrong = int(matrix.sum() - np.trace(matrix))
  assert wrong, 'the photos were meant to give the head some mistakes'

  dom = rendered_dom(page, tmp_path)
  assert external_references(dom) == []
  assert 'name="viewport"' in dom
  assert 'Published' in section(dom, 'decision')
  assert (f'id="test-accuracy">{metrics["test_accuracy"]:.1%}<' in dom)
  # Each exported form that was measured has its row.
  assert 'classifier.tflite' in section(dom, 'decision')
  per_class = section(dom, 'per-class')
  for label in ('blue', 'green', 'red'):
    assert f'<td>{label}</td>' in per_class
    assert f'<td>{label}</td>' in section(dom, 'classes')
  assert 'F1' in per_class
  # The confusion matrix: an SVG heat map of 3x3 cells, the class names on it.
  confusion = section(dom, 'confusion')
  assert '<svg' in confusion and confusion.count('<rect') == 9
  assert all(f'>{label}</text>' in confusion
             for label in ('blue', 'green', 'red'))
  assert re.search(r'<li>red → green: \d+</li>', confusion)
  # Curves: the head's training and validation accuracy and loss.
  assert section(dom, 'curves').count('<polyline') >= 4
  # One thumbnail per mistake, each with its true and predicted class.
  mistakes = section(dom, 'mistakes')
  assert mistakes.count(f'src="{THUMBNAIL}') == wrong
  assert 'true: red' in mistakes
  skipped = section(dom, 'skipped')
  assert 'broken &lt;1&gt;.jpg' in skipped
  assert 'not an image in a known format' in skipped

  shot = tmp_path / 'phone.png'
  browse(page, tmp_path, f'--screenshot={shot}', '--window-size=390,844',
         '--hide-scrollbars')
  with Image.open(shot) as img:
    assert img.size == (390, 844)
    pixels = np.asarray(img.convert('RGB')).reshape([-1, 3])
  assert len(np.unique(pixels, axis=0)) > 1, 'the page rendered blank'


def test_a_refused_model_gets_its_report_beside_the_refused_metrics(
    tmp_path, hub_module, outputs, caplog):
  caplog.set_level('INFO')
  write_confusable_photos(tmp_path / 'photos')
  assert conftest.run_retrain(
      image_dir=str(tmp_path / 'photos'), tfhub_module=hub_module,
      testing_percentage=30, min_test_accuracy=99.9, **outputs,
      **FAST) == errors.QualityError.exit_code
  page = report.refused_path(outputs['saved_model_dir'])
  assert f'Report: {page}' in caplog.text
  assert not os.path.exists(outputs['saved_model_dir'])
  with open(page, encoding='utf-8') as f:
    text = f.read()
  assert 'Not published' in text and 'is below --min_test_accuracy' in text


def hand_made_metrics(labels):
  """A metrics.json dict as `metrics.build` makes it, with the sections the
  open-set and calibration steps add."""
  counts = {label: {'training': 8, 'validation': 1, 'testing': 2}
            for label in labels}
  return {
      'decision': 'published', 'test_accuracy': 0.75, 'test_photos': 4,
      'labels': labels, 'counts': counts,
      'per_class': {labels[0]: {'precision': 1.0, 'recall': 0.5,
                                'support': 2},
                    labels[1]: {'precision': 0.6667, 'recall': 1.0,
                                'support': 2}},
      'confusion_matrix': [[1, 1], [0, 2]],
      'backbone': {'name': 'tiny', 'identity': 'x', 'image_size': [32, 32],
                   'image_sizes': [32], 'feature_dim': 3, 'layers': ['last'],
                   'tuned_blocks': 0, 'preprocessing': '[0, 1]',
                   'precision': 'float32'},
      'flags': {'image_dir': '/photos/<script>alert(1)</script>',
                'head_recipe': 'standard'},
      'durations_seconds': {'cache': 1.5},
      'skipped': [{'path': '/photos/a/<img src=x onerror=alert(1)>.jpg',
                   'reason': 'cannot decode image ("bad" & <worse>)'}],
      'skipped_count': 1, 'bottlenecks': {}, 'gate': None,
      'curves': {'head': {'step': [0, 10, 20],
                          'train_accuracy': [0.5, 0.8, 0.9],
                          'train_loss': [0.7, 0.4, 0.3],
                          'validation_accuracy': [0.5, 0.7, None],
                          'validation_loss': [0.7, 0.5, None]},
                 'fine_tune': {'epoch': [0, 1], 'train_loss': [None, 0.2],
                               'validation_accuracy': [0.7, 0.8],
                               'validation_loss': [0.5, 0.4]}},
      'exports': {'saved_model_tflite': {'path': '/m/classifier.tflite',
                                         'features': 'float32',
                                         'test_accuracy': 0.75}},
      'calibration': {'temperature': 1.7312, 'ece_before': 0.0812,
                      'ece_after': 0.0213},
      'unknown': {'method': 'relative Mahalanobis', 'threshold': 41.25,
                  'validation_unknown_rate': 0.05,
                  'test_unknown_rate': 0.0625},
  }


def test_the_page_escapes_user_text_and_shows_calibration_and_unknown(
    tmp_path):
  nasty = '<b>&"'
  labels = [nasty, 'plain']
  photo = tmp_path / 'photo.jpg'
  Image.new('RGB', (300, 200), (200, 30, 30)).save(photo)
  mistakes = [{'path': str(photo), 'truth': nasty, 'predicted': 'plain',
               'score': 0.99 - i / 100, 'truth_score': 0.01}
              for i in range(report.MAX_MISTAKES + 10)]
  mistakes.append({'path': str(tmp_path / 'gone.jpg'), 'truth': 'plain',
                   'predicted': nasty, 'score': 0.5, 'truth_score': 0.5})
  page_bytes = report.render(hand_made_metrics(labels), mistakes=mistakes,
                             created='2026-01-01')
  text = page_bytes.decode('utf-8')
  assert nasty not in text and '&lt;b&gt;&amp;&quot;' in text
  assert '<script' not in text and '<img src=x' not in text
  page = tmp_path / 'report.html'
  page.write_bytes(page_bytes)

  dom = rendered_dom(page, tmp_path)
  assert external_references(dom) == []
  # The browser read the label as text: no <b> element was made of it.
  assert '&lt;b&gt;&amp;"' in section(dom, 'per-class')
  assert '<b>&amp;' not in dom and '<script' not in dom
  assert 'onerror' not in dom.replace('onerror=alert(1)&gt;', '')
  calibration = section(dom, 'calibration')
  assert '1.731' in calibration and '8.12%' in calibration
  assert '2.13%' in calibration
  unknown = section(dom, 'unknown')
  assert 'relative Mahalanobis' in unknown and '41.25' in unknown
  assert '5.0%' in unknown and '6.2%' in unknown
  assert 'Published' in section(dom, 'decision')
  assert '75.0%' in section(dom, 'decision')
  # The 60 most confident of 71 mistakes; the rest are counted.
  shown = section(dom, 'mistakes')
  assert shown.count(f'src="{THUMBNAIL}') == report.MAX_MISTAKES
  assert '11 more not shown' in shown
  assert '99%' in shown and 'gone.jpg' not in shown
  # Head and fine-tuning curves: a chart of accuracy and of loss each.
  assert section(dom, 'curves').count('<svg') == 4
  assert 'cannot decode image ("bad" &amp; &lt;worse&gt;)' in section(
      dom, 'skipped')
