"""What the Beam workers run: read and decode, the backbone, the shard files.

Imported only by `beam_stage` once Apache Beam is known to be installed
(`import apache_beam` is at the top here), and by the workers when they
unpickle the transforms. Everything a worker needs travels in a `WorkerModel`:
the same backbone, layers, sizes, precision and runtime as the local stage.
"""

import dataclasses
import threading

import apache_beam as beam
from apache_beam.io import filebasedsink
from apache_beam.ml.inference import base
import numpy as np
import tensorflow as tf

from bottleneck import errors
from bottleneck.data import decode
from bottleneck.features import shards


@dataclasses.dataclass(frozen=True)
class WorkerModel:
  """How a worker builds the backbone the driver's local stage would run.

  Attributes:
    name: the backbone's name, for messages.
    identity: the backbone's identity; a worker whose backbone has another
      (other weights on that machine) refuses to run.
    image_size: (height, width) of the decoded photos.
    runtime: 'tensorflow', or 'litert' to run `tflite_model`.
    batch_size: images per backbone call.
    tflite_model: bytes of the .tflite model (litert): the verified float32
      copy (`runtimes`) or the int8 copy (`quantize`).
    load_args: keyword arguments of `backbones.load_backbone` (tensorflow).
    mirror_average: wrap the loaded backbone in `mirror.averaged`.
    threads: threads of each LiteRT interpreter (one interpreter per worker
      process: a process per core is how Beam's Python workers scale).
  """
  name: str
  identity: str
  image_size: tuple
  runtime: str
  batch_size: int
  tflite_model: bytes = None
  load_args: dict = None
  mirror_average: bool = False
  threads: int = 1

  def load(self):
    """The features function: float32 [b, h, w, 3] in [0, 1] -> [b, dim]."""
    if self.runtime == 'litert':
      from bottleneck.features import tflite  # pylint: disable=g-import-not-at-top
      return _Serialized(tflite.Runner(self.tflite_model, name=self.name,
                                       threads=self.threads))
    from bottleneck.features import backbones  # pylint: disable=g-import-not-at-top
    from bottleneck.features import mirror  # pylint: disable=g-import-not-at-top
    backbone = backbones.load_backbone(**self.load_args)
    if self.mirror_average:
      backbone = mirror.averaged(backbone)
    if backbone.identity != self.identity:
      raise errors.ModelError(
          f'The Beam worker loaded {self.name} with identity '
          f'{backbone.identity[:16]}, the driver has {self.identity[:16]}: the '
          'workers must see the same weights (KERAS_HOME, TFHUB_CACHE_DIR).')
    return backbone.features


class _Serialized:
  """A LiteRT interpreter runs one call at a time: RunInference shares one
  model between the threads of a worker process, so calls take turns."""

  def __init__(self, features):
    self._features = features
    self._lock = threading.Lock()

  def __call__(self, images):
    with self._lock:
      return self._features(images)


class BackboneHandler(base.ModelHandler):
  """RunInference's handler of our backbone: uint8 pixels -> float32 vector.

  Beam's TensorFlow handlers cannot load TF Hub SavedModels under Keras 3
  (apache/beam#30616), and the cache needs our exact layers, sizes and
  runtime; so the model is our own loader's (`WorkerModel.load`).
  """

  def __init__(self, model):
    super().__init__(min_batch_size=model.batch_size,
                     max_batch_size=model.batch_size)
    self._model = model

  def load_model(self):
    return self._model.load()

  def run_inference(self, batch, model, inference_args=None):
    """uint8 [h, w, 3] arrays -> PredictionResults of float32 [dim]."""
    images = np.stack(batch).astype(np.float32) / 255.0  # As `cache` does.
    vectors = np.asarray(model(images), np.float32)
    return [base.PredictionResult(None, vector) for vector in vectors]

  def get_num_bytes(self, batch):
    return sum(pixels.nbytes for pixels in batch)

  def get_metrics_namespace(self):
    return 'bottleneck'


class DecodePhoto(beam.DoFn):
  """(digest, path) -> (digest, uint8 [h, w, 3]), as the local stage decodes;
  or, on the 'failed' output, (digest, path, reason)."""

  def __init__(self, size):
    self._size = tuple(size)

  def process(self, element):
    digest, path = element
    try:
      if '://' in path:
        pixels = decode.decode_image(_read_url(path), self._size, name=path)
      else:
        pixels = decode.load_image(path, self._size)
    except errors.DecodeError as e:
      yield beam.pvalue.TaggedOutput('failed', (digest, path, e.reason))
      return
    yield digest, pixels


def _read_url(path):
  """Bytes of a tf.io.gfile path (gs://...); DecodeError if unreadable."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read()
  except tf.errors.OpError as e:
    raise errors.DecodeError(path, f'cannot read file ({e.message})') from e


class ShardSink(filebasedsink.FileBasedSink):
  """Beam's file sink (temporary files, renamed when the pipeline commits)
  writing `shards` records: payload(*element) framed and checksummed."""

  def __init__(self, prefix, payload):
    super().__init__(prefix, coder=None, file_name_suffix=shards.SUFFIX,
                     max_records_per_shard=10_000)
    self._payload = payload

  def write_record(self, file_handle, value):
    file_handle.write(shards.frame(self._payload(*value)))


def write_shards(pcoll, label, prefix, payload):
  """Writes a PCollection of tuples as shards of `payload(*tuple)` records."""
  return pcoll | label >> beam.io.Write(ShardSink(prefix, payload))
