"""The one place where defaults live, and the checks on every setting.

`retrain.py` and `label_image.py` read their flag defaults from here, and turn
parsed flags into a `RetrainConfig` with `RetrainConfig(**values)`; tests build
the same object directly.
"""

import dataclasses
import shlex

from bottleneck import errors

# MobileNetV2: by their papers, 0.3 G multiply-adds per image against 5.7 G for
# InceptionV3 (retrain.py's old default), for similar transfer accuracy, so it
# is several times faster on any CPU. README.md, Performance, has what was
# measured on one machine. The keras: model rather than TF Hub's SavedModel,
# which exposes only its last vector: the default --bottleneck_layers auto
# pools three of its late layers (keras_models.AUTO_LAYERS), +2 to +2.5
# points of accuracy at no extra backbone cost.
DEFAULT_MODULE = 'keras:mobilenet_v2'
# 'auto': the late layers of keras_models.AUTO_LAYERS; 'last': the final
# layer alone; or comma-separated layer names.
DEFAULT_LAYERS = 'auto'
# label_image.py reads this folder by default, so retrain.py always exports here
# unless told otherwise.
DEFAULT_SAVED_MODEL_DIR = '/tmp/retrained_model'
DEFAULT_TOP_K = 5
# Images per backbone call in label_image.py. Which batch is fastest depends
# on the CPU (its caches and vector units) and the backbone: small batches
# keep a batch's activations in the CPU caches, one image per call pays the
# per-call overhead. The cache stage measures it on the machine at hand
# (--cache_batch_size 0, features/probe.py); 4 was among the fastest with
# both runtimes on the machines of README.md's Performance table.
DEFAULT_BATCH_SIZE = 4
# How the cache stage runs a float32 backbone: 'auto' measures TensorFlow
# against a float32 LiteRT copy on this machine (features/probe.py), or one
# of them. The copy's vectors are checked against TensorFlow's
# (features/runtimes.py), so both share one cache.
RUNTIMES = ('auto', 'tensorflow', 'litert')
OUTPUT_FORMATS = ('text', 'json', 'csv')
# How the cache stage runs the backbone: TensorFlow in float32, or a
# post-training int8 TFLite copy of it (see quantize.py).
PRECISIONS = ('float32', 'int8')
# How the head is trained (README.md, The head): 'standard' (train/standard.py:
# standardized features, L2 chosen on the validation photos, L-BFGS) or
# 'retrain' (train/head.py: retrain.py's plain SGD on raw features).
HEAD_RECIPES = ('standard', 'retrain')
# The standard recipe's L2 strengths (l2 in mean cross entropy + l2 *
# sum(weights**2), on standardized features), tried strongest first, half a
# decade apart: from 10, which keeps the weights near zero, to 1e-4, almost
# none. The best strength grows with the number of features (more of them
# share the same signal), hence the wide range; strong fits take few steps.
# Without validation photos, DEFAULT_L2: the strength the comparison
# used (Keras's l2(1e-3)) on MobileNetV2 features of three photo sets.
L2_STRENGTHS = tuple(10.0 ** (-e / 2) for e in range(-2, 9))  # 10 ... 1e-4.
DEFAULT_L2 = 1e-3
# "Unknown" (train/open_set.py): the threshold is this percentile of the
# validation photos' distances to their nearest class, so about 5% of photos
# like the training ones are turned away; label_image.py's
# --unknown_threshold is relative to it (1.0: as fitted; -1: off).
UNKNOWN_PERCENTILE = 95.0
DEFAULT_UNKNOWN_THRESHOLD = 1.0
# Calibration (train/calibration.py): bins of the expected calibration error.
ECE_BINS = 15
# The bottleneck store's compaction (features/store.py): when this many
# segments share a size level (floor(log_4(rows))), they are merged into one.
# 4 bounds the segments a run opens to 3 a level (about 27 for a million
# vectors added 1% at a time) while each vector is rewritten once a level.
STORE_MERGE_FACTOR = 4
# The dtype of the vectors in the store's segments (features/segments.py).
# float16 halves the bytes a photo costs on disk, in the page cache and when
# streamed; it rounds each value by at most 2**-11 (4.9e-4) of it. On the
# flower photos' 2,176-wide vectors it changed nothing measured (largest
# rounding error 4.8e-4 of a vector's largest value; head test accuracy 91.24%
# either way; the same unknown rates). A segment that float16 cannot hold so
# (a value beyond +-65504, or a vector whose largest value is below 6.1e-5,
# as untrained backbones give) keeps float32, with a warning: never inf or 0.
STORE_VECTOR_DTYPE = 'float16'
# Above this many MiB of float32 vectors, the head is trained and evaluated
# on vectors streamed from the store in blocks (features/segments.py,
# StoredVectors) instead of held in memory: a full pass then reads them from
# disk (or the page cache) at each L-BFGS step. 1,024 MiB holds 120,000
# vectors of MobileNetV2's `auto` layers (2,176 features).
DEFAULT_VECTOR_MEMORY_MB = 1024


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
  """Everything a retrain run needs. Field names are retrain.py's flag names."""
  image_dir: str
  bottleneck_dir: str = '/tmp/bottleneck'
  tfhub_module: str = DEFAULT_MODULE
  keras_weights: str = 'imagenet'
  bottleneck_layers: str = DEFAULT_LAYERS
  backbone_precision: str = 'float32'  # One of PRECISIONS.
  # '': the backbone's own input size; else sizes separated by commas, one
  # backbone pass each, their vectors concatenated (features/passes.py).
  image_sizes: str = ''
  # The one-size flag of before --image_sizes, kept as an alias; 0: unset.
  image_size: int = 0
  # Average each photo's vector with its mirror image's (features/mirror.py):
  # two backbone passes per photo, in the cache stage and in every export.
  mirror_average: bool = False
  testing_percentage: float = 10.0
  validation_percentage: float = 10.0
  head_recipe: str = 'standard'  # One of HEAD_RECIPES.
  # The last N blocks of the backbone trained with the head (README.md,
  # Fine-tuning); 0: none, the backbone stays frozen.
  fine_tune_blocks: int = 0
  how_many_training_steps: int = 4000
  learning_rate: float = 0.01
  train_batch_size: int = 100
  eval_step_interval: int = 10
  validation_batch_size: int = 100  # -1: the whole validation set.
  test_batch_size: int = -1  # -1: the whole test set.
  print_misclassified_test_images: bool = False
  final_tensor_name: str = 'final_result'
  output_labels: str = '/tmp/output_labels.txt'
  output_graph: str = '/tmp/output_graph.pb'
  saved_model_dir: str = DEFAULT_SAVED_MODEL_DIR
  # TFLite classifiers (image -> probabilities, labels attached); '': none.
  tflite_output_file: str = ''  # float32 backbone.
  tflite_int8_output_file: str = ''  # int8 backbone.
  summaries_dir: str = '/tmp/retrain_logs'
  random_seed: int = 0
  # Photos per backbone call in the cache stage; 0: measured on this machine.
  cache_batch_size: int = 0
  backbone_runtime: str = 'auto'  # One of RUNTIMES.
  # Retrain even if the model in place came from the same photos and flags.
  force: bool = False
  # Seconds to wait for another run's lock; 0: exit at once, < 0: forever.
  lock_timeout: float = 0.0
  # Quality gate (percent; 0: off), and publish only if not worse than the
  # model in place on the same validation photos (see run/gate.py).
  min_test_accuracy: float = 0.0
  promote_if_better: bool = False
  # Above this many MiB of vectors the head streams them from the cache.
  vector_memory_mb: float = DEFAULT_VECTOR_MEMORY_MB
  # The cache stage as an Apache Beam pipeline (features/beam_stage.py) on
  # this runner; '': in this process. Its options, as one shell-quoted string.
  beam_runner: str = ''
  beam_pipeline_args: str = ''

  def __post_init__(self):
    problems = []
    if not self.image_dir:
      problems.append('--image_dir is required: a folder with one subfolder '
                      'of images per class.')
    for name in ('testing_percentage', 'validation_percentage'):
      value = getattr(self, name)
      if not 0 <= value < 100:
        problems.append(f'--{name} is {value}; it must be in [0, 100).')
    total = self.testing_percentage + self.validation_percentage
    if total >= 100:
      problems.append(
          f'--testing_percentage + --validation_percentage is {total}; it must '
          'be below 100 so that some images are left for training.')
    for name in ('how_many_training_steps', 'train_batch_size',
                 'eval_step_interval'):
      if getattr(self, name) < 1:
        problems.append(f'--{name} is {getattr(self, name)}; it must be >= 1.')
    if self.cache_batch_size < 0:
      problems.append(f'--cache_batch_size is {self.cache_batch_size}; it must '
                      'be >= 1, or 0 to measure the fastest on this machine.')
    if not self.vector_memory_mb > 0:
      problems.append(f'--vector_memory_mb is {self.vector_memory_mb}; it must '
                      'be > 0.')
    if self.backbone_runtime not in RUNTIMES:
      problems.append(f'--backbone_runtime is {self.backbone_runtime!r}; it '
                      f'must be one of {", ".join(RUNTIMES)}.')
    if self.backbone_runtime == 'tensorflow' and (
        self.backbone_precision == 'int8'):
      problems.append('--backbone_precision int8 runs an int8 LiteRT copy of '
                      'the backbone; drop --backbone_runtime tensorflow.')
    for name in ('validation_batch_size', 'test_batch_size'):
      value = getattr(self, name)
      if value == 0 or value < -1:
        problems.append(f'--{name} is {value}; it must be >= 1, or -1 for '
                        'the whole set.')
    if not self.learning_rate > 0:
      problems.append(
          f'--learning_rate is {self.learning_rate}; it must be > 0.')
    if self.image_size < 0:
      problems.append(f'--image_size is {self.image_size}; it must be > 0, or '
                      '0 for the backbone\'s own size.')
    try:
      sizes = parse_image_sizes(self.image_sizes)
    except errors.UsageError as e:
      problems.append(str(e))
    else:
      if self.image_size > 0 and sizes and sizes != (self.image_size,):
        problems.append(
            f'--image_size {self.image_size} and --image_sizes '
            f'{self.image_sizes} disagree; --image_size is the old name of '
            'one size: pass --image_sizes alone.')
    if not self.final_tensor_name.replace('_', '').isalnum():
      problems.append(f'--final_tensor_name is {self.final_tensor_name!r}; '
                      'use letters, digits and underscores.')
    if not self.bottleneck_layers.strip(' ,'):
      problems.append('--bottleneck_layers is empty; pass auto, last or '
                      'layer names separated by commas.')
    if self.fine_tune_blocks < 0:
      problems.append(f'--fine_tune_blocks is {self.fine_tune_blocks}; it '
                      'must be >= 0 (0: no fine-tuning).')
    if self.fine_tune_blocks and self.mirror_average:
      problems.append(
          '--fine_tune_blocks trains on each training photo and its mirror '
          'image apart, so it cannot run with --mirror_average; drop one.')
    if self.fine_tune_blocks and self.backbone_precision != 'float32':
      problems.append(
          '--fine_tune_blocks trains on the float32 backbone\'s activations, '
          f'so it cannot run with --backbone_precision '
          f'{self.backbone_precision}; drop that flag (an int8 model of the '
          'tuned backbone is still written by --tflite_int8_output_file).')
    if self.head_recipe not in HEAD_RECIPES:
      problems.append(f'--head_recipe is {self.head_recipe!r}; it must be one '
                      f'of {", ".join(HEAD_RECIPES)}.')
    if self.backbone_precision not in PRECISIONS:
      problems.append(f'--backbone_precision is {self.backbone_precision!r}; '
                      f'it must be one of {", ".join(PRECISIONS)}.')
    if not self.output_labels:
      problems.append('--output_labels must not be empty.')
    if not self.saved_model_dir:
      problems.append('--saved_model_dir must not be empty: label_image.py '
                      'reads the exported model from there.')
    if not 0 <= self.min_test_accuracy <= 100:
      problems.append(f'--min_test_accuracy is {self.min_test_accuracy}; it is '
                      'a percentage in [0, 100] (0: no minimum).')
    problems.extend(_beam_problems(self))
    if problems:
      raise errors.UsageError(' '.join(problems))

  @property
  def sizes(self):
    """The image sizes, tuple of ints; () for the backbone's own size."""
    return parse_image_sizes(self.image_sizes) or (
        (self.image_size,) if self.image_size else ())


def _beam_problems(c):
  """What is wrong with the --beam_* flags of a RetrainConfig: list of str."""
  if not c.beam_runner:
    return ['--beam_pipeline_args is given without --beam_runner; pass the '
            'runner too (e.g. --beam_runner DirectRunner).'
           ] if c.beam_pipeline_args.strip() else []
  if c.fine_tune_blocks:
    return ['--beam_runner runs the cache stage of a frozen backbone; it '
            'cannot run with --fine_tune_blocks: drop one.']
  try:
    args = shlex.split(c.beam_pipeline_args)
  except ValueError as e:
    return [f'--beam_pipeline_args {c.beam_pipeline_args!r} does not parse '
            f'({e}); quote it as a shell would.']
  if any(a == '--runner' or a.startswith('--runner=') for a in args):
    return ['--beam_pipeline_args gives --runner; pass the runner as '
            '--beam_runner instead.']
  return []


def parse_image_sizes(text):
  """The sizes of --image_sizes: '224,320' -> (224, 320); '' -> ().

  Raises:
    errors.UsageError: a size is not a positive whole number, or is repeated.
  """
  parts = [part.strip() for part in text.split(',')] if text.strip() else []
  bad = [part for part in parts if not (part.isdigit() and int(part) > 0)]
  if bad:
    problem = f'{bad[0]!r} is not a positive whole number of pixels'
  elif len(set(map(int, parts))) != len(parts):
    problem = 'a size is given twice (each size is one pass of the backbone)'
  else:
    return tuple(int(part) for part in parts)
  raise errors.UsageError(
      f'--image_sizes is {text!r}: {problem}. Pass one size or several '
      'separated by commas, e.g. 224,320; or nothing for the backbone\'s own '
      'size.')


# Flag defaults for retrain.py, read from the one definition above.
RETRAIN_DEFAULTS = {f.name: f.default
                    for f in dataclasses.fields(RetrainConfig)
                    if f.default is not dataclasses.MISSING}
