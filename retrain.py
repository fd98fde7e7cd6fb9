r"""Train an image classifier on your photos from a frozen pretrained backbone.

  python retrain.py --image_dir photos/

`photos/` holds one subfolder of images per class. Each photo goes through the
backbone once; its bottleneck vector is cached in HDF5 under --bottleneck_dir,
so later runs only pay for new or changed photos. A softmax head is then trained
on the cached vectors in seconds, and the model is exported to
--saved_model_dir (SavedModel), --output_labels and --output_graph (retrain.py's
frozen graph). See README.md for every flag and the exit codes.
"""

import dataclasses

from absl import app
from absl import flags

from bottleneck.run import cli
from bottleneck import config
from bottleneck.run import pipeline

_D = config.RETRAIN_DEFAULTS

flags.DEFINE_string('image_dir', None,
                    'Folder with one subfolder of images per class.')
flags.DEFINE_string('bottleneck_dir', _D['bottleneck_dir'],
                    'Folder of the bottleneck cache (HDF5 files).')
flags.DEFINE_string(
    'tfhub_module', _D['tfhub_module'],
    'Backbone: a TF Hub handle or URL, a local SavedModel folder (TF Hub image '
    'feature-vector contract), or keras:NAME for keras.applications models.')
flags.DEFINE_string(
    'keras_weights', _D['keras_weights'],
    'Weights of a keras: backbone: imagenet (through KERAS_HOME), none, or the '
    'path of a weights file.')
flags.DEFINE_string(
    'bottleneck_layers', _D['bottleneck_layers'],
    'Layers of the backbone whose globally averaged outputs are concatenated '
    'into the bottleneck vector: auto (a set of late layers for each keras: '
    'backbone, see README.md), last (the final layer alone; the only choice '
    'of a TF Hub or SavedModel backbone), or layer names separated by commas.')
flags.DEFINE_enum(
    'backbone_precision', _D['backbone_precision'], config.PRECISIONS,
    'float32: the cache stage runs the backbone in TensorFlow. int8: it runs a '
    'post-training int8 TFLite copy of it (LiteRT), converted once and cached '
    'in --bottleneck_dir; faster than float32 on most CPUs, at about the same '
    'accuracy (README.md, Performance, has measured figures). The SavedModel '
    'and frozen graph still run the float backbone (metrics.json measures '
    'them); the int8 .tflite runs the copy.')
flags.DEFINE_string(
    'image_sizes', _D['image_sizes'],
    'Input size of the backbone, or several separated by commas (e.g. '
    '224,320): one pass of the backbone per size, their vectors concatenated '
    'in that order; a pass at s pixels costs about (s/224)^2 of one at 224. '
    'Empty for the backbone\'s own size.')
flags.DEFINE_integer('image_size', _D['image_size'],
                     'Deprecated: one size, as --image_sizes; 0 for none.')
flags.DEFINE_boolean(
    'mirror_average', _D['mirror_average'],
    'Average each photo\'s feature vector with that of its mirror image '
    '(flipped left-right), in the cache stage and in every export: twice the '
    'backbone time per photo, for about half a point of accuracy (README.md, '
    'Which settings when).')
flags.DEFINE_float('testing_percentage', _D['testing_percentage'],
                   'Percentage of photos held out for the final test.')
flags.DEFINE_float(
    'validation_percentage', _D['validation_percentage'],
    'Percentage of photos used for validation during training (the standard '
    'head chooses its L2 strength on them).')
flags.DEFINE_enum(
    'head_recipe', _D['head_recipe'], config.HEAD_RECIPES,
    'How the softmax head is trained. standard: on standardized features, '
    'with L2 regularization whose strength is chosen on the validation '
    'photos, by full-batch L-BFGS; fits wide, mixed features. retrain: '
    'retrain.py\'s exact head (plain SGD on raw features, random batches, no '
    'regularization), for those who need the old behaviour. README.md, The '
    'head, says which training flags apply to which.')
flags.DEFINE_integer(
    'fine_tune_blocks', _D['fine_tune_blocks'],
    'Also train the last N blocks of the backbone with the head, on their '
    'cached input activations (and those of each training photo\'s mirror '
    'image), with early stopping on the validation photos. 0: no. Works '
    'with keras:mobilenet_v2, keras:mobilenet_v3_small/large and '
    'keras:efficientnet_b0 to b3. Costs a second backbone pass per new '
    'training photo, and one or two minutes of training for 2,000 photos; '
    'README.md, Which settings when, has measured gains.')
flags.DEFINE_integer(
    'how_many_training_steps', _D['how_many_training_steps'],
    'Training steps of the head. retrain: SGD steps. standard: the most '
    'L-BFGS steps of each L2 strength tried (each usually converges in 10-50).')
flags.DEFINE_float(
    'learning_rate', _D['learning_rate'],
    'Learning rate of the head: --head_recipe retrain only (plain gradient '
    'descent); the standard recipe has a line search instead.')
flags.DEFINE_integer(
    'train_batch_size', _D['train_batch_size'],
    'Photos per training step: --head_recipe retrain only; the standard '
    'recipe uses every training photo at every step.')
flags.DEFINE_integer('eval_step_interval', _D['eval_step_interval'],
                     'Evaluate and log every this many steps.')
flags.DEFINE_integer(
    'validation_batch_size', _D['validation_batch_size'],
    'Validation photos per evaluation; -1 for all. --head_recipe retrain '
    'only; the standard recipe always evaluates them all.')
flags.DEFINE_integer('test_batch_size', _D['test_batch_size'],
                     'Test photos for the final test; -1 for all.')
flags.DEFINE_bool('print_misclassified_test_images',
                  _D['print_misclassified_test_images'],
                  'List the test photos the model gets wrong.')
flags.DEFINE_string('final_tensor_name', _D['final_tensor_name'],
                    'Name of the output node in the frozen graph.')
flags.DEFINE_string('output_labels', _D['output_labels'],
                    'Labels file to write, one label per line.')
flags.DEFINE_string('output_graph', _D['output_graph'],
                    'Frozen graph to write (retrain.py format); empty to skip.')
flags.DEFINE_string(
    'tflite_output_file', _D['tflite_output_file'],
    'TFLite classifier to write, float32 (image in [0, 1] -> probabilities, '
    'labels attached); empty to skip.')
flags.DEFINE_string(
    'tflite_int8_output_file', _D['tflite_int8_output_file'],
    'TFLite classifier to write with the int8 backbone (see '
    '--backbone_precision) and a float32 head; empty to skip.')
flags.DEFINE_string('summaries_dir', _D['summaries_dir'],
                    'TensorBoard logs; each run adds a subfolder. Empty to '
                    'skip.')
flags.DEFINE_integer('random_seed', _D['random_seed'],
                     'Seed of every random choice; equal seeds repeat a run.')
flags.DEFINE_integer(
    'cache_batch_size', _D['cache_batch_size'],
    'Photos per backbone call in the cache stage; 0 measures the fastest on '
    'this machine once (kept in --bottleneck_dir/machine.json).')
flags.DEFINE_enum(
    'backbone_runtime', _D['backbone_runtime'], config.RUNTIMES,
    'What runs a float32 backbone in the cache stage: tensorflow, litert (a '
    'float32 LiteRT copy, converted once, kept in --bottleneck_dir and checked '
    'against TensorFlow\'s vectors, which it shares the cache with), or auto: '
    'the faster of the two on this machine, measured once.')
flags.DEFINE_bool(
    'force', _D['force'],
    'Retrain and export even if the model in --saved_model_dir was trained on '
    'the same photos with the same flags (such a run keeps it otherwise).')
flags.DEFINE_float(
    'lock_timeout', _D['lock_timeout'],
    'Seconds to wait while another run writes the same --bottleneck_dir or '
    'outputs; 0 exits at once (exit code 6), -1 waits as long as it takes.')
flags.DEFINE_float(
    'min_test_accuracy', _D['min_test_accuracy'],
    'Quality gate: do not publish a model whose final test accuracy is below '
    'this percentage (exit code 5); 0 for no minimum.')
flags.DEFINE_bool(
    'promote_if_better', _D['promote_if_better'],
    'Quality gate: publish only if the new model does at least as well as the '
    'model in place on this run\'s validation photos (exit code 5 otherwise).')

flags.DEFINE_float(
    'vector_memory_mb', _D['vector_memory_mb'],
    'Above this many MiB of float32 bottleneck vectors, the head is trained '
    'and tested on vectors read from --bottleneck_dir a block at a time '
    '(slower: each training step reads them all) instead of held in memory.')
flags.DEFINE_string(
    'beam_runner', _D['beam_runner'],
    'Run the cache stage as an Apache Beam pipeline on this runner '
    '(DirectRunner, DataflowRunner, FlinkRunner, SparkRunner); empty: in this '
    'process. Needs pip install -r requirements-beam.txt (README.md, Apache '
    'Beam).')
flags.DEFINE_string(
    'beam_pipeline_args', _D['beam_pipeline_args'],
    'Options of the Beam pipeline, as one quoted string, e.g. '
    '"--direct_num_workers=2 --direct_running_mode=multi_processing".')

FLAGS = flags.FLAGS


def config_from_flags():
  """The parsed flags as a `config.RetrainConfig` (which checks them)."""
  return config.RetrainConfig(**{
      f.name: FLAGS[f.name].value
      for f in dataclasses.fields(config.RetrainConfig)})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  return cli.run('retrain.py',
                 lambda: pipeline.retrain(config_from_flags()) and None)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
