"""What the fitted priors share: `PriorModel`, a `keras.Model` with the graph that `prior.onnx`
holds, its description for the loop (`keras_vae.core.fitted_prior.FittedPrior`), and sampling.

A kind subclasses it and defines `kind`, `graph` (the ONNX graph's function of its inputs,
`keras_vae.core.fitted_prior.TENSORS`), `fitted_prior` and its config; `sample_latents` runs
the one loop of `keras_vae.core.fitted_prior.draw_fitted` around `graph`, so a Keras prior and
its exported `prior.onnx` draw the same z for the same seed.
"""

import math
import time

import numpy as np

import keras
from keras import ops

from keras_vae.core import fitted_prior
from keras_vae.core.files import atomic_path


class PriorModel(keras.Model):
    """The base of the fitted priors (see the module docstring).

    Args:
        dim: d, the width of the latents it models.
        fit: what it was fitted to and how long it took (a JSON-ready dict), kept in its config.
    """

    #: "gmm", "flow" or "diffusion"
    kind = None

    def __init__(self, dim, fit=None, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.fit_info = dict(fit or {})

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "fit": self.fit_info}

    # === What prior.onnx computes ===

    def graph(self, *inputs):
        """The ONNX graph's outputs for its inputs (tensors, in `input_specs` order)."""
        raise NotImplementedError

    def input_specs(self):
        """{input name: (shape without the batch axis, dtype name)}, in the graph's order."""
        names, _ = fitted_prior.TENSORS[self.kind]
        specs = {names[0]: ((self.dim,), "float32")}
        if len(names) > 1:
            specs[names[1]] = ((), "int64")
        return specs

    def fitted_prior(self):
        """The prior as the loop and the metadata see it (`keras_vae.core.fitted_prior.FittedPrior`)."""
        return fitted_prior.FittedPrior(self.kind, self.dim, fit=self.fit_info)

    def run_graph(self, inputs):
        """`graph` on NumPy inputs (a dict by input name): float32 NumPy (n, d)."""
        names = list(self.input_specs())
        tensors = [ops.convert_to_tensor(np.asarray(inputs[name])) for name in names]
        return np.asarray(ops.convert_to_numpy(self.graph(*tensors)), np.float32)

    # === Sampling ===

    def sample_latents(self, n, latent_dim=None, seed=None, temperature=1.0, groups=None,
                       temperatures=None):
        """n draws of the decoder's z: float32 (n, latent_dim) (default: d).

        The loop of `keras_vae.core.fitted_prior.draw_fitted`: for a hierarchical model
        (its `latent_groups()` as ``groups``) the prior fills the top group's noise and the
        other groups get N(0, I) noise at their temperatures.
        """
        return fitted_prior.draw_fitted(self.fitted_prior(), n, latent_dim or self.dim,
                                        self.run_graph, seed, temperature, groups, temperatures)

    def save_prior(self, path):
        """Save atomically (a temporary file beside `path`, then renamed) as a `.keras` file."""
        with atomic_path(path) as temp_path:
            self.save(temp_path)
        return path


def standardization(latents):
    """(mean, std) float64 (d,) of (N, d) latents; a dimension that does not vary gets std 1."""
    latents = np.asarray(latents, np.float64)
    std = latents.std(axis=0)
    return latents.mean(axis=0), np.where(std > 1e-6, std, 1.0)


def fit_with_cosine_decay(prior, latents, epochs, batch_size, lr, verbose=0, clipnorm=None):
    """Compiles ``prior`` with Adam on a cosine-decayed learning rate ending with the last step,
    and trains it on (N, d) latents with `fit`; returns the History."""
    steps = epochs * math.ceil(len(latents) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(lr, max(1, steps))
    prior.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=clipnorm))
    return prior.fit(latents, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)


class FitTimer:
    """Wall and CPU seconds of a fit (`time.process_time`: every thread of this process)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall_seconds = time.perf_counter() - self.wall
        self.cpu_seconds = time.process_time() - self.cpu
        return False

    def record(self, **fields):
        return {**fields, "wall_seconds": round(self.wall_seconds, 2),
                "cpu_seconds": round(self.cpu_seconds, 2)}


def check_latents(latents):
    """float32 (N, d) latents to fit, or ValueError."""
    latents = np.asarray(latents, np.float32)
    if latents.ndim != 2 or len(latents) < 2 or not np.all(np.isfinite(latents)):
        raise ValueError(f"a prior is fitted to finite latents of shape (N >= 2, d); got shape "
                         f"{list(latents.shape)}")
    return latents
