"""Several image sizes (--image_sizes): one backbone pass each, concatenated.

  python retrain.py --image_dir photos/ --image_sizes 224,320

runs the backbone on every photo once at 224x224 and once at 320x320, pools
the chosen layers of each pass, and concatenates the vectors in the order of
the sizes (a pass at 320 px gave about +1.5 points over 224 px alone, issue
11). A pass at s pixels costs about (s / 224)^2 of a pass at 224: 2x for 320.

Why the passes resize inside the backbone's function: a photo is decoded once,
at the largest size S, and each smaller pass resizes those pixels itself
(bilinear, no antialiasing: TFLite's builtin RESIZE_BILINEAR, which has int8
kernels). So the backbone keeps a single image input of one size, and so does
everything that feeds it: the cache stage's decoder, label_image.py, the
SavedModel's in-graph decoder and serving_images, the frozen graph's
Placeholder and both .tflite files. No export and no client needs to know
that there are several passes.
"""

import tensorflow as tf


def features(passes, sizes):
  """The function of the passes on one input: each pass, concatenated.

  Args:
    passes: list of functions, one per size: float32 [batch, s, s, 3] in
      [0, 1] -> float32 [batch, features of that pass].
    sizes: tuple of distinct ints, the size s of each pass, in the order
      their vectors are concatenated.

  Returns:
    A tf.function, float32 [batch, S, S, 3] in [0, 1], S = max(sizes) ->
    float32 [batch, sum of the passes' features].
  """
  largest = max(sizes)

  @tf.function(input_signature=[
      tf.TensorSpec([None, largest, largest, 3], tf.float32)])
  def concatenated(images):
    vectors = [run(images if size == largest else resize(images, size))
               for run, size in zip(passes, sizes)]
    return vectors[0] if len(vectors) == 1 else tf.concat(vectors, axis=1)
  return concatenated


def resize(images, size):
  """float32 [batch, S, S, 3] -> [batch, size, size, 3], as the passes do."""
  return tf.image.resize(images, (size, size), method='bilinear',
                         antialias=False)


def identity_name(id_name, sizes):
  """What the backbone's identity hashes as its name, with these passes.

  One size keeps the name it had before --image_sizes (the size is hashed
  apart), so that the caches written then stay valid; several add the sizes
  in order, since another order gives other vectors.
  """
  if len(sizes) == 1:
    return id_name
  return f'{id_name} sizes={",".join(str(size) for size in sizes)}'
