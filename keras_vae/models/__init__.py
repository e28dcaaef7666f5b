"""The VAE family: the models, their networks, distributions, options and trainers.

* ``keras_vae.models.vae`` - `VAE`: one latent vector, MLP or conv networks.
* ``keras_vae.models.hierarchical`` - `HierarchicalVAE`: top-down groups of latents (Ladder VAE,
  NVAE, VDVAE), MLP or conv.
* ``keras_vae.models.options`` - the model options, declared once (no Keras).
* ``keras_vae.models.distributions`` - the distribution math, in ``keras.ops``.
* ``keras_vae.models.networks`` - encoder and decoder networks.
* ``keras_vae.models.conditioning`` - class-conditional models: labels in and out.
* ``keras_vae.models.pictures`` - sample grids, reconstructions, latent space, interpolation.
* ``keras_vae.models.trainers`` - the one piece that differs by backend: the gradient step.

Importing this package loads no Keras; ``keras_vae.models.VAE`` (or ``HierarchicalVAE``) does,
on first use.
"""

from keras_vae.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"VAE": "vae", "HierarchicalVAE": "hierarchical"})
