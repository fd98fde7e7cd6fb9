"""Stage 3, train: cached vectors -> a softmax head, and what it measured.

  recipes    the one call that trains the head by --head_recipe
  standard   the standard recipe: standardized features, L2, L-BFGS
  lbfgs      the L-BFGS minimizer it uses
  head       the head, and retrain.py's recipe (plain SGD on raw features)
  fine_tune  the last blocks and the head, trained on cached activations
  metrics    per-class figures, the confusion matrix and its picture
  summaries  TensorBoard event files, written with TensorFlow alone
"""
