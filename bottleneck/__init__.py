"""bottleneck: transfer learning on cached backbone features, on a CPU.

The pipeline, one module per stage:
  images    -> find class folders and photos; the stable train/validation/test split
  decode    -> file bytes -> upright RGB pixels at the backbone's input size
  backbones -> name or handle -> a frozen feature extractor
  cache     -> HDF5 store of bottleneck vectors, and the stage that fills it
  head      -> train and evaluate the softmax head on cached vectors
  export    -> backbone + head -> SavedModel, labels file, frozen graph
  predict   -> load an export and label images
  pipeline  -> the retrain run, stage after stage
"""
