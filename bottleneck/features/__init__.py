"""Stage 2, features: pixels -> bottleneck vectors, computed once and cached.

  backbones     name or handle -> a frozen feature extractor (one surface)
  keras_models  the keras: backbones: which models, and building one
  hub_sizes     the input size of a TF Hub-style SavedModel, and its source
  passes        several image sizes: one backbone pass each, concatenated
  tflite        the LiteRT runtime for .tflite backbones and classifiers
  quantize      a post-training int8 copy of a backbone
  blocks        the last blocks of a backbone, split off for fine-tuning
  store         the crash-safe store of one backbone's vectors: segments and a
                journal, compacted as it grows
  segments      the store's immutable HDF5 segment files; lazy StoredVectors
  digest_index  a segment's digests in ascending order, found by binary search
  journal       the store's append-only file of vectors not yet in a segment
  disk_errors   a cache file the machine cannot use, told apart from damage
  cache         the cache stage: decode and run the backbone only for new photos

Imports point down the pipeline: this package uses `data`, never later stages.
"""
