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


MODELS = ("vae", "hierarchical")
ARCHITECTURES = ("mlp", "conv")
CONV_UPSAMPLINGS = ("transpose", "subpixel")
LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic", "logistic_mixture")
#: Where the single-latent discretized logistic's scale comes from: the decoder (a function of
#: z, as in the hierarchical model) or one learned value per pixel and channel, independent of z
#: (the only one before the option existed; `with_options_saved_before`).
LOGISTIC_SCALES = ("decoder", "pixel")
OBJECTIVES = ("elbo", "iwae")
PRIORS = ("standard", "mixture")
# The hierarchical model's own choices.
HIERARCHICAL_UPSAMPLINGS = ("nearest", "subpixel")


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
        "bernoulli", "p(x|z): Bernoulli (pixels in [0, 1]), Gaussian, discretized logistic "
                     "(8-bit images: a probability for each of the 256 levels), or a mixture of "
                     "discretized logistics with coupled channels (logistic_mixture, 8-bit images)",
        choices=LIKELIHOODS)
    logistic_scale: str = option(
        "decoder", "--likelihood discretized_logistic: the scale is a decoder output, a function "
                   "of z (decoder), or one learned value per pixel and channel (pixel)",
        choices=LOGISTIC_SCALES)
    mixture_components: int = option(
        5, "--likelihood logistic_mixture: components per pixel", minimum=1)
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


@dataclasses.dataclass
class HierarchicalOptions:
    """The options of `keras_vae.HierarchicalVAE` that the single-latent model does not have.

    `model` chooses the family member. The hierarchical model also reads these options of
    `ModelOptions`: `latent_dim` (units, or channels, of each group), `architecture`,
    `likelihood`, `mixture_components`, `decoder_std` (a number), `beta`, `kl_warmup_steps`
    and `dynamic_binarization`; `HierarchicalVAE`'s docstring explains each option. 0 stands
    for "none" where the model takes None.
    """

    model: str = option(
        "vae", "vae: one latent vector (keras_vae.VAE); hierarchical: top-down groups of "
               "latents (keras_vae.HierarchicalVAE, Ladder VAE / NVAE / VDVAE style)",
        choices=MODELS)
    num_groups: int = option(2, "hierarchical: latent groups L", minimum=1)
    width: int = option(
        0, "hierarchical: width of the residual stream, units (mlp) or filters (conv); "
           "0: 256 (mlp) or 32 (conv)", minimum=0)
    residual_blocks: int = option(
        1, "hierarchical: residual blocks after each group, top-down and bottom-up", minimum=0)
    num_resolutions: int = option(
        2, "hierarchical conv: latents at H/2, H/4, ..., H/2**N", minimum=1)
    upsampling: str = option(
        "nearest", "hierarchical conv: nearest-neighbour resize or sub-pixel convolution",
        choices=HIERARCHICAL_UPSAMPLINGS)
    free_bits: float = option(
        0.0, "hierarchical: nats per group below which a group's KL is not pushed down "
             "(0: off)", minimum=0)
    grad_clip: float = option(
        0.0, "hierarchical: clip the gradients to this global norm (0: off)", minimum=0)
    skip_threshold: float = option(
        0.0, "hierarchical: skip updates whose gradient norm is above this, as well as "
             "non-finite ones (0: only non-finite ones)", minimum=0)

    def __post_init__(self):
        for field in dataclasses.fields(HierarchicalOptions):
            setattr(self, field.name, checked_value(field, getattr(self, field.name)))


HIERARCHICAL_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(HierarchicalOptions))
#: The options of `ModelOptions` that the hierarchical model reads too.
SHARED_OPTION_NAMES = ("latent_dim", "architecture", "likelihood", "mixture_components",
                       "decoder_std", "beta", "kl_warmup_steps", "dynamic_binarization")


def check_model_choice(options):
    """Raises OptionError when `options` (a `TrainConfig`) sets an option the chosen model lacks.

    An option counts as set when it differs from its default; a class-conditional run
    (`options.conditional`) needs the single-latent model.
    """
    if options.model == "hierarchical":
        own = [name for name in OPTION_NAMES if name not in SHARED_OPTION_NAMES]
        defaults, other = ModelOptions(), "vae"
        if options.decoder_std == "learned":
            raise OptionError("decoder_std", "a positive number for the hierarchical model",
                              options.decoder_std)
    else:
        own = [name for name in HIERARCHICAL_OPTION_NAMES if name != "model"]
        defaults, other = HierarchicalOptions(), "hierarchical"
    if options.model != "vae" and getattr(options, "conditional", False):
        raise OptionError("conditional", "off: a class-conditional model is a --model vae", True)
    for name in own:
        if getattr(options, name) != getattr(defaults, name):
            raise OptionError(name, f"left at its default: it is an option of --model {other}",
                              getattr(options, name))


def hierarchical_kwargs(options):
    """The keyword arguments of `keras_vae.HierarchicalVAE` from `options` (a `TrainConfig`)."""
    kwargs = {name: getattr(options, name) for name in SHARED_OPTION_NAMES}
    kwargs.update({name: getattr(options, name) for name in HIERARCHICAL_OPTION_NAMES
                   if name != "model"})
    for name in ("width", "grad_clip", "skip_threshold"):
        kwargs[name] = kwargs[name] or None
    return kwargs


def with_options_saved_before(config):
    """A model's saved options (a `get_config` or a run's config.json) with the values that a file
    saved before an option existed had, where the option's default has since changed.

    `logistic_scale`: a discretized-logistic VAE saved without it (keras-vae 0.1.0) learned one
    log-scale per pixel, "pixel"; new models default to the decoder's z-dependent scale.
    Returns a new dict; `config` is unchanged.
    """
    config = dict(config)
    if "logistic_scale" not in config and config.get("likelihood") == "discretized_logistic" \
            and config.get("model", "vae") == "vae":
        config["logistic_scale"] = "pixel"
    return config
