"""Stage 4, export: backbone + head -> files that a client can run.

  formats      labels file and bottleneck.json: names and readers (TF-free)
  saved_model  the SavedModel (image bytes or pixels in) and the frozen graph
  tflite_file  float32 and int8 .tflite classifiers with their labels inside
"""
