"""--mirror_average: a photo's features averaged with its mirror image's.

  python retrain.py --image_dir photos/ --mirror_average

The backbone runs twice on every photo, as it is and flipped left-right, and
the feature vector is the mean of the two: x -> (f(x) + f(flip(x))) / 2.
Averaging the predictions over a photo and its mirror image is the oldest
test-time augmentation (Krizhevsky et al. 2012 averaged ten crops and their
mirrors; Simonyan and Zisserman 2015, Szegedy et al. 2015 do the same), and a
class of photos seldom depends on left and right. Averaging the features
rather than the probabilities keeps every export a plain backbone and one
linear head, so the head is trained, validated and tested on exactly the
vectors that the SavedModel, frozen graph and both .tflite files compute.

Cost: two backbone passes per photo, in the cache stage and in every export
(2x the time per photo); the vector keeps its width. The flag is part of the
backbone's identity, so the cache keeps the two kinds of vector apart.
"""

import dataclasses
import hashlib

import tensorflow as tf


def averaged(backbone):
  """The backbone whose vectors are averaged with the mirror image's.

  Args:
    backbone: a float32 `backbones.Backbone`.

  Returns:
    A `backbones.Backbone` whose `features` maps float32 [batch, height,
    width, 3] in [0, 1] to float32 [batch, feature_dim]: the mean of
    backbone.features of the images and of the images flipped left-right
    (width reversed).
  """
  height, width = backbone.image_size
  features = backbone.features

  @tf.function(input_signature=[
      tf.TensorSpec([None, height, width, 3], tf.float32)])
  def mirror_averaged(images):
    return (features(images) + features(tf.reverse(images, axis=[2]))) * 0.5

  identity = hashlib.sha256(
      f'{backbone.identity} averaged with its mirror image'.encode())
  return dataclasses.replace(
      backbone, identity=identity.hexdigest(), features=mirror_averaged,
      preprocessing=backbone.preprocessing +
      '; averaged with the mirror image (left-right)')
