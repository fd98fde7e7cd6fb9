"""Stage 3, train: cached vectors -> a softmax head, and what it measured.

  head       train and evaluate the head on cached vectors
  metrics    per-class figures, the confusion matrix and its picture
  summaries  TensorBoard event files, written with TensorFlow alone
"""
