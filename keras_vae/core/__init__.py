"""The NumPy core of keras-vae: NumPy, Pillow and the standard library only.

Both the Keras library and :mod:`keras_vae.serving` build on these modules, and
they import nothing else of the project (import-linter checks it):

* :mod:`keras_vae.core.contract` - the exported model's interface: tensor names,
  metadata keys, the prior's encoding, drawing z.
* :mod:`keras_vae.core.likelihood` - importance-sampled log p(x) in NumPy, in nats.
* :mod:`keras_vae.core.files` - atomic file writing (temp file, fsync, rename).
* :mod:`keras_vae.core.images` - image grids and PNG files.
"""
