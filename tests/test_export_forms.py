"""Every exported form gives the head's answer on the same photos.

With a backbone that sees layout, orientation and scale (conftest's
layout_module) and photos with structure (gradients and shapes, non-square,
stored sideways with an EXIF orientation, PNGs with alpha), a form that
decodes, turns or resizes a photo otherwise than the cache stage gives other
probabilities. The reference is the head applied to the backbone's features of
the cache stage's pixels (bottleneck.data.decode).
"""

import json
import pathlib
import sys

import conftest
import numpy as np
import pytest
import tensorflow as tf

from bottleneck.data import decode
from bottleneck.export import formats
from bottleneck.features import backbones
from bottleneck.features import quantize
from bottleneck import predict

SIZE = (32, 32)


@pytest.fixture(scope='module')
def exported(tmp_path_factory, layout_module):
  """One run with every output, and photos to check the forms on.

  Returns:
    (flags of the run, paths of the check photos, float32 [n, 32, 32, 3]
    pixels the cache stage gives for them).
  """
  root = tmp_path_factory.mktemp('forms')
  conftest.write_layout_photos(root / 'photos', per_class=14)
  flags = dict(image_dir=str(root / 'photos'), tfhub_module=layout_module,
               tflite_output_file=str(root / 'model.tflite'),
               tflite_int8_output_file=str(root / 'model_int8.tflite'),
               how_many_training_steps=300, learning_rate=0.5,
               **conftest.output_flags(root))
  assert conftest.run_retrain(**flags) == 0
  paths = []
  for layout in sorted(conftest.LAYOUTS):
    for i, (size, kind, orientation) in enumerate([
        ((61, 45), 'jpeg', 1), ((300, 170), 'jpeg', 1),  # Decoded at 1/4.
        ((45, 70), 'jpeg', 6), ((90, 64), 'jpeg', 8), ((64, 41), 'jpeg', 5),
        ((50, 77), 'jpeg', 3), ((80, 33), 'png_alpha', 1),
        ((52, 49), 'webp', 1)]):
      img = conftest.layout_image(layout, size, seed=5000 + i)
      path = root / 'check' / f'{layout}_{i}.{kind.split("_")[0]}'
      path.parent.mkdir(exist_ok=True)
      path.write_bytes(conftest.layout_file(img, kind, orientation=orientation))
      paths.append(str(path))
  pixels = np.stack([decode.load_image(p, SIZE) for p in paths]) / np.float32(
      255)
  return flags, paths, pixels


def read_files(paths):
  contents = []
  for path in paths:
    with open(path, 'rb') as f:
      contents.append(f.read())
  return tf.constant(contents)


def test_layout_backbone_sees_orientation_and_scale(layout_module,
                                                    hub_module):
  img = conftest.layout_image('left', (64, 48), seed=1)
  upright = decode.decode_image(conftest.layout_file(img, 'png_alpha'), SIZE)
  variants = [upright[:, ::-1], upright.transpose(1, 0, 2),
              np.roll(upright, 1, axis=1)]
  for module, changes in ((layout_module, True), (hub_module, False)):
    features = backbones.load_backbone(module).features(
        np.stack([upright] + variants).astype(np.float32) / 255).numpy()
    change = np.abs(features[1:] - features[0]).max(axis=1) / np.abs(
        features[0]).max()
    assert (change > 0.05).all() == changes, (module, change)


def test_every_form_agrees_with_the_head(exported):
  flags, paths, pixels = exported
  backbone = backbones.load_backbone(flags['tfhub_module'])
  head = conftest.exported_head(flags['saved_model_dir'])
  expected = head(backbone.features(pixels).numpy())
  forms = conftest.float_export_forms(flags, pixels, read_files(paths))
  for form, probabilities in forms.items():
    np.testing.assert_allclose(probabilities, expected, atol=2e-5,
                               err_msg=form)
  # The int8 file computes int8 features: the head's answer on those.
  int8 = quantize.int8_backbone(backbone, flags['bottleneck_dir'],
                                calibration=lambda: pytest.fail('converted'))
  np.testing.assert_allclose(
      predict.load_tflite(flags['tflite_int8_output_file']).classify(pixels),
      head(int8.features(pixels)), atol=2e-5)
  # The photos are not all one class: the check can tell forms apart.
  assert len(set(expected.argmax(axis=1))) == 3
  # Converted once: the model folder's classifier.tflite is the very file
  # --tflite_output_file asked for.
  assert (pathlib.Path(flags['saved_model_dir'], formats.CLASSIFIER_FILE)
          .read_bytes() == pathlib.Path(flags['tflite_output_file'])
          .read_bytes())


def test_serving_default_answers_as_label_image(exported, capsys):
  flags, paths, _ = exported
  capsys.readouterr()
  assert conftest.run_label_image(
      *paths[1:], image=paths[0], top_k=3, output_format='json',
      saved_model_dir=flags['saved_model_dir']) == 0
  records = json.loads(capsys.readouterr().out)
  model = tf.saved_model.load(flags['saved_model_dir'])
  labels = [label.decode() for label in model.labels().numpy()]
  served = model.signatures['serving_default'](
      image_bytes=read_files(paths))['probabilities'].numpy()
  for record, row in zip(records, served):
    scores = {p['label']: p['score'] for p in record['predictions']}
    np.testing.assert_allclose([scores[label] for label in labels], row,
                               atol=2e-5, err_msg=record['image'])


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
