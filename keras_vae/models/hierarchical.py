"""`HierarchicalVAE`: a top-down VAE with several groups of latents (Ladder VAE, NVAE, VDVAE).

Inference is bidirectional (Kingma et al. 2016, IAF; Sønderby et al. 2016; Vahdat & Kautz
2020; Child 2021): a bottom-up pass over x computes features for every group, and a
top-down pass, shared by the prior and the posterior, draws the groups in turn:

    p(z_l | z_<l) = N(μ_p, σ_p²),   q(z_l | x, z_<l) = N(μ_p + Δμ, (σ_p·e^Δ)²)

where μ_p, σ_p come from the top-down state, and Δμ, Δ from the state and the
bottom-up features (the posterior relative to the prior, as NVAE). The KL of each
group is in closed form.
"""

import math

import numpy as np

import keras
from keras import layers
from keras import ops
from keras import random

from keras_vae.models import distributions as dist
from keras_vae.core import hierarchy
from keras_vae.core.hierarchy import LatentGroup
from keras_vae.core.hierarchy import draw_noise
from keras_vae.models.networks import DepthToSpace
from keras_vae.models.networks import Z_LOG_VAR_RANGE
from keras_vae.models.base import FamilyModel
from keras_vae.models.base import is_array

ARCHITECTURES = ("mlp", "conv")
UPSAMPLINGS = ("nearest", "subpixel")
LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic", "logistic_mixture")
# Residual-stream width when `width` is not given.
DEFAULT_WIDTH = {"mlp": 256, "conv": 32}


@keras.saving.register_keras_serializable(package="keras_vae")
class ResidualBlock(layers.Layer):
    """h + f(silu(g(silu(h)))), with f, g two Dense layers ("mlp") or two 3×3 convolutions ("conv").

    f starts at zero, so that each block starts as the identity and a deep stack trains stably.
    """

    def __init__(self, width, kind="mlp", **kwargs):
        super().__init__(**kwargs)
        self.width, self.kind = int(width), kind
        if kind == "mlp":
            self.inner = layers.Dense(self.width, name="inner")
            self.outer = layers.Dense(self.width, kernel_initializer="zeros", name="outer")
        else:
            self.inner = layers.Conv2D(self.width, 3, padding="same", name="inner")
            self.outer = layers.Conv2D(self.width, 3, padding="same", kernel_initializer="zeros",
                                       name="outer")

    def build(self, input_shape):
        self.inner.build(input_shape)
        self.outer.build(input_shape[:-1] + (self.width,))

    def call(self, h):
        return h + self.outer(ops.silu(self.inner(ops.silu(h))))

    def get_config(self):
        return dict(super().get_config(), width=self.width, kind=self.kind)


@keras.saving.register_keras_serializable(package="keras_vae")
class HierarchicalVAE(FamilyModel):
    """Top-down hierarchical VAE with L groups of Gaussian latents, trained with `model.fit`.

    Group 0 is the top of the hierarchy (drawn first, at the lowest resolution);
    group L−1 is the closest to the pixels. Training minimises the negative ELBO,
    −E_q[log p(x|z)] + β Σ_l KL(q(z_l|x, z_<l) ‖ p(z_l|z_<l)), with one draw of z
    per example; every loss is in nats per example.

    Args:
        input_shape: image shape (height, width, channels).
        architecture: "mlp" (Ladder-VAE style: each group a vector of `latent_dim`
            units, dense residual blocks; e.g. 28×28 binarized MNIST) or "conv"
            (VDVAE style: each group a (h, w, latent_dim) map at one of several
            resolutions, convolutional residual blocks).
        num_groups: L, the number of latent groups (>= 1; for "conv" at least
            `num_resolutions`, spread over the resolutions from the top, the
            extra groups going to the coarsest levels first).
        latent_dim: units of each group ("mlp"), or channels per position ("conv").
        width: width of the residual stream: units ("mlp") or filters ("conv");
            None gives 256 ("mlp") or 32 ("conv"), and the model keeps the value.
        residual_blocks: residual blocks after each group in the top-down path, and
            per group ("mlp") or per resolution ("conv") in the bottom-up path. The
            "conv" decoder has no blocks at full resolution: after the finest latents it
            upsamples to H × W and applies its output convolution (full-resolution
            convolutions are where XLA's CPU convolutions lose most to oneDNN's).
        num_resolutions: "conv" only: latents live at H/2, H/4, …, H/2**num_resolutions
            (height and width must divide by 2**num_resolutions).
        upsampling: "conv" only: how the top-down path doubles the resolution:
            "nearest" (nearest-neighbour resize) or "subpixel" (a 3×3 convolution to
            4×width channels, then depth-to-space).
        likelihood: p(x|z): "bernoulli" (logits; pixels in [0, 1]), "gaussian" (mean;
            fixed σ = `decoder_std`), "discretized_logistic" (8-bit pixels k/255: the
            decoder outputs the location, through a sigmoid, and the log-scale of
            every pixel and channel), or "logistic_mixture" (8-bit pixels: a mixture
            of `mixture_components` discretized logistics per pixel whose channel
            means are coupled, as PixelCNN++ and VDVAE).
        mixture_components: M, the components of "logistic_mixture" (>= 1).
        decoder_std: σ of the "gaussian" likelihood (> 0, pixel units).
        beta: weight β of the KL term (1.0: the true ELBO).
        kl_warmup_steps: β rises linearly from 0 to `beta` over this many training
            steps (0: no warm-up).
        free_bits: per group, nats per example: in training, a group whose KL,
            averaged over the batch, is below this costs `free_bits` instead (and
            gets no KL gradient; Kingma et al. 2016). 0: off. Evaluation reports
            the plain KL.
        grad_clip: clip the gradients to this global norm before each update
            (None: no clipping).
        skip_threshold: skip an update whose gradient norm (before clipping) is above
            this (None: only non-finite norms are skipped, and only when `grad_clip`
            is set). Skipped updates leave weights and optimizer state unchanged
            and are counted in the logs as `skipped_updates`.
        dynamic_binarization: if true, each training step draws x ~ Bernoulli(x)
            (binarized MNIST, as the single-latent model does).
        seed: seed of the noise of training.
        source_backend: the Keras backend the model was last trained on (set by
            `fit`, saved with the model); leave it unset.

    Logs of `fit`: `loss`, `reconstruction_loss`, `kl_loss`, `kl_group_0` …
    `kl_group_{L−1}` (nats per example), and with `grad_clip` or `skip_threshold`
    set, `skipped_updates` (a running count over the model's training).

    Example:

    ```python
    model = HierarchicalVAE(input_shape=(28, 28, 1), num_groups=3, latent_dim=16)
    model.compile(optimizer="adam")
    model.fit(x_train, epochs=10)
    images = model.sample(16, seed=0)  # (16, 28, 28, 1) numpy, pixel means
    ```
    """

    def __init__(
        self,
        input_shape=(28, 28, 1),
        architecture="mlp",
        num_groups=2,
        latent_dim=16,
        width=None,
        residual_blocks=1,
        num_resolutions=2,
        upsampling="nearest",
        likelihood="bernoulli",
        mixture_components=5,
        decoder_std=0.1,
        beta=1.0,
        kl_warmup_steps=0,
        free_bits=0.0,
        grad_clip=None,
        skip_threshold=None,
        dynamic_binarization=False,
        seed=None,
        source_backend=None,
        **kwargs,
    ):
        input_shape = tuple(int(d) for d in input_shape)
        width = DEFAULT_WIDTH.get(architecture, 1) if width is None else width
        check_options(input_shape, architecture, num_groups, latent_dim, width, residual_blocks,
                      num_resolutions, upsampling, likelihood, mixture_components, decoder_std,
                      beta, kl_warmup_steps, free_bits, grad_clip, skip_threshold)
        super().__init__(**kwargs)

        # === Config ===
        self.image_shape = input_shape
        self.architecture = architecture
        self.num_groups = int(num_groups)
        self.latent_dim = int(latent_dim)
        self.width = int(width)
        self.residual_blocks = int(residual_blocks)
        self.num_resolutions = int(num_resolutions)
        self.upsampling = upsampling
        self.likelihood = likelihood
        self.mixture_components = int(mixture_components)
        self.decoder_std = float(decoder_std)
        self.beta = float(beta)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.free_bits = float(free_bits)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.skip_threshold = None if skip_threshold is None else float(skip_threshold)
        self.dynamic_binarization = bool(dynamic_binarization)
        self.seed = seed
        self.source_backend = source_backend

        # === Layers ===
        conv = architecture == "conv"
        height, width_px, channels = input_shape
        # The resolution level of each group (conv: 0 is the coarsest, H/2**num_resolutions).
        self.group_levels = group_levels(self.num_groups, self.num_resolutions if conv else 1)
        if conv:
            self.group_shapes = [
                (height // 2 ** (self.num_resolutions - r), width_px // 2 ** (self.num_resolutions - r),
                 self.latent_dim) for r in self.group_levels]
        else:
            self.group_shapes = [(self.latent_dim,)] * self.num_groups
        w, blocks = self.width, self.residual_blocks
        kind = "conv" if conv else "mlp"

        def projection(units, name, kernel_size=3, initializer="glorot_uniform"):
            if conv:
                return layers.Conv2D(units, kernel_size, padding="same", name=name,
                                     kernel_initializer=initializer)
            return layers.Dense(units, name=name, kernel_initializer=initializer)

        # Bottom-up: a stem, then (mlp) per group or (conv) per resolution, residual blocks.
        self.bottom_up_stem = projection(w, "bottom_up_stem")
        stages = self.num_resolutions if conv else self.num_groups
        self.bottom_up_blocks = [[ResidualBlock(w, kind, name=f"bottom_up_{s}_block_{b}")
                                  for b in range(blocks)] for s in range(stages)]
        if conv:
            self.downsample = layers.AveragePooling2D(2, name="bottom_up_pool")
        # Top-down: a learned start, then per group a prior, a posterior, z's projection
        # into the stream and residual blocks.
        top_shape = self.group_shapes[0][:-1] + (w,) if conv else (w,)
        self.top_down_start = self.add_weight(shape=top_shape, initializer="zeros",
                                              name="top_down_start")
        # Both start at zero: every prior N(0, I), every posterior equal to its prior.
        self.priors = [projection(2 * self.latent_dim, f"prior_{l}", initializer="zeros")
                       for l in range(self.num_groups)]
        self.posteriors = [projection(2 * self.latent_dim, f"posterior_{l}", initializer="zeros")
                           for l in range(self.num_groups)]
        self.latent_projections = [projection(w, f"latent_projection_{l}", kernel_size=1)
                                   for l in range(self.num_groups)]
        self.top_down_blocks = [[ResidualBlock(w, kind, name=f"top_down_{l}_block_{b}")
                                 for b in range(blocks)] for l in range(self.num_groups)]
        # conv: one upsampling per level above the pixels (from the coarsest latents to H).
        self.upsamplers = []
        if conv:
            for r in range(self.num_resolutions):
                if upsampling == "subpixel":
                    self.upsamplers.append([
                        layers.Conv2D(4 * w, 3, padding="same", name=f"upsample_{r}"),
                        DepthToSpace(2, name=f"upsample_{r}_depth_to_space")])
                else:
                    self.upsamplers.append([layers.UpSampling2D(2, name=f"upsample_{r}")])
        self.output_head = projection(math.prod(input_shape[:-1]) * self.params_per_pixel
                                      if not conv else self.params_per_pixel, "output_head")

        # === State that changes during training (variables, so jit sees it) ===
        self.kl_weight = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.beta),
                                         trainable=False, name="beta")
        self.steps_seen = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                          name="steps_seen")
        self.skipped_updates = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                               name="skipped_updates")
        self.seed_generator = random.SeedGenerator(seed, name="noise_seed")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.kl_group_trackers = [keras.metrics.Mean(name=f"kl_group_{l}")
                                  for l in range(self.num_groups)]
        self.build_layers()
        self.built = True

    def get_config(self):
        """The constructor's arguments as JSON values (tuples as lists), with Keras' own."""
        config = super().get_config()
        config.update(
            input_shape=list(self.image_shape), architecture=self.architecture,
            num_groups=self.num_groups, latent_dim=self.latent_dim, width=self.width,
            residual_blocks=self.residual_blocks, num_resolutions=self.num_resolutions,
            upsampling=self.upsampling, likelihood=self.likelihood,
            mixture_components=self.mixture_components, decoder_std=self.decoder_std,
            beta=self.beta, kl_warmup_steps=self.kl_warmup_steps, free_bits=self.free_bits,
            grad_clip=self.grad_clip, skip_threshold=self.skip_threshold,
            dynamic_binarization=self.dynamic_binarization, seed=self.seed,
            source_backend=self.source_backend,
        )
        return config

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker,
                *self.kl_group_trackers]

    @property
    def params_per_pixel(self):
        """Decoder outputs per pixel (`keras_vae.models.distributions.params_per_pixel`)."""
        return dist.params_per_pixel(self.likelihood, self.image_shape[-1], self.mixture_components)

    @property
    def noise_size(self):
        """Standard normal numbers per example that one draw of every group takes."""
        return sum(math.prod(s) for s in self.group_shapes)

    # === The networks ===

    def build_layers(self):
        """Creates every layer's weights from the shapes alone (no pass over data, which
        under JAX would compile every operation eagerly)."""
        w, d = self.width, self.latent_dim
        if self.architecture == "mlp":
            self.bottom_up_stem.build((None, math.prod(self.image_shape)))
            for layer in [b for blocks in self.bottom_up_blocks + self.top_down_blocks for b in blocks]:
                layer.build((None, w))
            for l in range(self.num_groups):
                self.priors[l].build((None, w))
                self.posteriors[l].build((None, 2 * w))
                self.latent_projections[l].build((None, d))
            self.output_head.build((None, w))
            return
        height, width = self.image_shape[:2]

        def at(level, channels):  # (None, h, w, channels) at a resolution level (0: coarsest)
            scale = 2 ** (self.num_resolutions - level)
            return (None, height // scale, width // scale, channels)

        self.bottom_up_stem.build((None,) + self.image_shape)
        for stage, blocks in enumerate(self.bottom_up_blocks):
            for block in blocks:
                block.build(at(self.num_resolutions - 1 - stage, w))
        for l, level in enumerate(self.group_levels):
            self.priors[l].build(at(level, w))
            self.posteriors[l].build(at(level, 2 * w))
            self.latent_projections[l].build(at(level, d))
            for block in self.top_down_blocks[l]:
                block.build(at(level, w))
        for level, upsampler in enumerate(self.upsamplers):
            upsampler[0].build(at(level, w))
        self.output_head.build(at(self.num_resolutions, w))

    def bottom_up(self, x):
        """Features of x (B, H, W, C) for each group, in top-down order (group 0 first)."""
        conv = self.architecture == "conv"
        h = self.bottom_up_stem(x if conv else ops.reshape(x, (ops.shape(x)[0], -1)))
        stage_features = []
        for blocks in self.bottom_up_blocks:
            if conv:
                h = self.downsample(h)
            for block in blocks:
                h = block(h)
            stage_features.append(h)
        if conv:  # stage s is level num_resolutions − 1 − s (level 0 the coarsest)
            by_level = stage_features[::-1]
            return [by_level[r] for r in self.group_levels]
        return stage_features[::-1]

    def top_down(self, features=None, noise=None, latents=None, temperatures=None):
        """The top-down pass: draws (or takes) every group, returns the decoder output and the groups.

        Args:
            features: `bottom_up(x)` for the posterior, or None for the prior.
            noise: per group, ε (B, *group shape): z = μ + σ·ε (σ of the prior times the
                group's temperature when `features` is None). Entries that are None are drawn
                from the model's seed generator.
            latents: per group, z to use as it is (None entries are drawn); for `decode`.
            temperatures: per group, the prior's σ factor (prior draws only).

        Returns:
            (decoder output (B, H, W, P), list of per-group dicts with "z", "eps",
            "mean_p", "log_var_p", "mean_q", "log_var_q" (the q ones only with features)).
        """
        conv = self.architecture == "conv"
        batch = ops.shape((features or noise or latents)[0])[0]
        start = ops.expand_dims(self.top_down_start, 0)
        h = ops.tile(start, (batch,) + (1,) * (len(self.top_down_start.shape)))
        groups, level = [], 0
        for l in range(self.num_groups):
            if conv:
                while level < self.group_levels[l]:
                    h = self.upsample(h, level)
                    level += 1
            mean_p, log_var_p = self.split_gaussian(self.priors[l](h))
            group = {"mean_p": mean_p, "log_var_p": log_var_p}
            given = None if latents is None else latents[l]
            eps = None if noise is None else noise[l]
            if features is not None:
                delta_mean, delta_log_var = self.split_gaussian(
                    self.posteriors[l](ops.concatenate([h, features[l]], axis=-1)), clip=False)
                mean = mean_p + delta_mean
                log_var = ops.clip(log_var_p + delta_log_var, *Z_LOG_VAR_RANGE)
                group.update(mean_q=mean, log_var_q=log_var)
            else:
                mean, log_var = mean_p, log_var_p
                if temperatures is not None:
                    log_var = log_var + 2.0 * math.log(max(temperatures[l], 1e-30))
            if given is not None:
                z = ops.convert_to_tensor(given, "float32")
            else:
                if eps is None:
                    eps = random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
                z = mean + ops.exp(0.5 * log_var) * eps
            group.update(z=z, eps=eps)
            groups.append(group)
            h = h + self.latent_projections[l](z)
            for block in self.top_down_blocks[l]:
                h = block(h)
        if conv:
            while level < self.num_resolutions:
                h = self.upsample(h, level)
                level += 1
            return self.output_head(ops.silu(h)), groups
        params = self.output_head(h)
        return ops.reshape(params, (-1,) + self.image_shape[:-1] + (self.params_per_pixel,)), groups

    def upsample(self, h, level):
        """Doubles the resolution of the top-down state at `level`."""
        for layer in self.upsamplers[level]:
            h = layer(h)
        return h

    def split_gaussian(self, params, clip=True):
        """(..., 2D) -> μ, log σ² (..., D); log σ² clipped to a finite range unless clip=False."""
        mean, log_var = params[..., : self.latent_dim], params[..., self.latent_dim :]
        return mean, (ops.clip(log_var, *Z_LOG_VAR_RANGE) if clip else log_var)

    # === The likelihood ===

    def log_px_given_params(self, x, params):
        """log p(x|z) in nats: x (B, H, W, C), decoder output (B, H, W, P) -> (B,)."""
        if self.likelihood == "bernoulli":
            return dist.bernoulli_log_prob_from_logits(x, params, 3)
        if self.likelihood == "gaussian":
            log_var = ops.convert_to_tensor(2.0 * math.log(self.decoder_std), "float32")
            return dist.diagonal_gaussian_log_prob(x, params, log_var, 3)
        return dist.discretized_log_prob(self.likelihood, x, params, self.mixture_components)

    def params_to_mean(self, params):
        """Decoder output -> pixel means (B, H, W, C) (`dist.discretized_mean` for 8-bit pixels)."""
        channels = self.image_shape[-1]
        if self.likelihood == "gaussian":
            return params
        if self.likelihood == "bernoulli":
            return ops.sigmoid(params)
        return dist.discretized_mean(self.likelihood, params, channels, self.mixture_components)

    # === The objective, shared by train_step and test_step on every backend ===

    def compute_losses(self, x, training=False, labels=None):
        """Per-example losses in nats for images x (B, H, W, C): a dict of (B,) tensors.

        "loss" (−ELBO with the current β, and in training the free bits),
        "reconstruction_loss" (−log p(x|z), one z from q), "kl_loss" (Σ_l KL_l) and
        "kl_group_l" (KL(q(z_l|x, z_<l) ‖ p(z_l|z_<l)), closed form, at the drawn z_<l).
        With training=True, x is binarized when `dynamic_binarization` is on, β follows
        the warm-up and the step counter advances.
        """
        del labels  # unconditional
        self.check_image_shape(x)
        x = ops.cast(x, "float32")
        if training and self.dynamic_binarization:
            x = ops.cast(random.uniform(ops.shape(x), seed=self.seed_generator) < x, "float32")
        beta = self.current_beta() if training else ops.convert_to_tensor(self.kl_weight)
        if training:
            self.steps_seen.assign_add(1.0)
        params, groups = self.top_down(self.bottom_up(x))
        reconstruction = -self.log_px_given_params(x, params)
        losses = {"reconstruction_loss": reconstruction}
        kl_total, kl_cost = 0.0, 0.0
        for l, group in enumerate(groups):
            kl = dist.sum_over_trailing_axes(
                dist.gaussian_kl(group["mean_q"], group["log_var_q"], group["mean_p"], group["log_var_p"]),
                len(self.group_shapes[l]))  # (B,)
            losses[f"kl_group_{l}"] = kl
            kl_total = kl_total + kl
            if training and self.free_bits > 0:
                kl = ops.where(ops.mean(kl) > self.free_bits, kl, ops.full_like(kl, self.free_bits))
            kl_cost = kl_cost + kl
        losses["kl_loss"] = kl_total
        losses["loss"] = reconstruction + beta * kl_cost
        return losses

    def importance_log_weights(self, x, noise):
        """log p(x, z) − log q(z|x) in nats for z drawn from q with the given noise.

        Args:
            x: (B, H, W, C) images.
            noise: (k, B, noise_size) standard normal ε, the groups' in order, each flattened.

        Returns:
            (k, B) tensor: log p(x|z) + Σ_l [log p(z_l|z_<l) − log q(z_l|x, z_<l)].
        """
        x = ops.convert_to_tensor(x, "float32")
        noise = ops.convert_to_tensor(noise, "float32")
        k, batch = ops.shape(noise)[0], ops.shape(x)[0]
        features = [ops.tile(f, (k,) + (1,) * (len(f.shape) - 1)) for f in self.bottom_up(x)]  # row k·B + b
        eps, offset = [], 0
        for shape in self.group_shapes:
            size = math.prod(shape)
            eps.append(ops.reshape(noise[..., offset : offset + size], (-1,) + shape))
            offset += size
        params, groups = self.top_down(features, noise=eps)
        x_tiled = ops.tile(x, (k, 1, 1, 1))
        log_w = self.log_px_given_params(x_tiled, params)
        for l, group in enumerate(groups):
            axes = len(self.group_shapes[l])
            log_p = dist.diagonal_gaussian_log_prob(group["z"], group["mean_p"], group["log_var_p"], axes)
            # log q from ε itself: z − μ_q = σ_q·ε exactly.
            log_q = dist.sum_over_trailing_axes(
                -0.5 * (dist.LOG_2PI + group["log_var_q"] + ops.square(group["eps"])), axes)
            log_w = log_w + log_p - log_q
        return ops.reshape(log_w, (k, batch))

    # === Keras entry points ===

    def call(self, x, training=False):
        """Reconstruction through the posterior means: (B, H, W, C) pixel means."""
        features = self.bottom_up(ops.cast(x, "float32"))
        params, _ = self.top_down(features, noise=self._zero_noise(ops.shape(x)[0]))
        return self.params_to_mean(params)

    def _zero_noise(self, batch):
        return [ops.zeros((batch,) + s) for s in self.group_shapes]

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        """`keras.Model.fit` on images x (N, H, W, C); no targets."""
        self.source_backend = keras.backend.backend()
        if is_array(x):
            x = self.check_images(x)
        if isinstance(validation_data, (tuple, list)) and is_array(validation_data[0]):
            validation_data = (self.check_images(validation_data[0]),)
        return super().fit(x, y, *args, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if is_array(x):
            x = self.check_images(x)
        return super().evaluate(x, y, *args, **kwargs)

    # === User methods (numpy in, numpy out) ===

    # === Noise space: the interface of the exported graphs (docs/hierarchical.md) ===
    #
    # Every group's z_l = μ_p,l + σ_p,l·ε_l is a function of its standard-normal noise ε_l
    # given the groups above, so the noise of all groups, flattened and concatenated
    # top-down (D = `noise_size` numbers), stands for a point of the whole hierarchy, and its
    # prior is N(0, I). `encode`, `decode`, `sample_latents` and `sample` work in that space,
    # as the single-latent VAE's do in z, and as the exported ONNX files do.

    @property
    def conditional(self):
        """False: the hierarchical model has no class-conditional form."""
        return False

    num_classes = None
    class_names = None

    def prior_parameters(self):
        """None: in noise space the prior is N(0, I)."""
        return None

    def latent_groups(self):
        """The groups as the export contract names them: `keras_vae.core.hierarchy.LatentGroup`s."""
        return tuple(LatentGroup(f"group_{l}", tuple(int(d) for d in shape))
                     for l, shape in enumerate(self.group_shapes))

    def split_noise(self, noise):
        """(B, D) flat noise -> the groups' ε, a list of (B, *group shape) tensors."""
        groups, offset = [], 0
        for shape in self.group_shapes:
            size = math.prod(shape)
            groups.append(ops.reshape(noise[:, offset : offset + size], (-1,) + shape))
            offset += size
        return groups

    def noise_to_mean(self, noise):
        """Pixel means of the prior's top-down chain driven by `noise` (B, D): (B, H, W, C)."""
        params, _ = self.top_down(noise=self.split_noise(ops.convert_to_tensor(noise, "float32")))
        return self.params_to_mean(params)

    def posterior_noise(self, x):
        """q(z|x) in noise space: (mean, log variance), each (B, D).

        With the groups above at their posterior means, group l's mean is
        (μ_q,l − μ_p,l)/σ_p,l and its log variance log(σ_q,l²/σ_p,l²), so that the decoder fed
        the mean gives the reconstruction from the posterior means.
        """
        x = ops.convert_to_tensor(x, "float32")
        _, groups = self.top_down(self.bottom_up(x), noise=self._zero_noise(ops.shape(x)[0]))
        means, log_vars = [], []
        for group, shape in zip(groups, self.group_shapes):
            flat = (-1, math.prod(shape))
            means.append(ops.reshape((group["mean_q"] - group["mean_p"])
                                     * ops.exp(-0.5 * group["log_var_p"]), flat))
            log_vars.append(ops.reshape(group["log_var_q"] - group["log_var_p"], flat))
        return ops.concatenate(means, axis=-1), ops.concatenate(log_vars, axis=-1)

    def flat_log_weights(self, x, epsilon):
        """log p(x, z) − log q(z|x) for rows of images x (M, H, W, C) and noise epsilon (M, D): (M,)."""
        return ops.reshape(self.importance_log_weights(x, ops.expand_dims(epsilon, 0)), (-1,))

    def numpy_log_weights(self, x, epsilon):
        """`flat_log_weights` on NumPy arrays, returning NumPy (jit-compiled once under JAX)."""
        if getattr(self, "_compiled_log_weights", None) is None:
            self._compiled_log_weights = self.compiled_for_inference(self.flat_log_weights)
        return ops.convert_to_numpy(self._compiled_log_weights(
            ops.convert_to_tensor(np.asarray(x, "float32")),
            ops.convert_to_tensor(np.asarray(epsilon, "float32"))))

    def encode(self, x, batch_size=256, labels=None):
        """q(z|x) in noise space (`posterior_noise`): (z_mean, z_log_var), each (N, D) numpy."""
        del labels  # unconditional
        x = self.check_images(x)
        parts = [[ops.convert_to_numpy(v) for v in self.posterior_noise(x[start : start + batch_size])]
                 for start in range(0, len(x), batch_size)]
        if not parts:
            empty = np.zeros((0, self.noise_size), "float32")
            return empty, empty
        return tuple(np.concatenate([part[i] for part in parts]) for i in range(2))

    def decode(self, z, batch_size=256, labels=None):
        """Pixel means for noise z (N, D) (`noise_to_mean`): (N, H, W, C) numpy."""
        del labels  # unconditional
        z = np.asarray(z, dtype="float32")
        if z.ndim != 2 or z.shape[1] != self.noise_size:
            raise ValueError(f"Expected noise of shape (batch, {self.noise_size}): the groups "
                             f"{self.group_shapes}, flattened and concatenated; got {z.shape}.")
        outputs = [ops.convert_to_numpy(self.noise_to_mean(z[start : start + batch_size]))
                   for start in range(0, len(z), batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0,) + self.image_shape, "float32")

    def sample_latents(self, n, seed=None, temperature=1.0):
        """n noise vectors T·ε (n, D) float32: `keras_vae.core.hierarchy.draw_noise`, which the
        server shares, so the same seed gives the same images in Keras and over HTTP.

        `temperature` scales the prior σ of every group (a float in [0, 10]) or of each
        group (a sequence of L floats).
        """
        if np.ndim(temperature) == 0:
            return draw_noise(n, self.latent_groups(), seed, temperature)
        return draw_noise(n, self.latent_groups(), seed, 1.0, list(temperature))

    def sample(self, n, seed=None, temperature=1.0, labels=None, batch_size=256):
        """n images: every group drawn from its prior (`sample_latents`), decoded to pixel means.

        Returns (n, H, W, C) numpy.
        """
        del labels  # unconditional
        return self.decode(self.sample_latents(n, seed, temperature), batch_size=batch_size)

    def reconstruct(self, x, batch_size=256, labels=None):
        """Decodes the posterior means: (N, H, W, C) -> (N, H, W, C) numpy."""
        return self.decode(self.encode(x, batch_size=batch_size)[0], batch_size=batch_size)

    def encode_groups(self, x, batch_size=256):
        """Posterior means of every group, each taken given the means of the groups above:
        a list of L numpy arrays, group l of shape (N, *group shape l)."""
        x = self.check_images(x)
        chunks = []
        for start in range(0, len(x), batch_size):
            batch = ops.convert_to_tensor(x[start : start + batch_size])
            _, groups = self.top_down(self.bottom_up(batch), noise=self._zero_noise(len(batch)))
            chunks.append([ops.convert_to_numpy(g["mean_q"]) for g in groups])
        return [np.concatenate([c[l] for c in chunks]) if chunks
                else np.zeros((0,) + s, "float32") for l, s in enumerate(self.group_shapes)]

    def decode_groups(self, latents, batch_size=256):
        """Pixel means of p(x|z) for given latents: a list of L arrays (N, *group shape) -> (N, H, W, C)."""
        latents = [np.asarray(z, dtype="float32") for z in latents]
        if len(latents) != self.num_groups or any(
                z.shape[1:] != s or len(z) != len(latents[0]) for z, s in zip(latents, self.group_shapes)):
            raise ValueError(f"Expected {self.num_groups} latent arrays of shapes (N, *shape) with "
                             f"shapes {self.group_shapes}, got {[z.shape for z in latents]}.")
        outputs = []
        for start in range(0, len(latents[0]), batch_size):
            params, _ = self.top_down(latents=[ops.convert_to_tensor(z[start : start + batch_size])
                                               for z in latents])
            outputs.append(ops.convert_to_numpy(self.params_to_mean(params)))
        return np.concatenate(outputs) if outputs else np.zeros((0,) + self.image_shape, "float32")

    def log_likelihood(self, x, y=None, num_samples=1000, batch_size=100, samples_per_chunk=None,
                       seed=0, verbose=False):
        """Importance-sampled estimate of log p(x) per example, in nats, over the whole hierarchy.

        log p(x) ≈ log (1/K) Σ_k p(x|z_k) Π_l p(z_kl|z_k,<l) / q(z_kl|x, z_k,<l), with every
        group of z_k drawn from q in turn (K = num_samples). The estimator is
        `keras_vae.core.hierarchy.log_likelihood`, which scoring the exported log-weight graph
        shares: image i's noise depends only on `seed` and i, so the result depends neither
        on the chunking nor on the backend, and equals onnxruntime's on the same seed.
        `y` must be None (the model is unconditional).

        Returns:
            (N,) float64 numpy array.
        """
        if y is not None:
            raise ValueError("the hierarchical model is unconditional: it takes no labels")
        x = self.check_images(x)
        progress = keras.utils.Progbar(len(x), unit_name="image") if verbose else None
        return hierarchy.log_likelihood(
            x, self.numpy_log_weights, self.noise_size, num_samples=num_samples,
            batch_size=batch_size, samples_per_chunk=samples_per_chunk, seed=seed,
            progress=None if progress is None else progress.add)

    def compiled_for_inference(self, function):
        """`function` of arrays, jit-compiled as one graph under JAX (where running it op by op
        compiles every operation on its first call); unchanged on the other backends."""
        if keras.backend.backend() != "jax":
            return function
        import jax

        variables = self.variables

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function(*args)

        jitted = jax.jit(stateless)
        return lambda *args: jitted([v.value for v in variables], *args)


def group_levels(num_groups, num_resolutions):
    """The resolution level (0: coarsest) of each group: evenly spread, the extra ones at the top."""
    per_level, extra = divmod(num_groups, num_resolutions)
    levels = []
    for r in range(num_resolutions):
        levels += [r] * (per_level + (1 if r < extra else 0))
    return levels


def check_options(input_shape, architecture, num_groups, latent_dim, width, residual_blocks,
                  num_resolutions, upsampling, likelihood, mixture_components, decoder_std, beta,
                  kl_warmup_steps, free_bits, grad_clip, skip_threshold):
    """Raises a one-line ValueError naming the first option that cannot work."""
    def integer(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    def number(value):
        return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)

    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    for name, value, minimum in [("num_groups", num_groups, 1), ("latent_dim", latent_dim, 1),
                                 ("width", width, 1), ("residual_blocks", residual_blocks, 0),
                                 ("num_resolutions", num_resolutions, 1),
                                 ("mixture_components", mixture_components, 1),
                                 ("kl_warmup_steps", kl_warmup_steps, 0)]:
        if not integer(value) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if architecture == "conv":
        scale = 2 ** num_resolutions
        if input_shape[0] % scale or input_shape[1] % scale:
            raise ValueError(
                f"num_resolutions={num_resolutions} needs height and width divisible by {scale}, "
                f"got input_shape={input_shape}")
        if num_groups < num_resolutions:
            raise ValueError(f"num_groups must be >= num_resolutions ({num_resolutions}) with "
                             f"architecture='conv', got {num_groups}")
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {upsampling!r}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    for name, value in [("decoder_std", decoder_std), ("grad_clip", grad_clip),
                        ("skip_threshold", skip_threshold)]:
        if value is not None and (not number(value) or not value > 0 or not math.isfinite(value)):
            raise ValueError(f"{name} must be a positive number{'' if name == 'decoder_std' else ' or None'}"
                             f", got {value!r}")
    for name, value in [("beta", beta), ("free_bits", free_bits)]:
        if not number(value) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
