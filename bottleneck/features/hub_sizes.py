"""The input size of a TF Hub-style SavedModel, and what decided it.

In order: the size asked for (--image_size); the size the module's signature
fixes; the size TF Hub gives for the model family its handle or folder names
(most TF Hub modules take any size, but were trained at one); a `_224`-style
suffix of a folder's name; else 224, with a warning. The choice is logged with
its source, so that a wrong guess shows.
"""

import os
import re

from absl import logging

DEFAULT_SIZE = 224

# The sizes of TF Hub's image feature-vector families, from their model pages
# (inception_v3: "the size of the input image is fixed to 299 x 299 pixels").
# Each pattern is searched in the handle or path written as its lower-case
# words joined by '_', with '_' at both ends: 'https://tfhub.dev/tensorflow/
# efficientnet/b3/feature-vector/1' is searched as '_https_tfhub_dev_tensorflow
# _efficientnet_b3_feature_vector_1_'. The first family that matches decides;
# a dict maps the pattern's group 'v' to a size.
_ANY_WORDS = r'(?:[a-z0-9]+_)*?'
_FAMILIES = (
    ('Inception V3', r'_inception_?v3_', 299),
    ('Inception-ResNet V2', r'_inception_?resnet_?v2_', 299),
    ('Inception V1/V2', r'_inception_?v[12]_', 224),
    ('NASNet-A/PNASNet-5 large', r'_p?nasnet_large_', 331),
    ('NASNet-A mobile', r'_nasnet_mobile_', 224),
    ('EfficientNetV2',
     rf'_efficientnet_?v2_{_ANY_WORDS}(?P<v>b[0-3]|s|m|xl|l)_',
     {'b0': 224, 'b1': 240, 'b2': 260, 'b3': 300, 's': 384, 'm': 480,
      'l': 480, 'xl': 512}),
    ('EfficientNet-Lite', rf'_efficientnet_{_ANY_WORDS}lite(?P<v>[0-4])_',
     {'0': 224, '1': 240, '2': 260, '3': 280, '4': 300}),
    ('EfficientNet', rf'_efficientnet_?{_ANY_WORDS}b(?P<v>[0-7])_',
     {'0': 224, '1': 240, '2': 260, '3': 300, '4': 380, '5': 456, '6': 528,
      '7': 600}),
    # mobilenet_v2_100_224, mobilenet_v3_small_075_224, mobilenet_v2_035_96:
    # the depth multiplier (035 ... 140) is never one of the sizes.
    ('MobileNet', rf'_mobilenet_?v[123]_{_ANY_WORDS}(?P<v>96|128|160|192|224)_',
     {str(s): s for s in (96, 128, 160, 192, 224)}),
    ('MobileNet', r'_mobilenet', 224),
    ('ResNet', r'(?<!_inception)_resnet', 224),  # resnet_v2_152 is 224 too.
    ('BiT', r'_bit_', 224),  # BiT takes any size; 224 as for most.
)


def input_size(name, module, *, requested=0):
  """Chooses the input size of a loaded SavedModel and logs the reason.

  Args:
    name: the TF Hub handle or URL, or the SavedModel folder.
    module: the loaded module (what `hub.load` returns).
    requested: the size asked for; 0 to choose.

  Returns:
    int, the height and width of the images it is to take.
  """
  if requested:
    return _chosen(name, requested, 'from --image_size')
  size = signature_size(module)
  if size:
    return _chosen(name, size, 'from its signature')
  found = family_size(name)
  if found:
    size, family, text = found
    return _chosen(name, size, f'the size of {family} models ({text!r} in its '
                   'name; its signature takes any size; --image_size '
                   'overrides it)')
  suffix = (re.search(r'_(\d{3})$', os.path.basename(os.path.normpath(name)))
            if os.path.isdir(name) else None)
  if suffix:
    return _chosen(name, int(suffix.group(1)),
                   f'from the _{suffix.group(1)} its folder name ends in')
  logging.warning(
      '%s: input size %dx%d assumed: its signature takes any size and its '
      'name is of no model family known here. If it was trained at another '
      'size, pass it as --image_size.', name, DEFAULT_SIZE, DEFAULT_SIZE)
  return DEFAULT_SIZE


def signature_size(module):
  """The square input size the module's signature fixes, or None.

  Looks at the first argument of each traced `__call__`, then at the inputs of
  its signatures (`module.signatures`): the first image spec [batch,
  size, size, channels] with a known size decides.
  """
  specs = []
  for fn in getattr(getattr(module, '__call__', None), 'concrete_functions',
                    ()):
    specs += list(fn.structured_input_signature[0][:1])
  for fn in getattr(module, 'signatures', {}).values():
    specs += list(fn.structured_input_signature[1].values())
  for spec in specs:
    shape = getattr(spec, 'shape', None)
    if shape is not None and shape.rank == 4 and shape[1] and (
        shape[1] == shape[2]):
      return int(shape[1])
  return None


def family_size(name):
  """(size, family, matched text) for the first family `name` names, or None."""
  words = '_' + '_'.join(re.findall(r'[a-z0-9]+', name.lower())) + '_'
  for family, pattern, sizes in _FAMILIES:
    match = re.search(pattern, words)
    if match:
      size = sizes[match.group('v')] if isinstance(sizes, dict) else sizes
      return size, family, match.group(0).strip('_')
  return None


def _chosen(name, size, reason):
  logging.info('%s: input size %dx%d, %s.', name, size, size, reason)
  return size
