"""Load an export of retrain.py and label images with it.

  loaders    the SavedModel folder (its classifier.tflite when it has one),
             a .tflite file, retrain.py's frozen graph -> a `LoadedModel`
  labelling  image files -> top labels and the "unknown" verdict

The names below are this stage's interface; `bottleneck.load` (the Python
API) is built on them.
"""

from bottleneck.predict.labelling import accuracy
from bottleneck.predict.labelling import label_images
from bottleneck.predict.labelling import labelled
from bottleneck.predict.labelling import Predictions
from bottleneck.predict.loaders import load_frozen_graph
from bottleneck.predict.loaders import load_model_folder
from bottleneck.predict.loaders import load_saved_model
from bottleneck.predict.loaders import load_tflite
from bottleneck.predict.loaders import LoadedModel

__all__ = ['accuracy', 'label_images', 'labelled', 'Predictions',
           'load_frozen_graph', 'load_model_folder', 'load_saved_model',
           'load_tflite', 'LoadedModel']
