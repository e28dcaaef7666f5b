"""The model's options, declared once: `ModelOptions`.

Each field of `ModelOptions` is one option of the model, with its default, its
help text and the values it accepts. Everything else follows from it:

* `keras_vae.VAE` takes each option as a keyword argument of the same name,
  keeps it as an attribute of that name and returns it from `get_config`;
* `keras_vae.training.TrainConfig` extends `ModelOptions` with the training
  options, so a run's config.json holds every model option;
* `keras-vae train` has one flag per option (`latent_dim` -> `--latent-dim`),
  with the declared default, help text and choices.

Adding an option is one field here; `keras_vae.VAE` then needs the keyword
argument (its signature lists the options explicitly, for readers and IDEs), a
line in its docstring, and the code that uses the option. tests/models/test_options.py
fails until the keyword and the docstring line are there.

This module imports neither Keras nor NumPy, so the command line can read it
before it chooses a Keras backend.
"""

import dataclasses

from keras_vae.core.options import OptionError
from keras_vae.core.options import checked_value
from keras_vae.core.options import option


ARCHITECTURES = ("mlp", "conv")


CONV_UPSAMPLINGS = ("transpose", "subpixel")


LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic")


OBJECTIVES = ("elbo", "iwae")


PRIORS = ("standard", "mixture")


@dataclasses.dataclass
class ModelOptions:
    """The options that shape a `keras_vae.VAE` (besides its input shape and seed).

    Constructing one converts each value to the option's type (a list of
    widths becomes a tuple of ints, 16.0 becomes 16, "0.5" for `decoder_std`
    becomes 0.5) and raises `OptionError` (a ValueError) for a value the option
    does not take. `keras_vae.VAE`'s docstring explains each option at length.
    """

    latent_dim: int = option(16, "latent dimensions", minimum=1)
    architecture: str = option(
        "mlp", "encoder and decoder: dense layers, or stride-2 convolutions",
        choices=ARCHITECTURES)
    hidden_units: tuple[int, ...] = option((512, 512), "MLP hidden layer widths", minimum=1)
    gated: bool = option(
        False, "MLP: gated dense hidden layers, (Wh + b) * sigmoid(Vh + c), in place of ReLU ones")
    conv_filters: tuple[int, ...] = option(
        (), "conv encoder filters, one stride-2 layer each; none: depth follows the image size "
            "(halve it down to 8 pixels or fewer, at least twice; filters 32, 64, 128, 256)",
        minimum=1)
    conv_upsampling: str = option(
        "transpose", "conv decoder's upsampling: stride-2 transposed convolutions, or sub-pixel "
                     "ones (a convolution, then depth-to-space; much faster on JAX and torch CPUs)",
        choices=CONV_UPSAMPLINGS)
    conv_residual_blocks: int = option(
        0, "conv: residual blocks (two 3x3 convolutions and a skip) after each stride-2 layer "
           "of the encoder and each upsampling of the decoder", minimum=0)
    likelihood: str = option(
        "bernoulli", "p(x|z): Bernoulli (pixels in [0, 1]), Gaussian, or discretized logistic "
                     "(8-bit images: a probability for each of the 256 levels)",
        choices=LIKELIHOODS)
    decoder_std: float | str = option(
        1.0, "Gaussian decoder σ: a number or 'learned'", choices=("learned",))
    beta: float = option(1.0, "KL weight β", minimum=0)
    kl_warmup_steps: int = option(0, "β rises linearly from 0 over this many steps", minimum=0)
    num_samples: int = option(1, "samples of z per example, K", minimum=1)
    objective: str = option(
        "elbo", "elbo (the K-sample average) or iwae (the importance-weighted bound)",
        choices=OBJECTIVES)
    sticking_the_landing: bool = option(
        False, "iwae: drop the score-function term of the encoder gradient (Roeder et al. 2017). "
               "Lower variance, but for K > 1 the encoder's gradient is then biased "
               "(Tucker et al. 2019)")
    prior: str = option(
        "standard", "p(z): N(0, I), or a learned mixture of Gaussians", choices=PRIORS)
    prior_components: int = option(500, "components of the mixture prior", minimum=1)
    dynamic_binarization: bool = option(
        False, "draw x ~ Bernoulli(x) afresh in every training step")

    def __post_init__(self):
        for field in dataclasses.fields(ModelOptions):
            setattr(self, field.name, checked_value(field, getattr(self, field.name)))
        # σ must be above 0, which `minimum` (a lowest allowed value) cannot say.
        if self.decoder_std != "learned" and not self.decoder_std > 0:
            raise OptionError("decoder_std", "a positive float or 'learned'", self.decoder_std)

    def model_kwargs(self):
        """The model options as {name: value}, in declaration order: keyword arguments of `VAE`.

        A subclass's own fields (those of TrainConfig) are left out.
        """
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(ModelOptions)}


OPTION_NAMES = tuple(field.name for field in dataclasses.fields(ModelOptions))
