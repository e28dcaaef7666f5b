"""Fitting a prior to a trained model's latents, loading one, and sampling images with it.

`fitting_latents` encodes images with the model's encoder: the posterior means, or one draw
from each posterior. For a `HierarchicalVAE` they are the top group's noise-space latents
(the first columns of its ``encode``), which the fitted prior replaces while the lower groups
keep their own prior.
"""

import os

import numpy as np

import keras

from keras_vae.core import fitted_prior
from keras_vae.priors.base import PriorModel

#: What a prior is fitted to: the encoder's posterior means, or one draw from each posterior.
SOURCES = ("means", "draws")


def model_groups(vae):
    """A hierarchical model's latent groups (`keras_vae.core.hierarchy.LatentGroup`s), else None."""
    groups = getattr(vae, "latent_groups", None)
    return groups() if callable(groups) else None


def decoder_width(vae):
    """D, the width of the decoder's z (a hierarchical model's noise)."""
    return int(getattr(vae, "noise_size", None) or vae.latent_dim)


def fitting_latents(vae, images, source="means", seed=0, batch_size=256):
    """(N, d) float32 latents of ``images`` to fit a prior to (see the module docstring)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    if getattr(vae, "conditional", False):
        raise ValueError("a fitted prior is for an unconditional model; this one is "
                         "class-conditional")
    z_mean, z_log_var = vae.encode(images, batch_size=batch_size)
    groups = model_groups(vae)
    width = groups[0].size if groups else z_mean.shape[1]
    z_mean, z_log_var = np.asarray(z_mean)[:, :width], np.asarray(z_log_var)[:, :width]
    if source == "means":
        return z_mean.astype(np.float32)
    noise = np.random.default_rng(seed).standard_normal(z_mean.shape)
    return (z_mean + np.exp(0.5 * z_log_var) * noise).astype(np.float32)


def fit_prior(latents, kind, seed=0, fit=None, verbose=0, **options):
    """A prior of ``kind`` ("gmm", "flow", "diffusion") fitted to (N, d) latents; ``options``
    are those of `fit_gmm`, `fit_flow` or `fit_diffusion`."""
    from keras_vae.priors.diffusion import fit_diffusion
    from keras_vae.priors.flow import fit_flow
    from keras_vae.priors.gmm import fit_gmm

    fitters = {"gmm": fit_gmm, "flow": fit_flow, "diffusion": fit_diffusion}
    if kind not in fitters:
        raise ValueError(f"kind must be one of {', '.join(fitted_prior.KINDS)}; got {kind!r}")
    return fitters[kind](latents, seed=seed, fit=fit, verbose=verbose, **options)


def load_prior(path):
    """A fitted prior from its `.keras` file (any backend); ValueError if it is not one."""
    from keras_vae.priors import diffusion, flow, gmm  # noqa: F401  (registers the classes)

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no fitted prior at {path}; fit one with keras-vae fit-prior")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(f"could not load {path} as a fitted prior: {error}") from None
    if not isinstance(model, PriorModel):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a fitted prior")
    return model


def sample_images(vae, prior, n, seed=None, temperature=1.0, temperatures=None):
    """n images from ``vae`` with z from the fitted ``prior``: (n, H, W, C) pixel means."""
    z = prior.sample_latents(n, decoder_width(vae), seed, temperature, model_groups(vae),
                             temperatures)
    return vae.decode(z)
