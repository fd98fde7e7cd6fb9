"""TensorBoard event files, written without the tensorboard package.

An event file is a TFRecord file of `Event` protos. Writing the records
directly costs a few microseconds each, where each `tf.summary.write` call is
an op dispatch (1,600 of them took about as long as the whole head training
when this was measured), and `tf.summary.scalar` / `image` would need the
tensorboard package, which TensorFlow no longer installs; viewing the logs
needs it, writing them does not.
"""

import os
import socket
import time

import tensorflow as tf
from tensorflow.core.framework import summary_pb2  # pylint: disable=g-direct-tensorflow-import
from tensorflow.core.framework import tensor_pb2  # pylint: disable=g-direct-tensorflow-import
from tensorflow.core.framework import tensor_shape_pb2  # pylint: disable=g-direct-tensorflow-import
from tensorflow.core.framework import types_pb2  # pylint: disable=g-direct-tensorflow-import
from tensorflow.core.util import event_pb2  # pylint: disable=g-direct-tensorflow-import

# What TensorBoard's scalar plugin writes with each value.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))


class Writer:
  """One event file in each of a run folder's subfolders (train/, ...)."""

  def __init__(self, run_dir, subfolders):
    name = (f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}'
            '.bottleneck')
    self._writers = {}
    for subfolder in subfolders:
      os.makedirs(os.path.join(run_dir, subfolder), exist_ok=True)
      writer = tf.io.TFRecordWriter(os.path.join(run_dir, subfolder, name))
      writer.write(event_pb2.Event(wall_time=time.time(),
                                   file_version='brain.Event:2')
                   .SerializeToString())
      self._writers[subfolder] = writer

  def scalars(self, subfolder, step, **values):
    """Writes float scalars {tag: value} at `step`."""
    self._write(subfolder, step, [
        summary_pb2.Summary.Value(
            tag=tag, metadata=_SCALAR_METADATA,
            tensor=tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                float_val=[value]))
        for tag, value in values.items()])

  def image(self, subfolder, step, tag, png, size):
    """Writes a PNG (bytes) of size (width, height), for the Images tab."""
    width, height = size
    self._write(subfolder, step, [summary_pb2.Summary.Value(
        tag=tag, image=summary_pb2.Summary.Image(
            height=height, width=width, colorspace=3,
            encoded_image_string=png))])

  def close(self):
    for writer in self._writers.values():
      writer.close()

  def _write(self, subfolder, step, values):
    self._writers[subfolder].write(event_pb2.Event(
        wall_time=time.time(), step=step,
        summary=summary_pb2.Summary(value=values)).SerializeToString())


def new_run_dir(summaries_dir):
  """A new subfolder of summaries_dir for this run; earlier ones are kept.

  Returns:
    Its path, or None if summaries_dir is '' (no summaries).
  """
  if not summaries_dir:
    return None
  base = os.path.join(summaries_dir, time.strftime('run-%Y%m%d-%H%M%S'))
  path, n = base, 1
  while os.path.exists(path):
    n += 1
    path = f'{base}-{n}'
  os.makedirs(path)
  return path
