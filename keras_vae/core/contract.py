"""The interface of an exported model: what `keras_vae` writes and `serving` reads (NumPy only).

Both sides import this module, so the contract is written once:

* the tensor names of ``decoder.onnx`` (``z`` -> ``x_mean``, and ``logits`` for a
  Bernoulli decoder or ``x_params`` for an 8-bit one whose every parameter is an output)
  and ``encoder.onnx`` (``x`` -> ``z_mean``, ``z_log_var``);
* the metadata keys every exported graph carries, and how the learned prior is
  encoded in them (``encode_prior``, ``decode_prior``);
* drawing z from the prior (``draw_latents``), which both
  ``keras_vae.VAE.sample_latents`` and ``serving.Sampler.latents`` call, so that
  the same seed gives the same z, and so the same images, in Keras, in
  onnxruntime and over HTTP.

Shapes: D is the latent dimension, C the number of mixture components.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DECODER_INPUT", "DECODER_OUTPUT", "ENCODER_INPUT", "ENCODER_OUTPUTS", "MAX_TEMPERATURE",
    "DECODER_LOGITS", "MixturePrior", "check_temperature", "decode_prior", "draw_latents", "encode_prior",
    "encode_decoder_log_var", "decoder_spread", "DECODER_SPREAD_KEYS", "LABEL_INPUT", "CLASS_NAMES",
    "check_labels", "decode_class_names", "describe_classes", "DECODER_PARAMS", "MIXTURE_COMPONENTS",
    "read_mixture_components", "split_decoder_params",
]

# === Tensor names ===
DECODER_INPUT = "z"  # float32 [batch, D]
# float32 [batch, H, W, C]: probabilities (Bernoulli), means (Gaussian) or the location μ in [0, 1]
# (discretized logistic)
DECODER_OUTPUT = "x_mean"
# Bernoulli decoders only: a second output, the logits l whose sigmoid is x_mean, float32
# [batch, H, W, C]. Scorers compute log p(x|z) from it (x·l − log(1 + e^l)), which is exact
# where the float32 sigmoid saturates at 0 or 1 (|l| above ~17). Files exported before it
# existed have only x_mean, and are scored from the probabilities.
DECODER_LOGITS = "logits"
# 8-bit decoders whose every parameter of p(x|z) is a decoder output (a discretized logistic
# whose scale depends on z, a logistic mixture): a second output, those parameters per pixel,
# float32 [batch, H, W, P], laid out as `split_decoder_params` reads them. Scorers compute
# log p(x|z) from it; x_mean is then the location μ (logistic) or the mixture's mean.
DECODER_PARAMS = "x_params"
ENCODER_INPUT = "x"  # float32 [batch, H, W, C]
ENCODER_OUTPUTS = ("z_mean", "z_log_var")  # float32 [batch, D] each: q(z|x) = N(z_mean, exp(z_log_var))
# Class-conditional exports only: the second input of both graphs, the class y of each row,
# so that the decoder is p(x|z, y) and the encoder q(z|x, y). Unconditional graphs have no such input.
LABEL_INPUT = "label"  # int64 [batch], 0 .. number of classes − 1

#: The ONNX opset that `keras-vae export` writes unless told otherwise (onnxruntime ≥ 1.12 runs it).
DEFAULT_OPSET = 17

#: The largest difference export allows between onnxruntime and Keras on the same inputs
#: (pixels absolute; logits and log weights relative to their size above 1).
PARITY_TOLERANCE = 1e-5

# === Metadata keys (every value is a string) ===
LATENT_DIM = "latent_dim"  # "16"
IMAGE_SHAPE = "image_shape"  # "[28, 28, 1]"
# "bernoulli" | "gaussian" | "discretized_logistic" | "logistic_mixture"
LIKELIHOOD = "likelihood"
PRIOR = "prior"  # absent for N(0, I); else JSON, see encode_prior
SOURCE_BACKEND = "source_backend"  # the Keras backend the model was trained on
DATASET = "dataset"  # the dataset named at training time, or "unknown"
VERSION = "keras_vae_version"
CREATED = "created"  # ISO 8601, UTC
PRECISION = "precision"  # "fp32" (default) | "int8"
QUANTIZATION = "quantization"  # int8 only: JSON, the recipe and its measured NLL cost
QUANTIZATION_RECIPE = "quantization_recipe"  # int8 only: "u8s7" | "u8s8" | "u8u8" (activations × weights)
# int8 only: JSON {"cpu", "avx2", "avx512_vnni", "avx_vnni" (true | false | null: unknown),
# "onnxruntime"}, the machine on which the export measured the int8 cost
INT8_MEASURED_ON = "int8_measured_on"
DECODER_LOG_VAR = "decoder_log_var"  # Gaussian decoders: log σ², see encode_decoder_log_var
# Discretized logistic decoders: log s per pixel (x_mean is then the location μ in [0, 1]),
# encoded as encode_decoder_log_var encodes an (H, W, C) array.
DECODER_LOG_SCALE = "decoder_log_scale"
# logistic_mixture decoders: M, the components per pixel of x_params, e.g. "5".
MIXTURE_COMPONENTS = "mixture_components"
#: The metadata key of the spread of each likelihood that has one (see `decoder_spread`).
DECODER_SPREAD_KEYS = {"gaussian": DECODER_LOG_VAR, "discretized_logistic": DECODER_LOG_SCALE}
ANOMALY_THRESHOLD = "anomaly_threshold"  # JSON, see keras_vae.core.anomaly.AnomalyThreshold
# Class-conditional exports only: JSON list of the class names, label k naming class_names[k].
CLASS_NAMES = "class_names"
# Hierarchical (multi-group latent) exports only; see keras_vae.core.hierarchy.
MODEL = "model"  # "hierarchical"; absent for the single-latent model
LATENT_GROUPS = "latent_groups"  # JSON [{"name": "group_0", "shape": [h, w, c] or [d]}, ...], top-down
# The third graph of a hierarchical export: x, epsilon -> log_weight (see keras_vae.core.hierarchy).
LOG_WEIGHT_FILE = "log_weight.onnx"
LOG_WEIGHT_INPUTS = ("x", "epsilon")  # float32 [batch, H, W, C] and [batch, D] (standard-normal noise)
LOG_WEIGHT_OUTPUT = "log_weight"  # float32 [batch]: log p(x|z) + Σ_l log p(z_l|z_<l) − log q(z_l|x, z_<l)

#: Largest temperature a sampler accepts: z = μ + T·σ·ε stays far inside float32.
MAX_TEMPERATURE = 10.0


@dataclass(frozen=True)
class MixturePrior:
    """p(z) = Σ_c weights_c · N(z; means_c, diag exp(log_vars_c)), as float64 NumPy.

    Attributes:
        weights: (C,), non-negative, summing to 1.
        means: (C, D).
        log_vars: (C, D), log σ² of each component.
    """

    weights: np.ndarray
    means: np.ndarray
    log_vars: np.ndarray

    @property
    def components(self) -> int:
        return len(self.weights)


def encode_prior(prior: MixturePrior) -> str:
    """The ``prior`` metadata value: JSON ``{"type": "mixture", "components": C, "weights",
    "means", "log_vars"}``, each array base64 of little-endian float32 ((C,), (C, D), (C, D))."""
    arrays = {name: base64.b64encode(np.asarray(getattr(prior, name), "<f4").tobytes()).decode("ascii")
              for name in ("weights", "means", "log_vars")}
    return json.dumps({"type": "mixture", "components": prior.components, **arrays})


def decode_prior(value: str | None, latent_dim: int) -> MixturePrior | None:
    """The prior from a ``prior`` metadata value; None (no value) means N(0, I).

    The arrays are widened to float64 and the weights renormalised, so a
    sampler sees exactly what ``encode_prior`` stored. Raises ValueError,
    naming the problem, when the value is malformed.
    """
    if value is None:
        return None
    try:
        spec = json.loads(value)
        if not isinstance(spec, dict) or spec.get("type") != "mixture":
            raise ValueError(f"unknown prior type {spec.get('type') if isinstance(spec, dict) else spec!r}")
        components = int(spec["components"])
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        shapes = {"weights": (components,), "means": (components, latent_dim),
                  "log_vars": (components, latent_dim)}
        arrays = {}
        for name, shape in shapes.items():
            values = np.frombuffer(base64.b64decode(spec[name], validate=True), dtype="<f4")
            arrays[name] = values.astype(np.float64).reshape(shape)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"malformed prior metadata: {exc}") from None
    if not all(np.all(np.isfinite(a)) for a in arrays.values()):
        raise ValueError("malformed prior metadata: NaN or infinite values")
    weights = arrays["weights"]
    if np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("malformed prior metadata: weights must be >= 0 and not all 0")
    return MixturePrior(weights / weights.sum(), arrays["means"], arrays["log_vars"])


def encode_decoder_log_var(log_var) -> str:
    """The ``decoder_log_var`` metadata value of a Gaussian decoder: log σ² of p(x|z).

    A fixed σ gives a JSON number; a learned per-pixel variance gives JSON
    ``{"shape": [H, W, C], "data": base64 of little-endian float32}``.
    """
    values = np.asarray(log_var, dtype=np.float64)
    if values.ndim == 0:
        return json.dumps(float(values))
    data = base64.b64encode(values.astype("<f4").tobytes()).decode("ascii")
    return json.dumps({"shape": list(values.shape), "data": data})


def decoder_spread(metadata: dict[str, str], likelihood: str, image_shape) -> float | np.ndarray | None:
    """The decoder's spread from its metadata: log σ² (``decoder_log_var``) of a Gaussian decoder,
    log s (``decoder_log_scale``) of a discretized logistic one.

    A float or an (H, W, C) float64 array (as `encode_decoder_log_var` wrote it); None for a
    likelihood without a spread (Bernoulli), or when the entry is missing. Raises ValueError,
    naming the key, when the entry is malformed or not of ``image_shape``.
    """
    key = DECODER_SPREAD_KEYS.get(likelihood)
    if key is None:
        return None
    return _decode_pixel_values(metadata.get(key), image_shape, key)


def _decode_pixel_values(value: str | None, image_shape, key: str) -> float | np.ndarray | None:
    """A float, an (H, W, C) float64 array, or None from an `encode_decoder_log_var` value."""
    if value is None:
        return None
    try:
        spec = json.loads(value)
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            result = float(spec)
        else:
            if list(spec["shape"]) != list(image_shape):
                raise ValueError(f"shape {spec['shape']} is not the image shape {list(image_shape)}")
            result = np.frombuffer(base64.b64decode(spec["data"], validate=True), "<f4")
            result = result.astype(np.float64).reshape(tuple(image_shape))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"malformed {key} metadata: {exc}") from None
    if not np.all(np.isfinite(result)):
        raise ValueError(f"malformed {key} metadata: NaN or infinite values")
    return result


def read_mixture_components(metadata: dict[str, str]) -> int:
    """M from a logistic-mixture decoder's ``mixture_components`` entry; ValueError, naming the
    key, when it is missing or not a positive integer."""
    value = metadata.get(MIXTURE_COMPONENTS)
    try:
        components = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        components = 0
    if components < 1 or str(components) != str(value).strip():
        raise ValueError(f"the decoder's {MIXTURE_COMPONENTS} metadata must be a positive integer, "
                         f"got {value!r}; export it again")
    return components


def split_decoder_params(likelihood: str, params: np.ndarray, channels: int,
                         components: int | None = None) -> tuple[np.ndarray, ...]:
    """The parameters of p(x|z) from an ``x_params`` output (..., H, W, P).

    * ``discretized_logistic``: P = 2C, [μ (C) | log s (C)]: the location in [0, 1] and the
      log-scale; returns (μ, log s), each (..., H, W, C).
    * ``logistic_mixture``: P = M(1 + 2C + C(C−1)/2), [logits (M) | means (M·C) | log-scales
      (M·C) | coefficients (M·C(C−1)/2)], each block row-major (M, ·), channel c's location
      in component k being means[k, c] + Σ_{j<c} tanh(coefficients[k, ·])·x_j with the
      coefficients ordered (1,0), (2,0), (2,1), …; returns logits (..., H, W, M), means and
      log-scales (..., H, W, M, C), coefficients (..., H, W, M, C(C−1)/2).

    The values are those of ``keras_vae.models.distributions.distribution_parameters``: the
    offsets and clipping are applied in the graph. Raises ValueError when P does not fit.
    """
    params = np.asarray(params)
    width, lead = params.shape[-1], params.shape[:-1]
    if likelihood == "discretized_logistic":
        if width != 2 * channels:
            raise ValueError(f"{DECODER_PARAMS} of a discretized logistic decoder needs 2·{channels} "
                             f"values per pixel, got {width}")
        return params[..., :channels], params[..., channels:]
    if likelihood != "logistic_mixture" or components is None:
        raise ValueError(f"no {DECODER_PARAMS} layout for a {likelihood} decoder")
    m, pairs = components, channels * (channels - 1) // 2
    if width != m * (1 + 2 * channels + pairs):
        raise ValueError(f"{DECODER_PARAMS} of a mixture of {m} logistics over {channels} channels "
                         f"needs {m * (1 + 2 * channels + pairs)} values per pixel, got {width}")
    cuts = np.cumsum([m, m * channels, m * channels])
    logits, means, log_scales, coefficients = np.split(params, cuts, axis=-1)
    return (logits, means.reshape(lead + (m, channels)), log_scales.reshape(lead + (m, channels)),
            coefficients.reshape(lead + (m, pairs)))


def check_temperature(temperature) -> float:
    """``temperature`` as a float in [0, MAX_TEMPERATURE]; ValueError otherwise."""
    try:
        value = float(temperature)
    except (TypeError, ValueError, OverflowError):
        value = float("nan")
    if isinstance(temperature, bool) or not 0.0 <= value <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be a number from 0 to {MAX_TEMPERATURE:g}; "
                         f"got {temperature!r}")
    return value


def draw_latents(n: int, latent_dim: int, prior: MixturePrior | None = None, seed: int | None = None,
                 temperature: float = 1.0) -> np.ndarray:
    """n draws of z from the prior, spread scaled by T: float32 (n, D).

    Standard prior: z = T·ε with ε ~ N(0, I). Mixture: component c is picked by
    its weight, then z = μ_c + T·σ_c·ε. ε comes first from
    ``numpy.random.default_rng(seed)``, then the components, so the same seed
    gives the same z everywhere (``seed=None`` draws fresh randomness).

    Raises ValueError for a bad n, seed or temperature.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None; got {seed!r}")
    t = check_temperature(temperature)
    rng = np.random.default_rng(seed)
    epsilon = rng.standard_normal((int(n), int(latent_dim)), dtype=np.float32)
    if prior is None:
        return epsilon * np.float32(t)
    component = rng.choice(prior.components, size=int(n), p=prior.weights)
    std = np.exp(0.5 * prior.log_vars[component])
    return (prior.means[component] + t * std * epsilon).astype(np.float32)


def decode_class_names(value: str | None) -> tuple[str, ...] | None:
    """The class names from a ``class_names`` metadata value; None (no value): unconditional.

    Raises ValueError unless the value is a JSON list of at least two distinct strings.
    """
    if value is None:
        return None
    try:
        names = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"malformed class_names metadata: {exc}") from None
    if (not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names)):
        raise ValueError("malformed class_names metadata: expected a JSON list of at least two "
                         f"distinct strings, got {value[:200]!r}")
    return tuple(names)


def describe_classes(class_names) -> str:
    """The valid labels in words, for error messages: ``0..9 (names "0", "1", ..., "9")``."""
    shown = list(class_names) if len(class_names) <= 20 else [*class_names[:10], "...", *class_names[-3:]]
    return f"0..{len(class_names) - 1} (names {', '.join(json.dumps(n) for n in shown)})"


def check_labels(labels, n: int, class_names) -> np.ndarray:
    """Labels for n rows as int64 (n,), each in 0..len(class_names) − 1.

    ``labels`` is one class for every row, or a sequence of n classes; a class is
    its index (an integer, 7.0 read as 7) or its name (a string in ``class_names``).
    Raises ValueError naming the valid classes for anything else.
    """
    classes = len(class_names)
    valid = f"labels must be classes {describe_classes(class_names)}"
    values = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
    if values.ndim == 0:
        values = np.full(int(n), values.item() if isinstance(values, np.ndarray) else labels, dtype=object)
    if values.ndim != 1 or len(values) != n:
        raise ValueError(f"{valid}: one for all {n} images or one per image; got "
                         f"{'shape ' + str(list(values.shape)) if values.ndim != 1 else len(values)}")
    names = {name: index for index, name in enumerate(class_names)}
    result = np.empty(len(values), np.int64)
    for i, value in enumerate(values.tolist()):
        if isinstance(value, str):
            if value not in names:
                raise ValueError(f"{valid}; got {value!r}")
            result[i] = names[value]
            continue
        whole = (isinstance(value, (int, float)) and not isinstance(value, bool)
                 and math.isfinite(value) and value == int(value))
        if not whole or not 0 <= int(value) < classes:
            raise ValueError(f"{valid}; got {value!r}")
        result[i] = int(value)
    return result
