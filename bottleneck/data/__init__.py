"""Stage 1, data: a folder of class subfolders -> photos -> decoded pixels.

  images  find class folders and photos, digest them; the stable split
  decode  file bytes -> upright RGB pixels at the backbone's input size
"""
