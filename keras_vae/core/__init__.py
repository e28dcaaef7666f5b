"""The NumPy core of keras-vae: NumPy, Pillow and the standard library only.

Both the Keras library and ``keras_vae.serving`` build on these modules, and
they import nothing else of the project (import-linter checks it):

* ``keras_vae.core.contract`` - the exported model's interface: tensor names,
  metadata keys, the prior's encoding, drawing z.
* ``keras_vae.core.likelihood`` - importance-sampled log p(x) in NumPy, in nats.
* ``keras_vae.core.files`` - atomic file writing (temp file, fsync, rename).
* ``keras_vae.core.images`` - image grids and PNG files.
* ``keras_vae.core.anomaly`` - anomaly scores and thresholds, from any model's log p(x).
* ``keras_vae.core.hierarchy`` - hierarchical exports: latent groups, their noise, and
  log p(x) from a log-weight function.
* ``keras_vae.core.options`` - options declared once, as dataclass fields.
* ``keras_vae.core.lazy`` - a package's names, imported on first use.
"""
