"""The head recipes `--head_recipe` chooses between, behind one call.

  standard  standardized features, L2 chosen on the validation photos,
            full-batch L-BFGS (standard.py); the default.
  retrain   retrain.py's exact head: plain SGD on raw features, random
            batches, no regularization (head.py).

Both take retrain.py's training flags through a `head.Schedule`; which of them
apply to which recipe is said in their help and in README.md, The head.
"""

from absl import logging

from bottleneck import config as config_lib
from bottleneck.train import head as head_lib
from bottleneck.train import standard

# Flags that only the retrain recipe reads: the standard recipe has a line
# search instead of a learning rate, and uses every vector at every step.
RETRAIN_ONLY = ('learning_rate', 'train_batch_size', 'validation_batch_size')


def train_head(config, train, validation, *, num_classes, summaries_dir=None,
               groups=()):
  """Trains the head by `config.head_recipe`.

  Args:
    config: a `config.RetrainConfig`.
    train: (vectors float32 [n, feature_dim], labels int [n]); the vectors
      may be lazy (`segments.StoredVectors`, above --vector_memory_mb): both
      recipes then read them from the store a block at a time.
    validation: the same, may be empty.
    num_classes: number of classes.
    summaries_dir: if set, TensorBoard scalars go to its train/ and validation/
      subfolders.
    groups: the widths of the pooled layers side by side in a vector
      (`backbones.Backbone.groups`), which the standard recipe weighs alike;
      () for one layer. The retrain recipe ignores them.

  Returns:
    A `head.Head` that takes raw vectors.
  """
  schedule = head_lib.Schedule(
      steps=config.how_many_training_steps,
      learning_rate=config.learning_rate,
      train_batch_size=config.train_batch_size,
      eval_step_interval=config.eval_step_interval,
      validation_batch_size=config.validation_batch_size)
  if config.head_recipe == 'retrain':
    return head_lib.train_head(train, validation, num_classes=num_classes,
                               schedule=schedule, seed=config.random_seed,
                               summaries_dir=summaries_dir,
                               memory_mb=config.vector_memory_mb)
  ignored = [f'--{name}' for name in RETRAIN_ONLY if getattr(config, name) !=
             config_lib.RETRAIN_DEFAULTS[name]]
  if ignored:
    logging.warning('%s only apply to --head_recipe retrain; the %s recipe '
                    'ignores them.', ', '.join(ignored), config.head_recipe)
  return standard.train_head(train, validation, num_classes=num_classes,
                             schedule=schedule, seed=config.random_seed,
                             summaries_dir=summaries_dir, groups=groups)
