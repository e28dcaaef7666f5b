"""Importance-sampled log p(x) in NumPy: one estimator for Keras and for onnxruntime.

    log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x) = N(μ(x), diag σ²(x))

(the IWAE bound with K samples; it tightens towards log p(x) as K grows).
The caller supplies the model as two functions, ``encode`` and
``log_px_given_z``; `keras_vae.VAE.log_likelihood` passes its Keras networks,
`keras_vae.serving.likelihood` the exported ONNX files. Everything else is
here: the noise, the chunking, log q, log p(z) and the log-mean-exp.

The noise is fixed per image: image i (its index in ``x``) draws its K values
of ε, in order, from ``numpy.random.default_rng([seed, i])``. So an image's
estimate does not depend on ``batch_size`` or ``samples_per_chunk``, and the
same seed gives the same z in every Keras backend and in onnxruntime.

All log-probabilities are in nats, float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from keras_vae.core.contract import MixturePrior, split_decoder_params

__all__ = ["log_likelihood", "importance_log_weights", "is_likelihood", "log_mean_exp",
           "prior_log_prob", "bernoulli_log_prob", "bernoulli_log_prob_from_logits",
           "gaussian_log_prob", "discretized_logistic_log_prob",
           "discretized_logistic_mixture_log_prob", "decoder_params_log_prob", "gaussian_kl",
           "PROBABILITY_FLOOR"]

LOG_2PI = math.log(2.0 * math.pi)
#: Bernoulli probabilities from a decoder's float32 output are clipped to
#: [floor, 1 − floor] (a sigmoid saturates at 1.0 in float32 for logits above ~17).
PROBABILITY_FLOOR = 1e-7

Encode = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
LogPxGivenZ = Callable[[np.ndarray, np.ndarray], np.ndarray]


def is_likelihood(likelihood: str, images: np.ndarray) -> bool:
    """False when a Bernoulli decoder meets grey pixels: its "log-likelihood" is then a cross-entropy.

    A Bernoulli p(x|z) is a probability only for x in {0, 1}; for grey x in
    (0, 1) the same formula is a cross-entropy, which can't be compared with
    published NLLs and has no bits/dim.
    """
    return likelihood != "bernoulli" or bool(np.isin(images, (0.0, 1.0)).all())


def log_mean_exp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """log((1/K) Σ_k exp(values_k)) along ``axis``, computed stably in float64."""
    values = np.asarray(values, dtype=np.float64)
    count = values.shape[axis]
    return _logsumexp(values, axis) - math.log(count)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(peak, axis) + np.log(np.sum(np.exp(values - peak), axis=axis))


def prior_log_prob(z: np.ndarray, prior: MixturePrior | None = None) -> np.ndarray:
    """log p(z): z (..., D) -> (...), under N(0, I) (prior None) or a mixture of Gaussians."""
    z = np.asarray(z, dtype=np.float64)
    if prior is None:
        return -0.5 * np.sum(LOG_2PI + np.square(z), axis=-1)
    precisions = np.exp(-prior.log_vars)  # (C, D)
    flat = z.reshape(-1, z.shape[-1])  # (N, D)
    squared_distance = (np.square(flat) @ precisions.T - 2.0 * flat @ (prior.means * precisions).T
                        + np.sum(np.square(prior.means) * precisions, axis=-1))  # (N, C)
    log_components = -0.5 * (z.shape[-1] * LOG_2PI + prior.log_vars.sum(-1) + squared_distance)
    with np.errstate(divide="ignore"):
        log_weights = np.log(prior.weights)
    return _logsumexp(log_components + log_weights, axis=-1).reshape(z.shape[:-1])


def bernoulli_log_prob(x: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Σ over (H, W, C) of x·log p + (1 − x)·log(1 − p): (..., H, W, C) -> (...)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    x = np.asarray(x, dtype=np.float64)
    return np.sum(x * np.log(p) + (1.0 - x) * np.log1p(-p), axis=(-3, -2, -1))


def bernoulli_log_prob_from_logits(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Σ over (H, W, C) of log Bernoulli(x; sigmoid(l)) = x·l − log(1 + e^l): (..., H, W, C) -> (...).

    The NumPy twin of `keras_vae.models.distributions.bernoulli_log_prob_from_logits`:
    exact (no floor) for any logit, where `bernoulli_log_prob` of the float32 sigmoid is not.
    """
    logits, x = np.asarray(logits, np.float64), np.asarray(x, np.float64)
    return np.sum(x * logits - np.logaddexp(0.0, logits), axis=(-3, -2, -1))


def gaussian_log_prob(x: np.ndarray, mean: np.ndarray, log_var) -> np.ndarray:
    """Σ over (H, W, C) of log N(x; mean, exp(log_var)); log_var a scalar or (H, W, C)."""
    x, mean = np.asarray(x, np.float64), np.asarray(mean, np.float64)
    log_var = np.asarray(log_var, np.float64)
    density = -0.5 * (LOG_2PI + log_var + np.square(x - mean) * np.exp(-log_var))
    return np.sum(density, axis=(-3, -2, -1))


def discretized_logistic_log_prob(x: np.ndarray, mean: np.ndarray, log_scale) -> np.ndarray:
    """Σ over (H, W, C) of log P(x) for 8-bit pixels x = k/255 under a discretized logistic.

    The NumPy twin of `keras_vae.models.distributions.discretized_logistic_log_prob`: level k
    gets the logistic's (location ``mean``, scale exp(log_scale)) mass on
    [x − 1/510, x + 1/510], the edge levels 0 and 255 the tails beyond. x is rounded
    to the nearest level.
    """
    levels = 255.0
    half_bin = 0.5 / levels
    x = np.round(np.asarray(x, np.float64) * levels) / levels
    mean, log_scale = np.asarray(mean, np.float64), np.asarray(log_scale, np.float64)
    upper = (x - mean + half_bin) * np.exp(-log_scale)
    lower = (x - mean - half_bin) * np.exp(-log_scale)
    log_cdf_upper, log_cdf_lower = -np.logaddexp(0.0, -upper), -np.logaddexp(0.0, -lower)
    log_sf_upper, log_sf_lower = -np.logaddexp(0.0, upper), -np.logaddexp(0.0, lower)
    # log(σ(u) − σ(l)) from the CDF below the location, from the survival function above it
    with np.errstate(divide="ignore"):
        below = log_cdf_upper + np.log(-np.expm1(np.minimum(log_cdf_lower - log_cdf_upper, 0.0)))
        above = log_sf_lower + np.log(-np.expm1(np.minimum(log_sf_upper - log_sf_lower, 0.0)))
    log_inner = np.where(x - mean > 0.0, above, below)
    log_prob = np.where(x < half_bin, log_cdf_upper,
                        np.where(x > 1.0 - half_bin, log_sf_lower, log_inner))
    return np.sum(log_prob, axis=(-3, -2, -1))



def _discretized_logistic_log_prob_per_pixel(x, mean, log_scale):
    """log P(x) per element (no sum) of the discretized logistic; see `discretized_logistic_log_prob`."""
    levels = 255.0
    half_bin = 0.5 / levels
    upper = (x - mean + half_bin) * np.exp(-log_scale)
    lower = (x - mean - half_bin) * np.exp(-log_scale)
    log_cdf_upper, log_cdf_lower = -np.logaddexp(0.0, -upper), -np.logaddexp(0.0, -lower)
    log_sf_upper, log_sf_lower = -np.logaddexp(0.0, upper), -np.logaddexp(0.0, lower)
    with np.errstate(divide="ignore"):
        below = log_cdf_upper + np.log(-np.expm1(np.minimum(log_cdf_lower - log_cdf_upper, 0.0)))
        above = log_sf_lower + np.log(-np.expm1(np.minimum(log_sf_upper - log_sf_lower, 0.0)))
    log_inner = np.where(x - mean > 0.0, above, below)
    return np.where(x < half_bin, log_cdf_upper, np.where(x > 1.0 - half_bin, log_sf_lower, log_inner))


def discretized_logistic_mixture_log_prob(x: np.ndarray, logits: np.ndarray, means: np.ndarray,
                                          log_scales: np.ndarray, coefficients: np.ndarray
                                          ) -> np.ndarray:
    """Σ over (H, W) of log P(pixel) under the channel-coupled mixture of discretized logistics.

    The NumPy twin of `keras_vae.distributions.discretized_logistic_mixture_log_prob`:
    P(x) = Σ_k softmax(logits)_k Π_c P_k(x_c | x_<c), channel c of component k a discretized
    logistic (256 levels on [0, 1]) of scale exp(log_scales[k, c]) and location
    means[k, c] + Σ_{j<c} tanh(α_kcj)·x_j, α ordered (1,0), (2,0), (2,1), ….

    Args:
        x: (..., H, W, C) pixels in [0, 1]; logits (..., H, W, M); means and log_scales
            (..., H, W, M, C); coefficients (..., H, W, M, C(C−1)/2).

    Returns:
        (...) float64.
    """
    x = np.round(np.asarray(x, np.float64) * 255.0) / 255.0
    logits, means, log_scales, coefficients = (
        np.asarray(a, np.float64) for a in (logits, means, log_scales, coefficients))
    channels = means.shape[-1]
    locations, index = [], 0
    for c in range(channels):
        location = means[..., c]
        for j in range(c):
            location = location + np.tanh(coefficients[..., index]) * x[..., None, j]
            index += 1
        locations.append(location)
    per_channel = _discretized_logistic_log_prob_per_pixel(
        x[..., None, :], np.stack(locations, axis=-1), log_scales)  # (..., H, W, M, C)
    log_weights = logits - _logsumexp(logits, axis=-1)[..., None]
    log_pixels = _logsumexp(per_channel.sum(-1) + log_weights, axis=-1)  # (..., H, W)
    return np.sum(log_pixels, axis=(-2, -1))


def decoder_params_log_prob(likelihood: str, x: np.ndarray, params: np.ndarray,
                            components: int | None = None) -> np.ndarray:
    """Σ over (H, W, C) of log P(x) under an 8-bit decoder's ``x_params`` output (..., H, W, P):
    a discretized logistic with its own scale per pixel and z, or the coupled logistic mixture
    of ``components`` (`keras_vae.core.contract.split_decoder_params` reads the layout).

    The NumPy twin of `keras_vae.models.distributions.discretized_log_prob`. Returns (...) float64.
    """
    x = np.asarray(x)
    parameters = split_decoder_params(likelihood, params, x.shape[-1], components)
    if likelihood == "discretized_logistic":
        return discretized_logistic_log_prob(x, *parameters)
    return discretized_logistic_mixture_log_prob(x, *parameters)


def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p) -> np.ndarray:
    """KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) per element, float64 (twin of `distributions.gaussian_kl`)."""
    mean_q, log_var_q, mean_p, log_var_p = (
        np.asarray(a, np.float64) for a in (mean_q, log_var_q, mean_p, log_var_p))
    return 0.5 * (log_var_p - log_var_q
                  + (np.exp(log_var_q) + np.square(mean_q - mean_p)) * np.exp(-log_var_p) - 1.0)


def log_likelihood(x: np.ndarray, encode: Encode, log_px_given_z: LogPxGivenZ,
                   prior: MixturePrior | None = None, num_samples: int = 1000,
                   batch_size: int = 100, samples_per_chunk: int | None = None,
                   seed: int | None = 0,
                   progress: Callable[[int], None] | None = None,
                   labels: np.ndarray | None = None) -> np.ndarray:
    """Importance-sampled log p(x) per image (log p(x|y) with labels), in nats per example.

    Args:
        x: (N, H, W, C) images.
        encode: x (B, H, W, C) -> (z_mean, z_log_var), each (B, D).
        log_px_given_z: (x (B, H, W, C), z float32 (k, B, D)) -> log p(x|z) (k, B).
        prior: the model's mixture prior, or None for N(0, I).
        num_samples: K importance samples per image.
        batch_size: images per call of ``encode``.
        samples_per_chunk: samples per call of ``log_px_given_z`` (bounds memory);
            default: about 20,000 decoded images per call.
        seed: the noise seed (None: fresh randomness).
        progress: called with the number of images done after each batch.
        labels: a class-conditional model's labels y, (N,) ints; ``encode`` and
            ``log_px_given_z`` then take each batch's labels as a last argument.

    Returns:
        (N,) float64.
    """
    results = []
    for _, _, log_weights in importance_log_weights(x, encode, log_px_given_z, prior, num_samples,
                                                    batch_size, samples_per_chunk, seed, labels):
        results.append(log_mean_exp(log_weights, axis=0))
        if progress is not None:
            progress(log_weights.shape[1])
    return np.concatenate(results) if results else np.zeros((0,), np.float64)


def importance_log_weights(x: np.ndarray, encode: Encode, log_px_given_z: LogPxGivenZ,
                           prior: MixturePrior | None = None, num_samples: int = 1000,
                           batch_size: int = 100, samples_per_chunk: int | None = None,
                           seed: int | None = 0, labels: np.ndarray | None = None,
                           ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The log importance weights log p(x, z_k) − log q(z_k|x), one batch of images at a time.

    Arguments as `log_likelihood`, whose noise this is. Yields, per batch of B
    images: (index of its first image, z_mean float32 (B, D), log weights
    float64 (K, B)). Their log-mean-exp over K is `log_likelihood`; their mean
    over K is a K-sample estimate of the ELBO.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1; got {num_samples}, {batch_size}")
    if samples_per_chunk is None:
        samples_per_chunk = max(1, min(num_samples, 20_000 // batch_size))
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
    for start in range(0, len(x), batch_size):
        x_batch = x[start : start + batch_size]
        given = () if labels is None else (labels[start : start + batch_size],)
        z_mean, z_log_var = (np.asarray(a, np.float32) for a in encode(x_batch, *given))  # (B, D)
        std = np.exp(0.5 * z_log_var)
        streams = [np.random.default_rng([seed, start + i]) for i in range(len(x_batch))]
        log_weights = []
        for done in range(0, num_samples, samples_per_chunk):
            k = min(samples_per_chunk, num_samples - done)
            epsilon = np.stack([s.standard_normal((k, z_mean.shape[1]), dtype=np.float32)
                                for s in streams], axis=1)  # (k, B, D)
            z = z_mean + std * epsilon
            log_q = -0.5 * np.sum(LOG_2PI + z_log_var.astype(np.float64)
                                  + np.square(epsilon, dtype=np.float64), axis=-1)  # (k, B)
            log_p = np.asarray(log_px_given_z(x_batch, z, *given), np.float64) + prior_log_prob(z, prior)
            log_weights.append(log_p - log_q)
        yield start, z_mean, np.concatenate(log_weights)
