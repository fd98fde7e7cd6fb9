"""The cache stage as an Apache Beam pipeline (retrain.py --beam_runner).

The driver (the retrain.py process) lists and hashes the photos and asks the
store which are missing, as the local stage does (`cache.cache_bottlenecks`);
only those go to the pipeline:

  Create (digest, path) -> Reshuffle -> DecodePhoto (`decode`: the local
  stage's pixels) -> RunInference(KeyedModelHandler(BackboneHandler)) ->
  shards of (digest, vector); the photos that could not be decoded -> shards
  of (digest, path, reason)

in a folder of this run (`shards`) under <bottleneck_dir>/<stem>.beam/. The
workers run the backbone as the local stage would: the runtime and batch size
it chooses (`probe`), a LiteRT copy shipped as bytes, or the TensorFlow
backbone reloaded by name (`beam_transforms.WorkerModel`). When the pipeline
has finished, the driver marks the folder complete and folds it into the
store through its journal (`shards.fold`); the run then goes on as usual.

The DirectRunner is pinned to Beam's FnApiRunner: since Beam 2.68 it first
tries the Prism runner, which downloads a binary and cannot work offline.
`--direct_running_mode=multi_processing --direct_num_workers=N` gives N worker
processes. Apache Beam is imported only here, lazily; requirements-beam.txt
installs it.
"""

import contextlib
import dataclasses
import os
import shlex
import time

from absl import logging

from bottleneck import errors
from bottleneck.features import backbones
from bottleneck.features import cache
from bottleneck.features import runtimes
from bottleneck.features import shards

INSTALL = ('--beam_runner needs Apache Beam: pip install -r '
           'requirements-beam.txt')
# Runner names that mean Beam's local runner, pinned to the FnApiRunner.
_LOCAL_RUNNERS = ('directrunner', 'direct', 'fnapirunner')
# Beam's worker processes log every gRPC channel they open at INFO; a user
# sees their warnings. --default_sdk_harness_log_level overrides it.
_QUIET_WORKERS = ['--default_sdk_harness_log_level=WARNING']


def import_beam():
  """The apache_beam module; errors.UsageError (INSTALL) if missing."""
  try:
    import apache_beam  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UsageError(INSTALL) from e
  return apache_beam


def runs_folder(bottleneck_dir, backbone):
  """The folder of the Beam runs' shard folders for `backbone`."""
  return cache.sibling_path(bottleneck_dir, backbone, '.beam')


@dataclasses.dataclass
class BeamStage:
  """The `stage` argument of `cache.cache_bottlenecks` that runs Beam.

  Attributes:
    backbone: the `backbones.Backbone` whose vectors are cached.
    bottleneck_dir: the cache folder; the shards go under it.
    runner: the Beam runner's name ('DirectRunner', 'DataflowRunner', ...).
    pipeline_args: str, the pipeline options, shell-quoted.
    load_args: keyword arguments of `backbones.load_backbone` with which a
      worker loads the float32 backbone (the tensorflow runtime).
    mirror_average: see `config.RetrainConfig.mirror_average`.
  """
  backbone: object
  bottleneck_dir: str
  runner: str
  pipeline_args: str = ''
  load_args: dict = None
  mirror_average: bool = False

  def recover(self, vectors):
    """Folds what a killed run left complete; deletes what it left half."""
    count, _ = shards.fold(self._root, vectors, self.backbone.feature_dim)
    if count:
      logging.info('Folded %s vector(s) from the shards of an earlier Beam '
                   'run into the cache.', f'{count:,}')

  def compute(self, todo, vectors, engine):
    """Computes `todo` in the pipeline and folds the shards into `vectors`.

    Args:
      todo: list of `images.Photo` (distinct digests) not in `vectors`.
      vectors: the open `store.VectorStore`.
      engine: the `cache.Engine` the local stage would use: its runtime and
        batch size are the workers'.

    Returns:
      ({digest: reason} of the photos that could not be decoded, the
      engine's summary for metrics.json).

    Raises:
      errors.UsageError: Beam is missing, the runner is unknown, or the
        workers could read none of the photos.
    """
    beam = import_beam()
    model = self._worker_model(engine)
    run_dir = shards.new_run(self._root)
    logging.info('Beam (%s): computing %s photo(s) with %s at batch %d; '
                 'shards in %s.', self.runner, f'{len(todo):,}',
                 model.runtime, model.batch_size, run_dir)
    start = time.monotonic()
    _run_pipeline(beam, self._runner(), self._options(), todo, model,
                  run_dir)
    shards.mark_complete(run_dir)
    count, failures = shards.fold(self._root, vectors,
                                  self.backbone.feature_dim)
    missing = [p for p in todo
               if p.digest not in vectors and p.digest not in failures]
    if missing:  # A runner that dropped elements: a bug, not the user's.
      raise RuntimeError(f'The Beam pipeline gave no vector and no failure '
                         f'for {len(missing)} photo(s), e.g. {missing[0].path}')
    _check_reachable(todo, failures)
    for path, reason in failures.values():
      logging.warning('Skipping %s', errors.DecodeError(path, reason))
    seconds = time.monotonic() - start
    logging.info('Beam (%s): %s vector(s) in %.1f s (%.1f photos/s), %d '
                 'photo(s) could not be decoded.', self.runner, f'{count:,}',
                 seconds, len(todo) / max(seconds, 1e-9), len(failures))
    summary = dict(engine.summary(), beam_runner=self.runner,
                   beam_pipeline_args=self.pipeline_args,
                   beam_seconds=round(seconds, 3))
    return {d: reason for d, (_, reason) in failures.items()}, summary

  @property
  def _root(self):
    return runs_folder(self.bottleneck_dir, self.backbone)

  def _worker_model(self, engine):
    from bottleneck.features import beam_transforms  # pylint: disable=g-import-not-at-top
    model = None
    if self.backbone.precision != 'float32':
      model = self.backbone.tflite_model  # The int8 copy.
    elif engine.runtime == 'litert':
      with open(runtimes.copy_path(self.bottleneck_dir, self.backbone),
                'rb') as f:
        model = f.read()
    return beam_transforms.WorkerModel(
        name=self.backbone.name, identity=self.backbone.identity,
        image_size=tuple(self.backbone.image_size),
        runtime='litert' if model else 'tensorflow',
        batch_size=engine.batch_size, tflite_model=model,
        load_args=self.load_args, mirror_average=self.mirror_average)

  def _runner(self):
    if self.runner.lower() in _LOCAL_RUNNERS:
      from apache_beam.runners.portability import fn_api_runner  # pylint: disable=g-import-not-at-top
      return fn_api_runner.FnApiRunner()
    try:
      from apache_beam.runners import runner as runner_lib  # pylint: disable=g-import-not-at-top
      return runner_lib.create_runner(self.runner)
    except (ValueError, ImportError) as e:
      raise errors.UsageError(
          f'--beam_runner {self.runner}: Beam cannot create it ({e}). Pass '
          'DirectRunner, DataflowRunner, FlinkRunner or SparkRunner (and '
          'install what that runner needs).') from e

  def _options(self):
    args = shlex.split(self.pipeline_args)
    if not any(a.startswith('--default_sdk_harness_log_level') for a in args):
      args += _QUIET_WORKERS
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
    return pipeline_options.PipelineOptions(args)


def for_config(config, backbone):
  """The `BeamStage` of a run's `config.RetrainConfig`; None without
  --beam_runner (the local stage)."""
  if not config.beam_runner:
    return None
  return BeamStage(
      backbone, config.bottleneck_dir, config.beam_runner,
      config.beam_pipeline_args,
      load_args=dict(name=config.tfhub_module,
                     keras_weights=config.keras_weights,
                     image_sizes=config.sizes, seed=config.random_seed,
                     layers=config.bottleneck_layers),
      mirror_average=config.mirror_average)


def _run_pipeline(beam, runner, options, todo, model, run_dir):
  """Runs the pipeline to its end; its shards are then in run_dir."""
  from apache_beam.ml.inference import base as inference  # pylint: disable=g-import-not-at-top
  from bottleneck.features import beam_transforms as bt  # pylint: disable=g-import-not-at-top
  handler = inference.KeyedModelHandler(bt.BackboneHandler(model))
  with _package_importable(), beam.Pipeline(runner=runner,
                                            options=options) as p:
    decoded = (
        p
        | 'Photos' >> beam.Create([(x.digest, x.path) for x in todo])
        | 'Spread' >> beam.Reshuffle()
        | 'Decode' >> beam.ParDo(bt.DecodePhoto(model.image_size)).with_outputs(
            'failed', main='pixels'))
    vectors = (decoded.pixels
               | 'Backbone' >> inference.RunInference(handler)
               | 'Vector' >> beam.Map(lambda kv: (kv[0], kv[1].inference)))
    bt.write_shards(vectors, 'WriteVectors',
                    os.path.join(run_dir, shards.VECTORS),
                    shards.vector_payload)
    bt.write_shards(decoded.failed, 'WriteFailures',
                    os.path.join(run_dir, shards.FAILURES),
                    shards.failure_payload)


def _check_reachable(todo, failures):
  """UsageError if the workers could read none of the photos the driver
  read: they do not see the paths (another machine, another mount)."""
  unread = [(path, reason) for path, reason in failures.values()
            if reason.startswith('cannot read file')]
  if todo and len(unread) == len(todo):
    path, reason = unread[0]
    raise errors.UsageError(
        f'The Beam workers could read none of the {len(todo):,} photos to '
        f'compute (e.g. {path}: {reason}), which this process read: the '
        'workers open the paths under --image_dir as given, so put the photos '
        'at the same paths on the workers (a shared mount), or run '
        '--beam_runner DirectRunner on this machine.')


@contextlib.contextmanager
def _package_importable():
  """Worker processes the DirectRunner starts must import bottleneck: put its
  folder on their PYTHONPATH (remote workers need --setup_file)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(backbones.__file__))))
  old = os.environ.get('PYTHONPATH')
  parts = old.split(os.pathsep) if old else []
  if root not in parts:
    os.environ['PYTHONPATH'] = os.pathsep.join([root] + parts)
  try:
    yield
  finally:
    if old is None:
      os.environ.pop('PYTHONPATH', None)
    else:
      os.environ['PYTHONPATH'] = old
