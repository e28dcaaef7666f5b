"""`DiffusionPrior`: a denoising diffusion model over the latents (DDPM, Ho et al. 2020; sampled
with DDIM, Song et al. 2021), as LSGM puts one in a VAE's latent space.

The latents are standardized (x = (z − shift)/scale, fixed from the data) and noised along
DDPM's linear schedule of ``train_steps`` steps: x_t = √ᾱ_t·x + √(1 − ᾱ_t)·ε. The denoiser, an
MLP of residual blocks with a sinusoidal embedding of t added to each, estimates ε from
(x_t, t); `fit` minimizes the mean squared error on every backend, drawing t and ε from the
model's own noise generator. `graph` is the denoiser, what `prior.onnx` computes; the
sampling loop (``steps`` DDIM steps, η) is `keras_vae.core.fitted_prior`'s.
"""

import math

import numpy as np

import keras
from keras import ops

from keras_vae.core import fitted_prior
from keras_vae.priors.base import FitTimer, PriorModel, check_latents, fit_with_cosine_decay
from keras_vae.priors.base import standardization


def time_embedding(t, size):
    """[sin(t·f), cos(t·f)] with f_i = 10000^(−i/(size/2)): (n, size) of steps t (n,)."""
    half = size // 2
    frequencies = np.exp(-math.log(10000.0) * np.arange(half) / half).astype("float32")
    angles = ops.expand_dims(ops.cast(t, "float32"), -1) * ops.convert_to_tensor(frequencies)
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)


@keras.saving.register_keras_serializable(package="keras_vae")
class DiffusionPrior(PriorModel):
    """A latent diffusion model over d latents.

    Args:
        dim: d.
        units: width of the denoiser's residual stream.
        blocks: residual blocks (two dense layers each, SiLU).
        embedding: size of the time embedding.
        train_steps: diffusion steps T of the training schedule.
        steps: sampling steps S (DDIM), 1 to train_steps.
        eta: η of the sampler: 0 DDIM, 1 with every step DDPM's ancestral sampler.
        seed: seed of the training noise.

    Example:
        >>> prior = fit_diffusion(latents, epochs=50)
        >>> z = prior.sample_latents(16, seed=0)
    """

    kind = "diffusion"

    def __init__(self, dim, units=512, blocks=3, embedding=64, train_steps=1000, steps=50,
                 eta=0.0, seed=0, fit=None, **kwargs):
        super().__init__(dim, fit, **kwargs)
        self.units, self.blocks, self.embedding = int(units), int(blocks), int(embedding)
        self.train_steps, self.steps, self.eta, self.seed = int(train_steps), int(steps), float(eta), seed
        fitted_prior.ddim_timesteps(self.train_steps, self.steps)  # ValueError for bad steps
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be from 0 to 1; got {eta}")
        self.alphas_cumprod = fitted_prior.linear_alphas_cumprod(self.train_steps)
        # === Layers ===
        self.shift = self.add_weight(shape=(self.dim,), initializer="zeros", trainable=False,
                                     name="shift")
        self.scale = self.add_weight(shape=(self.dim,), initializer="ones", trainable=False,
                                     name="scale")
        dense = keras.layers.Dense
        self.time_mlp = keras.Sequential([dense(self.units, activation="silu"), dense(self.units)],
                                         name="time_mlp")
        self.time_mlp.build((None, self.embedding))
        self.input_layer = dense(self.units, name="input_projection")
        self.input_layer.build((None, self.dim))
        self.block_layers = []
        for b in range(self.blocks):
            block = keras.Sequential([keras.layers.Activation("silu"), dense(self.units, activation="silu"),
                                      dense(self.units)], name=f"block_{b}")
            block.build((None, self.units))
            self.block_layers.append(block)
        self.output_layer = dense(self.dim, kernel_initializer="zeros", name="output_projection")
        self.output_layer.build((None, self.units))
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def get_config(self):
        return {**super().get_config(), "units": self.units, "blocks": self.blocks,
                "embedding": self.embedding, "train_steps": self.train_steps, "steps": self.steps,
                "eta": self.eta, "seed": self.seed}

    def denoise(self, x, t):
        """ε̂ (n, d): the noise in standardized x_t (n, d) at steps t (n,) int."""
        time = self.time_mlp(time_embedding(t, self.embedding))
        h = self.input_layer(x)
        for block in self.block_layers:
            h = h + block(h + time)
        return self.output_layer(keras.activations.silu(h))

    def graph(self, x, t):
        return self.denoise(x, t)

    def call(self, z):
        """The per-example training loss: mean squared error of ε̂ at a random step, (n,)."""
        x = (z - self.shift) / self.scale
        n = ops.shape(x)[0]
        t = keras.random.randint((n,), 0, self.train_steps, seed=self.seed_generator)
        noise = keras.random.normal(ops.shape(x), seed=self.seed_generator)
        alphas = ops.take(ops.convert_to_tensor(self.alphas_cumprod.astype("float32")), t)[:, None]
        x_t = ops.sqrt(alphas) * x + ops.sqrt(1.0 - alphas) * noise
        return ops.mean(ops.square(self.denoise(x_t, t) - noise), axis=-1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return ops.mean(y_pred)

    def fitted_prior(self, steps=None, eta=None):
        """The loop's description, with ``steps`` and ``eta`` if given (else the model's)."""
        schedule = fitted_prior.DiffusionSchedule(
            self.alphas_cumprod, int(steps or self.steps), self.eta if eta is None else float(eta),
            np.asarray(ops.convert_to_numpy(self.shift), np.float64),
            np.asarray(ops.convert_to_numpy(self.scale), np.float64))
        return fitted_prior.FittedPrior(self.kind, self.dim, schedule=schedule, fit=self.fit_info)


def fit_diffusion(latents, units=512, blocks=3, embedding=64, train_steps=1000, steps=50, eta=0.0,
                  epochs=100, batch_size=256, lr=1e-3, seed=0, fit=None, verbose=0):
    """A `DiffusionPrior` trained on (N, d) latents: Adam, cosine decay, `fit`."""
    latents = check_latents(latents)
    keras.utils.set_random_seed(seed)
    with FitTimer() as timer:
        prior = DiffusionPrior(latents.shape[1], units, blocks, embedding, train_steps, steps, eta,
                               seed)
        mean, std = standardization(latents)
        prior.shift.assign(mean.astype("float32"))
        prior.scale.assign(std.astype("float32"))
        history = fit_with_cosine_decay(prior, latents, epochs, batch_size, lr, verbose)
    prior.fit_info = timer.record(
        **(fit or {}), kind="diffusion", units=units, blocks=blocks, train_steps=train_steps,
        epochs=epochs, batch_size=batch_size, lr=lr, backend=keras.backend.backend(),
        train_loss=float(history.history["loss"][-1]))
    return prior
