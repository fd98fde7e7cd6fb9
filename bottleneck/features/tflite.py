"""Running .tflite models, and the files a .tflite of retrain.py carries.

Runtime: LiteRT (`ai_edge_litert`), not `tf.lite.Interpreter`. TensorFlow 2.21
still ships the latter, but it warns on every use that it is deprecated and due
for deletion. LiteRT is its successor and what runs the model on a phone; here
it gave the same outputs bit for bit at the same speed as the deprecated
interpreter (int8 MobileNetV2, 2 threads, batch 4, on the machine of
README.md's Performance table). Converting
still needs TensorFlow's `tf.lite.TFLiteConverter` (see `quantize` and
`export.tflite_file`); running does not, so neither does this module.

A .tflite written by retrain.py carries its labels as TFLite Model Maker's
models do: a zip archive appended to the model, holding labels.txt and
bottleneck.json (see `formats`). Interpreters ignore the bytes after the model;
`unzip -l model.tflite` lists them.
"""

import contextlib
import io
import os
import queue
import sys
import zipfile

import numpy as np

from bottleneck import errors

# Fixed, so that the same model and labels always give the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def default_threads():
  """The CPU cores this process may use."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    return os.cpu_count() or 1


# The output that __call__ returns when a model has several (retrain.py's
# classifiers also return unknown_score: export/outputs.py).
PRIMARY_OUTPUT = 'probabilities'


class Runner:
  """Runs a .tflite image model with one input, any batch size.

  A model with several outputs is read by their signature names: __call__
  returns the one named PRIMARY_OUTPUT, `run` the others too.

  Quantized inputs and outputs (int8 or uint8, as other tools export them) are
  converted from and to float32 with the model's own scale and zero point.
  """

  def __init__(self, model, *, name, threads=None):
    """Loads a model.

    Args:
      model: the .tflite file's bytes.
      name: what to call it in error messages (its path).
      threads: CPU threads; None for every core this process may use.

    Raises:
      errors.ModelError: the bytes are not a TFLite model this runtime can run,
        or it does not take images [batch, height, width, 3].
    """
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
    self.name = name
    try:
      with _runtime_stderr_hidden():
        self._interpreter = litert.Interpreter(
            model_content=bytes(model), num_threads=threads or default_threads())
        self._interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
      raise errors.ModelError(f'{name} is not a TFLite model that LiteRT can '
                              f'run: {e}') from e
    inputs = self._interpreter.get_input_details()
    outputs = self._interpreter.get_output_details()
    if len(inputs) != 1 or not outputs or len(inputs[0]['shape']) != 4:
      raise errors.ModelError(
          f'{name} is not an image model with one input [batch, height, width, '
          f'3]: inputs {[list(i["shape"]) for i in inputs]}, outputs '
          f'{[list(o["shape"]) for o in outputs]}.')
    named = _named_outputs(self._interpreter, outputs)
    if len(outputs) > 1 and PRIMARY_OUTPUT not in named:
      raise errors.ModelError(
          f'{name} has {len(outputs)} outputs and none is named '
          f'{PRIMARY_OUTPUT!r}: which one to read is unknown.')
    self._input = inputs[0]
    self._output = named.get(PRIMARY_OUTPUT, outputs[0])
    self._extra = {key: detail for key, detail in named.items()
                   if detail['index'] != self._output['index']}
    self._batch = int(self._input['shape'][0])
    self.image_size = tuple(int(d) for d in self._input['shape'][1:3])
    self.outputs = int(self._output['shape'][-1])
    self.extra_outputs = tuple(sorted(self._extra))

  def __call__(self, images):
    """float32 numpy [batch, height, width, 3] -> float32 [batch, outputs].

    The input is in whatever range the model takes ([0, 1] for retrain.py's).
    """
    return self.run(images)[0]

  def run(self, images):
    """Like __call__, and also returns {name: float32 array} of the other
    named outputs (`extra_outputs`), e.g. retrain.py's unknown_score."""
    if len(images) != self._batch:
      self._interpreter.resize_tensor_input(self._input['index'],
                                            [len(images), *images.shape[1:]])
      self._interpreter.allocate_tensors()
      self._batch = len(images)
    self._interpreter.set_tensor(self._input['index'],
                                 _quantize(images, self._input))
    self._interpreter.invoke()
    return (_dequantize(self._interpreter.get_tensor(self._output['index']),
                        self._output),
            {key: _dequantize(self._interpreter.get_tensor(detail['index']),
                              detail) for key, detail in self._extra.items()})


def _named_outputs(interpreter, outputs):
  """{signature output name: output detail} of a model's one signature; {}
  for a model without exactly one signature (its outputs have no names)."""
  signatures = interpreter.get_signature_list()
  if len(signatures) != 1:
    return {}
  names = interpreter.get_signature_runner(
      next(iter(signatures))).get_output_details()
  by_index = {detail['index']: detail for detail in outputs}
  return {key: by_index[detail['index']] for key, detail in names.items()
          if detail['index'] in by_index}


@contextlib.contextmanager
def _runtime_stderr_hidden():
  """Keeps what LiteRT's C++ code prints on stderr out of the output.

  Loading a model prints 'INFO: Created TensorFlow Lite XNNPACK delegate for
  CPU.' whatever TF_CPP_MIN_LOG_LEVEL says: noise in label_image.py's output
  and in cron mail. A model that cannot be loaded still raises, with the
  reason in its message. (Anything another thread prints on stderr in these
  milliseconds is dropped too; the callers load before they start threads.)
  """
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, 'wb') as devnull:
      os.dup2(devnull.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


class RunnerPool:
  """`count` Runners of one model, for as many threads calling at once.

  A LiteRT interpreter runs one call at a time; each call takes a free one.
  Several single-threaded interpreters can beat one multi-threaded one on
  small batches, whose layers are too small to share out well (`probe`
  measures which is faster on the machine at hand).
  """

  def __init__(self, model, *, name, threads, count):
    """Loads `count` interpreters of `threads` threads; see `Runner`."""
    self._free = queue.SimpleQueue()
    for _ in range(count):
      self._free.put(Runner(model, name=name, threads=threads))
    first = self._free.get()
    self.name, self.image_size, self.outputs = (first.name, first.image_size,
                                                first.outputs)
    self._free.put(first)

  def __call__(self, images):
    """float32 numpy [batch, height, width, 3] -> float32 [batch, outputs]."""
    runner = self._free.get()
    try:
      return runner(images)
    finally:
      self._free.put(runner)


def _quantize(values, detail):
  dtype = detail['dtype']
  if dtype == np.float32:
    return np.asarray(values, np.float32)
  scale, zero_point = detail['quantization']
  info = np.iinfo(dtype)
  return np.clip(np.round(values / scale + zero_point), info.min,
                 info.max).astype(dtype)


def _dequantize(values, detail):
  if values.dtype == np.float32:
    return values.copy()  # The interpreter reuses its buffer on the next call.
  scale, zero_point = detail['quantization']
  return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def attach_files(model, files):
  """Appends files to a .tflite as a zip archive (see the module docstring).

  Args:
    model: bytes of a .tflite model without attached files.
    files: {name: bytes}.

  Returns:
    bytes: the model followed by the archive.
  """
  archive = io.BytesIO()
  with zipfile.ZipFile(archive, 'w', zipfile.ZIP_DEFLATED) as z:
    for name, data in sorted(files.items()):
      z.writestr(zipfile.ZipInfo(name, _ZIP_DATE), data)
  return bytes(model) + archive.getvalue()


def attached_files(data):
  """{name: bytes} of the files attached to a .tflite; {} if none."""
  try:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
      return {name: z.read(name) for name in z.namelist()}
  except (zipfile.BadZipFile, ValueError, EOFError):
    return {}
