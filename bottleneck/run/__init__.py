"""Stage 5, run: the retrain run from start to finish, safe to run nightly.

  pipeline     the stages in order: folder -> vectors -> head -> exports
  tuning       the cache and training stages of a --fine_tune_blocks run
  fingerprint  is the model in place already the answer to this run?
  gate         the quality gate: publish only a good enough model
  release      write, measure and publish every export
  locks        one run at a time per cache folder and output
  cli          what retrain.py and label_image.py share (flags, errors)
"""
