"""Stage 4, export: backbone + head -> files that a client can run.

  formats       labels file and bottleneck.json: names and readers (TF-free)
  saved_model   the SavedModel (image bytes or pixels in) and the frozen graph
  graph_decode  the SavedModel's decoder: file bytes -> the cache stage's
                pixels, in TensorFlow ops; with graph_bytes (reading bytes),
                graph_exif (EXIF orientation) and graph_gif (GIF transparency)
  tflite_file   float32 and int8 .tflite classifiers with their labels inside
"""
