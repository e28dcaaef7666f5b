"""Priors fitted after training to where a trained model's encoder puts the data.

A VAE trained with p(z) = N(0, I) decodes well only the regions of latent space its encoder
visits; a prior fitted to the encoder's latents afterwards samples from there. One module per
kind, each a `keras.Model` that saves to `.keras` and exports to ONNX
(`keras_vae.export.prior`); the loop that samples them is `keras_vae.core.fitted_prior`'s:

* ``keras_vae.priors.gmm`` - `GaussianMixturePrior`: scikit-learn's `GaussianMixture`.
* ``keras_vae.priors.flow`` - `FlowPrior`: RealNVP affine coupling layers, trained with `fit`.
* ``keras_vae.priors.diffusion`` - `DiffusionPrior`: a DDPM/DDIM denoiser (an MLP with a time
  embedding), trained with `fit`.
* ``keras_vae.priors.base`` - `PriorModel`, what the three share: the graph, the sampler.
* ``keras_vae.priors.fitting`` - `fitting_latents` (the encoder's posterior means or draws),
  `fit_prior`, `load_prior`, `sample_images`.

Importing this package loads no Keras; its names import it on first use.
"""

from keras_vae.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "PriorModel": "base", "GaussianMixturePrior": "gmm", "FlowPrior": "flow",
    "DiffusionPrior": "diffusion", "fit_prior": "fitting", "fitting_latents": "fitting",
    "load_prior": "fitting", "sample_images": "fitting", "fit_gmm": "gmm", "fit_flow": "flow",
    "fit_diffusion": "diffusion",
})
