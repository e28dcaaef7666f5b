"""`VAE`: a variational autoencoder that trains with `model.fit` on any Keras backend."""

import math

import numpy as np

import keras
from keras import ops
from keras import random

from keras_vae.models import conditioning
from keras_vae.models import distributions as dist
from keras_vae.models.networks import build_decoder
from keras_vae.models.networks import build_encoder
from keras_vae.models.networks import Z_LOG_VAR_RANGE
from keras_vae.models.networks import check_architecture
from keras_vae.models.networks import default_conv_filters
from keras_vae.models.options import OBJECTIVES  # noqa: F401
from keras_vae.models.options import OPTION_NAMES
from keras_vae.models.options import PRIORS  # noqa: F401
from keras_vae.models.options import ModelOptions
from keras_vae.models.options import with_options_saved_before
from keras_vae.models.base import FamilyModel
from keras_vae.models.base import is_array
from keras_vae.core import contract
from keras_vae.core import likelihood

IMAGE_EVENT_AXES = 3  # (H, W, C): log p(x|z) sums over these.

# log σ² of a learned Gaussian decoder is clipped to this range: on data with
# pixels that never vary, an unclipped variance collapses and the likelihood
# grows without bound.
DECODER_LOG_VAR_RANGE = (-7.0, 7.0)
# The initial value of the per-pixel log-scale of a discretized logistic decoder with
# logistic_scale="pixel" (pixels on the [0, 1] scale; clipped to dist.LOG_SCALE_RANGE).
DECODER_LOG_SCALE_INITIAL = math.log(0.1)


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(FamilyModel):
    """Variational autoencoder with a custom, backend-native `train_step`.

    q(z|x) = N(μ(x), diag σ²(x)), p(z) = N(0, I) (or a learned mixture of
    Gaussians), and p(x|z) Bernoulli (the decoder emits logits; data in [0, 1]),
    Gaussian, or, over the 256 levels of 8-bit pixels (data k/255 in [0, 1]), a
    discretized logistic or a mixture of them. Training minimises the negative
    ELBO, or the negative importance-weighted bound (`objective="iwae"`), with
    z drawn by reparameterization. Losses are reported in nats per example.

    The arguments between `input_shape` and `seed` are the model's options,
    declared in `keras_vae.models.options.ModelOptions` with their defaults and the
    values they take; each is kept as an attribute of the same name
    (`vae.latent_dim`, `vae.beta`, ...) and returned by `get_config`.

    Args:
        input_shape: image shape (height, width, channels).
        latent_dim: number of latent dimensions D.
        architecture: "mlp" or "conv".
        hidden_units: widths of the MLP's hidden layers (encoder order; the
            decoder mirrors them).
        gated: MLP only: gated dense hidden layers, (W h + b) ⊙ sigmoid(V h + c),
            in place of ReLU ones (twice the weights per layer).
        conv_filters: filters of the conv encoder's stride-2 layers (the decoder
            mirrors them); height and width must divide by 2**len(conv_filters).
            Empty (the default): the depth follows the image size
            (`keras_vae.models.networks.default_conv_filters`: (32, 64) for 8×8 to 32×32
            images, one more layer per doubling beyond); the model keeps and
            saves the filters it chose.
        conv_upsampling: how the conv decoder doubles the resolution: "transpose"
            (stride-2 transposed convolutions) or "subpixel" (a convolution to 4×
            the channels, then depth-to-space; several times faster to train on
            JAX and torch CPUs).
        conv_residual_blocks: residual blocks, relu(h + conv(relu(conv(h)))), after
            each stride-2 convolution of the encoder and each upsampling of the
            decoder, at that resolution and width (0: none; conv only).
        likelihood: "bernoulli", "gaussian", "discretized_logistic" or
            "logistic_mixture". The last two are for 8-bit pixels (k/255): a probability
            for each of the 256 levels, so that the log-likelihood is a true one
            (bits/dim comparable with the literature's on 8-bit images).
            "discretized_logistic": a logistic of location sigmoid(decoder output) and a
            log-scale chosen by `logistic_scale`. "logistic_mixture": a mixture of
            `mixture_components` discretized logistics per pixel whose channel means are
            coupled, μ_c = m_c + Σ_{j<c} tanh(α_cj)·x_j (PixelCNN++), every parameter a
            decoder output. The family shares their math
            (`keras_vae.models.distributions.discretized_log_prob`).
        logistic_scale: for "discretized_logistic": "decoder" (the default), the
            log-scale of every pixel and channel is a decoder output, a function of z,
            as in the hierarchical model; or "pixel", one learned log-scale per pixel and
            channel, the same for every z. A model saved before this option existed has
            "pixel", and loads with it.
        mixture_components: M, the components per pixel of "logistic_mixture".
        decoder_std: for a Gaussian decoder, a fixed σ (float) or "learned"
            (a trainable per-pixel log-variance).
        beta: weight of the KL term (1.0 gives the true ELBO).
        kl_warmup_steps: β rises linearly from 0 to `beta` over this many
            training steps (0: no warm-up).
        num_samples: K samples of z per example in each training step.
        objective: "elbo" (K-sample average) or "iwae" (log-mean-exp over K).
        sticking_the_landing: for "iwae", evaluate log q(z|x) with μ and σ held
            constant, dropping the score-function term of the encoder's gradient
            (Roeder et al. 2017); lowers gradient variance. The loss value is
            unchanged. With K > 1 the encoder's gradient is then biased: the
            dropped term does not vanish in expectation for the IWAE bound
            (Tucker et al. 2019, whose DReG estimator is unbiased).
        prior: "standard" for p(z) = N(0, I), or "mixture" for a learned mixture
            of `prior_components` diagonal Gaussians (means, variances and
            weights trained with the rest of the model). With a mixture the KL
            term has no closed form; it is estimated from the K samples of z.
        prior_components: number of mixture components C.
        dynamic_binarization: if true, each training step draws x ~ Bernoulli(x).
        seed: seed of the noise ε (and of dynamic binarization).
        source_backend: the Keras backend the model was last trained on. Set by
            `fit` and saved with the model, so that an exported graph can name
            it; leave it unset.
        num_classes: None for an unconditional VAE; an integer C for a
            class-conditional one (`keras_vae.models.conditioning`): the encoder is
            q(z|x, y) and the decoder p(x|z, y), each given the label y in
            0..C-1 as a one-hot vector, and `fit(x, y)` takes integer labels.
            The prior stays p(z), shared by the classes.
        class_names: with `num_classes`, a name for each class (default "0", "1", ...).

    Example:

    ```python
    vae = keras_vae.VAE(input_shape=(28, 28, 1), latent_dim=16)
    vae.compile(optimizer="adam")
    vae.fit(x_train, epochs=10, validation_data=(x_test,))
    images = vae.sample(16, seed=0)  # (16, 28, 28, 1) numpy, pixel means
    ```
    """

    # The options of `keras_vae.models.options.ModelOptions`, between input_shape and seed,
    # in its order and with its defaults (tests/models/test_options.py checks both).
    def __init__(
        self,
        input_shape=(28, 28, 1),
        latent_dim=ModelOptions.latent_dim,
        architecture=ModelOptions.architecture,
        hidden_units=ModelOptions.hidden_units,
        gated=ModelOptions.gated,
        conv_filters=ModelOptions.conv_filters,
        conv_upsampling=ModelOptions.conv_upsampling,
        conv_residual_blocks=ModelOptions.conv_residual_blocks,
        likelihood=ModelOptions.likelihood,
        logistic_scale=ModelOptions.logistic_scale,
        mixture_components=ModelOptions.mixture_components,
        decoder_std=ModelOptions.decoder_std,
        beta=ModelOptions.beta,
        kl_warmup_steps=ModelOptions.kl_warmup_steps,
        num_samples=ModelOptions.num_samples,
        objective=ModelOptions.objective,
        sticking_the_landing=ModelOptions.sticking_the_landing,
        prior=ModelOptions.prior,
        prior_components=ModelOptions.prior_components,
        dynamic_binarization=ModelOptions.dynamic_binarization,
        seed=None,
        source_backend=None,
        num_classes=None,
        class_names=None,
        **kwargs,
    ):
        arguments = locals()
        # Converted to their types and checked (ValueError); every option is kept below
        # as an attribute of its name (self.latent_dim, ...) and returned by get_config.
        options = ModelOptions(**{name: arguments[name] for name in OPTION_NAMES})
        input_shape = tuple(int(d) for d in input_shape)
        options.conv_filters = options.conv_filters or default_conv_filters(input_shape)
        check_architecture(input_shape, options.architecture, options.conv_filters, options.gated)
        num_classes, class_names = conditioning.check_classes(num_classes, class_names)
        super().__init__(**kwargs)

        # === Layers ===
        latent_dim = options.latent_dim
        networks = dict(architecture=options.architecture, hidden_units=options.hidden_units,
                        conv_filters=options.conv_filters, gated=options.gated,
                        num_classes=num_classes, conv_residual_blocks=options.conv_residual_blocks)
        self.encoder = build_encoder(input_shape, latent_dim, **networks)
        self.image_shape = input_shape
        self.likelihood, self.logistic_scale = options.likelihood, options.logistic_scale
        self.mixture_components = options.mixture_components
        self.decoder = build_decoder(input_shape, latent_dim, conv_upsampling=options.conv_upsampling,
                                     params_per_pixel=self.params_per_pixel, **networks)
        if options.likelihood == "gaussian" and options.decoder_std == "learned":
            self.decoder_log_var = self.add_weight(
                shape=input_shape, initializer="zeros", name="decoder_log_var"
            )
        else:
            self.decoder_log_var = None
        if options.likelihood == "discretized_logistic" and options.logistic_scale == "pixel":
            self.decoder_log_scale = self.add_weight(
                shape=input_shape, name="decoder_log_scale",
                initializer=keras.initializers.Constant(DECODER_LOG_SCALE_INITIAL),
            )
        else:
            self.decoder_log_scale = None
        if options.prior == "mixture":
            # Component means start spread like N(0, I) draws, so they cover the
            # standard prior's mass; variances start at 1 and weights equal.
            self.prior_means = self.add_weight(
                shape=(options.prior_components, latent_dim),
                initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed),
                name="prior_means",
            )
            self.prior_log_vars = self.add_weight(
                shape=(options.prior_components, latent_dim), initializer="zeros",
                name="prior_log_vars",
            )
            self.prior_logits = self.add_weight(
                shape=(options.prior_components,), initializer="zeros", name="prior_logits"
            )

        # === State that changes during training (variables, so jit sees it) ===
        # The KL weight β as a variable (the option's value is `self.beta`).
        self.kl_weight = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(options.beta), trainable=False,
            name="beta",
        )
        self.steps_seen = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="steps_seen"
        )
        self.seed_generator = random.SeedGenerator(seed, name="noise_seed")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.built = True

        # === Config ===
        for name, value in options.model_kwargs().items():
            setattr(self, name, value)
        self.seed = seed
        self.source_backend = source_backend
        self.num_classes = num_classes
        self.class_names = class_names

    @classmethod
    def from_config(cls, config):
        """The model of a `get_config` dict; a file saved before an option existed loads with
        the value it was trained with (`keras_vae.models.options.with_options_saved_before`)."""
        return super().from_config(with_options_saved_before(config))

    def get_config(self):
        """The constructor's arguments as JSON values (tuples as lists), with Keras' own."""
        config = super().get_config()
        config["input_shape"] = list(self.image_shape)
        for name in OPTION_NAMES:
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        config.update(seed=self.seed, source_backend=self.source_backend)
        # None for an unconditional model; a .keras file saved without these keys loads as one.
        config.update(num_classes=self.num_classes,
                      class_names=None if self.class_names is None else list(self.class_names))
        return config

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    @property
    def conditional(self):
        """True for a class-conditional VAE (`num_classes` set)."""
        return self.num_classes is not None

    def with_labels(self, inputs, labels):
        """The input of the encoder or decoder: `inputs`, or [inputs, labels] when conditional."""
        return [inputs, labels] if self.conditional else inputs

    def call(self, x, training=False):
        """Reconstruction from the posterior mean: (B, H, W, C) pixel means.

        A conditional model takes `[x, labels]`.
        """
        x, labels = conditioning.split_inputs(self, x)
        z_mean, _ = self.encoder(self.with_labels(x, labels), training=training)
        return self.decoder_output_to_mean(
            self.decoder(self.with_labels(z_mean, labels), training=training))

    # === The objective, shared by train_step and test_step on every backend ===

    def compute_losses(self, x, training=False, labels=None):
        """Per-example losses in nats for a batch of images x (B, H, W, C).

        A conditional model needs `labels` (B,) ints: the losses are then those of
        log p(x|y) (the encoder and decoder see y; the prior is p(z)).

        Returns a dict of (B,) tensors:
            "loss": the objective, −ELBO (or −IWAE bound) with the current β;
            "reconstruction_loss": −E_q[log p(x|z)], averaged over the K samples;
            "kl_loss": KL(q(z|x) ‖ p(z)): in closed form for the standard
                prior, else the average of log q(z|x) − log p(z) over the K samples.

        With training=True, x is binarized when `dynamic_binarization` is on,
        β follows the warm-up, and the warm-up step counter advances.
        """
        self.check_image_shape(x)
        labels = conditioning.check_batch_labels(self, labels)
        x = ops.cast(x, "float32")
        if training and self.dynamic_binarization:
            x = ops.cast(random.uniform(ops.shape(x), seed=self.seed_generator) < x, "float32")
        beta = self.current_beta() if training else ops.convert_to_tensor(self.kl_weight)
        if training:
            self.steps_seen.assign_add(1.0)

        z_mean, z_log_var = self.encoder(self.with_labels(x, labels), training=training)
        z = dist.reparameterize(z_mean, z_log_var, self.seed_generator, self.num_samples)
        log_px_z = self.log_px_given_z(x, z, training=training, labels=labels)  # (K, B)
        reconstruction = -ops.mean(log_px_z, axis=0)  # (B,)
        # (K, B): log p(z) − log q(z|x), needed unless the loss is the closed-form ELBO.
        log_prior_ratio = None
        if self.objective == "iwae" or self.prior != "standard":
            q_mean, q_log_var = z_mean, z_log_var
            if training and self.sticking_the_landing and self.objective == "iwae":
                q_mean, q_log_var = ops.stop_gradient(z_mean), ops.stop_gradient(z_log_var)
            log_prior_ratio = self.log_prior(z) - dist.diagonal_gaussian_log_prob(z, q_mean, q_log_var)
        if self.prior == "standard":
            kl = dist.gaussian_kl_to_standard_normal(z_mean, z_log_var)  # (B,)
        else:
            kl = -ops.mean(log_prior_ratio, axis=0)  # (B,)
        if self.objective == "elbo":
            loss = reconstruction + beta * kl
        else:
            # −log (1/K) Σ_k w_k, the negative IWAE bound.
            log_weights = log_px_z + beta * log_prior_ratio  # (K, B)
            loss = math.log(self.num_samples) - ops.logsumexp(log_weights, axis=0)
        return {"loss": loss, "reconstruction_loss": reconstruction, "kl_loss": kl}

    def log_prior(self, z):
        """log p(z) in nats: z (..., D) -> (...)."""
        if self.prior == "standard":
            return dist.standard_normal_log_prob(z)
        return dist.gaussian_mixture_log_prob(
            z, self.prior_means, self.prior_log_vars_clipped(), self.prior_logits
        )

    def prior_log_vars_clipped(self):
        """log σ² of the mixture prior's components, (C, D), kept in a finite range."""
        return ops.clip(self.prior_log_vars, *Z_LOG_VAR_RANGE)

    def prior_parameters(self):
        """The mixture prior as a `keras_vae.core.contract.MixturePrior` (float64 numpy), or None for N(0, I).

        The values are the float32 weights widened, as a sampler reading the
        exported float32 metadata sees them.
        """
        if self.prior == "standard":
            return None
        weights, means, log_vars = (
            ops.convert_to_numpy(v).astype("float64")
            for v in (ops.softmax(self.prior_logits), self.prior_means, self.prior_log_vars_clipped())
        )
        return contract.MixturePrior(weights / weights.sum(), means, log_vars)

    def log_px_given_z(self, x, z, training=False, labels=None):
        """log p(x|z) (or log p(x|z, y), labels (B,)) in nats: x (B, H, W, C), z (K, B, D) -> (K, B)."""
        flat_z = ops.reshape(z, (-1, self.latent_dim))  # row k·B + b is z[k, b]
        if self.conditional:
            labels = ops.tile(ops.reshape(labels, (-1,)), (ops.shape(z)[0],))
        params = self.decoder(self.with_labels(flat_z, labels), training=training)  # (K·B, H, W, P)
        params = ops.reshape(params, (ops.shape(z)[0], -1) + tuple(ops.shape(params)[1:]))
        if self.likelihood == "bernoulli":
            return dist.bernoulli_log_prob_from_logits(x, params, IMAGE_EVENT_AXES)
        if self.decoder_log_scale is not None:
            return dist.discretized_logistic_log_prob(
                x, ops.sigmoid(params), self.decoder_log_scale_clipped(), IMAGE_EVENT_AXES)
        if self.params_output:
            return dist.discretized_log_prob(self.likelihood, x, params, self.mixture_components,
                                             IMAGE_EVENT_AXES)
        return dist.diagonal_gaussian_log_prob(x, params, self.decoder_log_variance(), IMAGE_EVENT_AXES)

    @property
    def params_per_pixel(self):
        """P, the decoder network's outputs per pixel: C, or for a discretized logistic with the
        decoder's scale 2C, for the mixture M(1 + 2C + C(C−1)/2)."""
        channels = self.image_shape[-1]
        if self.likelihood == "discretized_logistic" and self.logistic_scale == "pixel":
            return channels
        return dist.params_per_pixel(self.likelihood, channels, self.mixture_components)

    @property
    def params_output(self):
        """True when every parameter of p(x|z) is a decoder output (the discretized logistic with
        the decoder's scale, and the mixture): the export then writes them as `x_params`."""
        return (self.likelihood == "logistic_mixture"
                or (self.likelihood == "discretized_logistic" and self.logistic_scale == "decoder"))

    def decoder_output_to_params(self, params):
        """The parameters of p(x|z) from the decoder output, laid out as it (B, H, W, P)
        (`keras_vae.models.distributions.distribution_parameters`); only when `params_output`."""
        return dist.distribution_parameters(self.likelihood, params, self.image_shape[-1],
                                            self.mixture_components)

    def decoder_log_variance(self):
        """log σ² of the Gaussian decoder: (H, W, C) if learned, else a scalar."""
        if self.decoder_log_var is not None:
            return ops.clip(self.decoder_log_var, *DECODER_LOG_VAR_RANGE)
        return ops.convert_to_tensor(2.0 * np.log(self.decoder_std), "float32")

    def decoder_log_scale_clipped(self):
        """log s of a discretized logistic decoder with logistic_scale="pixel", (H, W, C), on the
        [0, 1] pixel scale."""
        return ops.clip(self.decoder_log_scale, *dist.LOG_SCALE_RANGE)

    def decoder_output_to_mean(self, params):
        """Maps decoder output to pixels: sigmoid(logits) (Bernoulli), the location μ = sigmoid(output)
        in [0, 1] (discretized logistic; its median where μ is inside the bins), the mixture's mean
        clipped to [0, 1] (`dist.logistic_mixture_mean`), or the Gaussian mean."""
        if self.likelihood == "gaussian":
            return params
        if self.params_output:
            return dist.discretized_mean(self.likelihood, params, self.image_shape[-1],
                                         self.mixture_components)
        return ops.sigmoid(params)

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        """`keras.Model.fit`; a conditional model takes the class labels as y: fit(x, y)."""
        self.source_backend = keras.backend.backend()
        if is_array(x):
            x = self.check_images(x)
            y = conditioning.check_fit_labels(self, y, len(x))
        if isinstance(validation_data, (tuple, list)) and is_array(validation_data[0]):
            val_x = self.check_images(validation_data[0])
            val_y = validation_data[1] if len(validation_data) > 1 else None
            val_y = conditioning.check_fit_labels(self, val_y, len(val_x), "validation_data")
            validation_data = (val_x,) if val_y is None else (val_x, val_y)
        return super().fit(x, y, *args, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if is_array(x):
            x = self.check_images(x)
            y = conditioning.check_fit_labels(self, y, len(x))
        return super().evaluate(x, y, *args, **kwargs)

    # === User methods (numpy in, numpy out) ===

    def encode(self, x, batch_size=256, labels=None):
        """Parameters of q(z|x) (q(z|x, y) with labels): returns (z_mean, z_log_var), each (N, D) numpy.

        `labels`: a conditional model's classes, an int or (N,) ints in 0..num_classes-1.
        """
        x = self.check_images(x)
        labels = conditioning.labels_for(self, labels, len(x))
        z_mean, z_log_var = self.encoder.predict(self.with_labels(x, labels), batch_size=batch_size,
                                                 verbose=0)
        return z_mean, z_log_var

    def decode(self, z, batch_size=256, labels=None):
        """Pixel means of p(x|z) (p(x|z, y) with labels) for z (N, D): (N, H, W, C) numpy.

        `labels`: a conditional model's classes, an int or (N,) ints in 0..num_classes-1.
        """
        return ops.convert_to_numpy(self.decoder_output_to_mean(self._decoder_params(z, batch_size, labels)))

    def decoder_logits(self, z, batch_size=256, labels=None):
        """The logits of a Bernoulli decoder for z (N, D): (N, H, W, C) numpy, sigmoid of `decode`.

        `labels`: a conditional model's classes, as `decode`.
        """
        if self.likelihood != "bernoulli":
            raise ValueError(f"only a Bernoulli decoder has logits; this one is {self.likelihood}")
        return ops.convert_to_numpy(self._decoder_params(z, batch_size, labels))

    def decoder_distribution_params(self, z, batch_size=256, labels=None):
        """The parameters of p(x|z) for z (N, D), when they are all decoder outputs
        (`params_output`): (N, H, W, P) numpy, as the exported decoder's `x_params`.

        `labels`: a conditional model's classes, as `decode`.
        """
        if not self.params_output:
            raise ValueError("only a discretized logistic decoder with logistic_scale='decoder' and "
                             f"a logistic mixture output their parameters; this one is {self.likelihood}")
        params = self._decoder_params(z, batch_size, labels)
        return ops.convert_to_numpy(self.decoder_output_to_params(ops.convert_to_tensor(params)))

    def _decoder_params(self, z, batch_size, labels):
        """The decoder network's raw output for z (N, D) (logits, locations or means)."""
        z = np.asarray(z, dtype="float32")
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"Expected z of shape (batch, {self.latent_dim}), got {z.shape}.")
        labels = conditioning.labels_for(self, labels, len(z))
        return self.decoder.predict(self.with_labels(z, labels), batch_size=batch_size, verbose=0)

    def sample_latents(self, n, seed=None, temperature=1.0):
        """n draws of z from the prior, spread scaled by T (0 ≤ T ≤ 10): (n, D) float32.

        Standard prior: z ~ N(0, T²·I). Mixture: pick component c by its
        weight, then z ~ N(μ_c, T²·σ_c²). The draws are `keras_vae.core.contract.draw_latents`,
        so serving's `Sampler.latents` gives the same z for the same seed.
        """
        return contract.draw_latents(n, self.latent_dim, self.prior_parameters(), seed, temperature)

    def sample(self, n, seed=None, temperature=1.0, labels=None):
        """n images from the model: z from the prior (`sample_latents`), decoded to pixel means.

        A conditional model needs `labels`: one class (int) for all n images, or (n,) ints;
        the same seed gives the same z whatever the labels.
        """
        return self.decode(self.sample_latents(n, seed, temperature), labels=labels)

    def reconstruct(self, x, labels=None):
        """Decodes the posterior mean of each image: (N, H, W, C) -> (N, H, W, C) numpy."""
        z_mean, _ = self.encode(x, labels=labels)
        return self.decode(z_mean, labels=labels)

    def numpy_functions(self):
        """The model as the NumPy functions that `keras_vae.core.likelihood` and
        `keras_vae.core.anomaly.score_images` take: (encode, log_px_given_z, decode_mean).

        encode: x (B, H, W, C) -> (z_mean, z_log_var), each (B, D); log_px_given_z:
        (x (B, H, W, C), z (K, B, D)) -> log p(x|z) (K, B); decode_mean: z (B, D) -> pixel
        means (B, H, W, C). A conditional model's functions take the batch's labels (B,) last.
        """
        def encode(x_batch, y_batch=None):
            z_mean, z_log_var = self.encoder(
                self.with_labels(ops.convert_to_tensor(x_batch), _tensor_or_none(y_batch)), training=False)
            return ops.convert_to_numpy(z_mean), ops.convert_to_numpy(z_log_var)

        def log_px_given_z(x_batch, z, y_batch=None):
            log_px = self.log_px_given_z(ops.convert_to_tensor(x_batch), ops.convert_to_tensor(z),
                                         labels=_tensor_or_none(y_batch))
            return ops.convert_to_numpy(log_px)

        def decode_mean(z, y_batch=None):
            params = self.decoder(self.with_labels(ops.convert_to_tensor(z), _tensor_or_none(y_batch)),
                                  training=False)
            return ops.convert_to_numpy(self.decoder_output_to_mean(params))

        return encode, log_px_given_z, decode_mean

    def log_likelihood(self, x, y=None, num_samples=1000, batch_size=100, samples_per_chunk=None,
                       seed=0, verbose=False):
        """Importance-sampled estimate of log p(x), per example, in nats (log p(x|y) given labels y).

        log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x)
        (the IWAE bound with K = num_samples; it tightens as K grows). Images
        go `batch_size` at a time and samples `samples_per_chunk` at a time, so
        memory stays bounded for any K. The estimator is `keras_vae.core.likelihood`'s,
        which the server's scoring shares: each image's noise depends only on
        `seed` and its index, so the result does not depend on the chunking,
        and is the same on every backend.

        Returns:
            (N,) float64 numpy array.
        """
        x = self.check_images(x)
        y = conditioning.labels_for(self, y, len(x))
        progress = keras.utils.Progbar(len(x), unit_name="image") if verbose else None
        encode, log_px_given_z, _ = self.numpy_functions()
        return likelihood.log_likelihood(
            x, encode, log_px_given_z, self.prior_parameters(), num_samples=num_samples,
            batch_size=batch_size, samples_per_chunk=samples_per_chunk, seed=seed,
            progress=None if progress is None else progress.add, labels=y,
        )


def _tensor_or_none(values):
    return None if values is None else ops.convert_to_tensor(values)


# The family registers with Keras together: importing one model module (as `import keras_vae`
# does once Keras is imported) makes every model class loadable by keras.models.load_model.
from keras_vae.models import hierarchical  # noqa: E402, F401
