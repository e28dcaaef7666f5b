"""Distribution math for the VAE, in pure `keras.ops` (works on every backend).

Every log-probability here is in nats. Functions that reduce over an event
(the latent dimensions, or the pixels of an image) say which axes they sum.
"""

import math

from keras import ops
from keras import random

LOG_2PI = math.log(2.0 * math.pi)


def reparameterize(mean, log_var, seed, num_samples=None):
    """Draws z = μ + σ·ε with ε ~ N(0, I), so gradients flow through μ and σ.

    Args:
        mean, log_var: tensors of the same shape, e.g. (B, D).
        seed: a `keras.random.SeedGenerator` (or int) for ε.
        num_samples: if given, draw K = num_samples samples along a new
            leading axis.

    Returns:
        z: (B, D), or (K, B, D) with num_samples.
    """
    shape = tuple(ops.shape(mean))
    if num_samples is not None:
        shape = (num_samples,) + shape
    epsilon = random.normal(shape, dtype=mean.dtype, seed=seed)
    return mean + ops.exp(0.5 * log_var) * epsilon


def sum_over_trailing_axes(values, num_axes):
    """Sums the last `num_axes` axes: (..., e1, …, en) -> (...)."""
    if num_axes == 0:
        return values
    return ops.sum(values, axis=tuple(range(-num_axes, 0)))


def gaussian_kl_to_standard_normal(mean, log_var):
    """KL(N(μ, diag σ²) ‖ N(0, I)) in closed form, summed over the last axis.

    KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²).

    Args:
        mean, log_var: (..., D).

    Returns:
        (...) KL in nats.
    """
    return 0.5 * ops.sum(ops.square(mean) + ops.exp(log_var) - 1.0 - log_var, axis=-1)


def diagonal_gaussian_log_prob(x, mean, log_var, event_axes=1):
    """log N(x; μ, diag σ²), summed over the last `event_axes` axes.

    Args:
        x, mean, log_var: broadcastable tensors (..., *event).
        event_axes: how many trailing axes form one event.

    Returns:
        (...) log-density in nats.
    """
    log_density = -0.5 * (LOG_2PI + log_var + ops.square(x - mean) * ops.exp(-log_var))
    return sum_over_trailing_axes(log_density, event_axes)


def standard_normal_log_prob(z):
    """log N(z; 0, I) summed over the last axis: (..., D) -> (...) nats."""
    return -0.5 * ops.sum(LOG_2PI + ops.square(z), axis=-1)


def gaussian_mixture_log_prob(z, means, log_vars, logits):
    """log p(z) under a mixture of C diagonal Gaussians, summed over the last axis.

    p(z) = Σ_c softmax(logits)_c · N(z; μ_c, diag σ_c²). The squared distance
    Σ_j (z_j − μ_cj)² / σ_cj² is expanded into matrix products, so no
    (..., C, D) tensor is formed.

    Args:
        z: (..., D).
        means, log_vars: (C, D), the components' μ and log σ².
        logits: (C,) unnormalized log mixture weights.

    Returns:
        (...) log-density in nats.
    """
    latent_dim = ops.shape(z)[-1]
    flat_z = ops.reshape(z, (-1, latent_dim))  # (N, D)
    precisions = ops.exp(-log_vars)  # (C, D)
    squared_distance = (
        ops.matmul(ops.square(flat_z), ops.transpose(precisions))
        - 2.0 * ops.matmul(flat_z, ops.transpose(means * precisions))
        + ops.sum(ops.square(means) * precisions, axis=-1)
    )  # (N, C)
    log_components = -0.5 * (
        latent_dim * LOG_2PI + ops.sum(log_vars, axis=-1) + squared_distance
    )  # (N, C)
    log_density = ops.logsumexp(log_components + ops.log_softmax(logits), axis=-1)  # (N,)
    return ops.reshape(log_density, ops.shape(z)[:-1])


def bernoulli_log_prob_from_logits(x, logits, event_axes=1):
    """log Bernoulli(x; sigmoid(logits)), summed over the last `event_axes` axes.

    Computed as x·l − softplus(l), which is stable for large |l| (no clipped
    probabilities). x may be real-valued in [0, 1] (the cross-entropy form).

    Returns:
        (...) log-probability in nats.
    """
    log_prob = x * logits - ops.softplus(logits)
    return sum_over_trailing_axes(log_prob, event_axes)


#: Levels of an 8-bit pixel; a discretized likelihood puts a probability on each.
PIXEL_LEVELS = 256
#: log s of the discretized logistics, on the [0, 1] pixel scale where one level is 1/255 wide:
#: from e^-7 (nearly all the mass on one level) to e^0. Decoder outputs are clipped to it.
LOG_SCALE_RANGE = (-7.0, 0.0)
#: The likelihoods of 8-bit pixels whose every parameter is an output of the decoder.
DISCRETIZED_LIKELIHOODS = ("discretized_logistic", "logistic_mixture")


def discretized_logistic_log_prob(x, mean, log_scale, event_axes=1):
    """log P(x) of 8-bit pixels under a discretized logistic, summed over the last `event_axes` axes.

    Pixels are x = k / 255 for k = 0 … 255 (x is rounded to the nearest level).
    Level k gets the logistic's mass on its bin [x − 1/510, x + 1/510], except that
    the bins at the edges reach out to −∞ (k = 0) and +∞ (k = 255), so the 256
    probabilities sum to 1 (Salimans et al. 2017, PixelCNN++; Kingma et al. 2016, IAF):

        P(k) = σ((x + 1/510 − μ)/s) − σ((x − 1/510 − μ)/s)   for 0 < k < 255,
        P(0) = σ((1/510 − μ)/s),   P(255) = 1 − σ((1 − 1/510 − μ)/s).

    Everything is computed from log σ(a) = −softplus(−a) and log(1 − σ(a)) = −softplus(a),
    with an inner bin factored as σ(u) − σ(l) = σ(u)·(1 − σ(l))·(1 − e^(−(u − l))): no
    difference of nearly equal numbers, so float32 keeps bins far in either tail (no
    density-times-width approximation is needed), and no expm1, which ONNX lacks, so the
    same math exports (`log_one_minus_exp_neg`).

    Args:
        x: pixels in [0, 1], (..., *event).
        mean: μ, the logistic's location, on the same [0, 1] scale; broadcastable to x.
        log_scale: log s, broadcastable to x.
        event_axes: how many trailing axes form one event.

    Returns:
        (...) log-probability in nats (a sum of log-probabilities of 256-level pixels).
    """
    levels = PIXEL_LEVELS - 1
    half_bin = 0.5 / levels
    x = ops.round(x * levels) / levels
    centered = x - mean
    inverse_scale = ops.exp(-log_scale)
    upper = inverse_scale * (centered + half_bin)
    lower = inverse_scale * (centered - half_bin)
    log_cdf_upper, log_sf_lower = -ops.softplus(-upper), -ops.softplus(lower)
    # log(σ(u) − σ(l)) = log σ(u) + log(1 − σ(l)) + log(1 − e^(l − u)); u − l = 1 / (255·s).
    log_inner = log_cdf_upper + log_sf_lower + log_one_minus_exp_neg(inverse_scale / levels)
    log_prob = ops.where(x < half_bin, log_cdf_upper,
                         ops.where(x > 1.0 - half_bin, log_sf_lower, log_inner))
    return sum_over_trailing_axes(log_prob, event_axes)


def log_one_minus_exp_neg(delta):
    """log(1 − e^(−Δ)) for Δ > 0, elementwise, accurate in float32 for small Δ.

    Below Δ = 0.5 it sums the series 1 − e^(−Δ) = Δ(1 − Δ/2 (1 − Δ/3 (1 − …))) to Δ⁹ (the
    rest is below 1e-8 of the value), above it takes log(1 − e^(−Δ)) directly: expm1 and
    log1p would do, but tf2onnx cannot export them.
    """
    small = ops.minimum(delta, 0.5)
    series = ops.ones_like(small)
    for n in range(9, 1, -1):
        series = 1.0 - small / n * series
    direct = ops.log(1.0 - ops.exp(-ops.maximum(delta, 0.5)))
    return ops.where(delta < 0.5, ops.log(small * series), direct)


def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    """KL(N(μ_q, diag σ_q²) ‖ N(μ_p, diag σ_p²)) in closed form, per element (no sum).

    KL = ½ (log σ_p² − log σ_q² + (σ_q² + (μ_q − μ_p)²) / σ_p² − 1).

    Args:
        mean_q, log_var_q, mean_p, log_var_p: broadcastable tensors.

    Returns:
        The elementwise KL in nats; sum it over a group's latent axes.
    """
    return 0.5 * (log_var_p - log_var_q
                  + (ops.exp(log_var_q) + ops.square(mean_q - mean_p)) * ops.exp(-log_var_p) - 1.0)


def coupled_channel_means(x, means, coefficients):
    """Channel-coupled locations of a logistic mixture (PixelCNN++): μ_c = m_c + Σ_{j<c} tanh(α_cj)·x_j.

    Args:
        x: pixels (..., C) on the [0, 1] scale (the channels j < c of the same pixel).
        means: m, (..., M, C).
        coefficients: raw α, (..., M, C(C−1)/2), ordered (1,0), (2,0), (2,1), (3,0), ….

    Returns:
        (..., M, C) locations.
    """
    channels = means.shape[-1]
    coupled, index = [], 0
    for c in range(channels):
        mean = means[..., c]
        for j in range(c):
            mean = mean + ops.tanh(coefficients[..., index]) * x[..., None, j]
            index += 1
        coupled.append(mean)
    return ops.stack(coupled, axis=-1)


def discretized_logistic_mixture_log_prob(x, logits, means, log_scales, coefficients, event_axes=2):
    """log P(x) of 8-bit pixels under a mixture of discretized logistics with coupled channels.

    The output distribution of PixelCNN++ (Salimans et al. 2017) that VDVAE uses, on the
    [0, 1] pixel scale: each pixel (C channels) picks component k with probability
    softmax(logits)_k; given k, channel c is a discretized logistic (256 levels, as
    `discretized_logistic_log_prob`) of scale exp(log_scales[k, c]) and location
    μ_kc = means[k, c] + Σ_{j<c} tanh(α_kcj)·x_j, which depends on the pixel's earlier channels:

        P(x) = Σ_k π_k Π_c P_k(x_c | x_<c).

    Args:
        x: pixels in [0, 1], (..., H, W, C) (rounded to the nearest of the 256 levels).
        logits: (..., H, W, M) unnormalized log mixture weights.
        means, log_scales: (..., H, W, M, C).
        coefficients: (..., H, W, M, C(C−1)/2) raw coupling coefficients (tanh is applied here).
        event_axes: how many trailing axes of the per-pixel result (…, H, W) form one event.

    Returns:
        (...) log-probability in nats.
    """
    levels = PIXEL_LEVELS - 1
    x = ops.round(x * levels) / levels
    locations = coupled_channel_means(x, means, coefficients)  # (..., H, W, M, C)
    per_channel = discretized_logistic_log_prob(x[..., None, :], locations, log_scales, event_axes=0)
    log_components = ops.sum(per_channel, axis=-1) + ops.log_softmax(logits, axis=-1)  # (..., H, W, M)
    return sum_over_trailing_axes(ops.logsumexp(log_components, axis=-1), event_axes)


def logistic_mixture_mean(logits, means, coefficients):
    """The mean pixel of the coupled logistic mixture, clipped to [0, 1]: (..., H, W, C).

    Within component k, E[x_c] = m_kc + Σ_{j<c} tanh(α_kcj)·E[x_j] (the logistic's mean is its
    location; the discretization and the edges of [0, 1] are ignored); the components are
    then averaged with weights softmax(logits).
    """
    channels = means.shape[-1]
    expected, index = [], 0
    for c in range(channels):
        mean = means[..., c]
        for j in range(c):
            mean = mean + ops.tanh(coefficients[..., index]) * expected[j]
            index += 1
        expected.append(mean)
    per_component = ops.stack(expected, axis=-1)  # (..., M, C)
    weights = ops.softmax(logits, axis=-1)[..., None]
    return ops.clip(ops.sum(weights * per_component, axis=-2), 0.0, 1.0)


# === The 8-bit decoders' output heads, shared by the family ===
#
# A decoder of the family ends in P numbers per pixel, (..., H, W, P); these functions say
# what they mean. The single-latent VAE and the hierarchical VAE both call them, and the ONNX
# export writes their results (the distributions' parameters) as the decoder's `x_params`.


def params_per_pixel(likelihood, channels, mixture_components=1):
    """P, the decoder outputs per pixel: C (Bernoulli logits, Gaussian means), 2C (a discretized
    logistic's location and log-scale) or M(1 + 2C + C(C−1)/2) (the coupled mixture's logits,
    means, log-scales and coupling coefficients)."""
    if likelihood == "discretized_logistic":
        return 2 * channels
    if likelihood == "logistic_mixture":
        return mixture_components * (1 + 2 * channels + channels * (channels - 1) // 2)
    return channels


def logistic_parameters(params, channels):
    """A discretized logistic's parameters from the decoder output (..., 2C): the location
    μ = sigmoid(first C), in [0, 1], and the log-scale log s = the last C, clipped to
    `LOG_SCALE_RANGE`; each (..., C)."""
    return ops.sigmoid(params[..., :channels]), ops.clip(params[..., channels:], *LOG_SCALE_RANGE)


def mixture_blocks(params, components, channels):
    """The four blocks of a coupled logistic mixture's decoder output (…, P), P = M(1 + 2C + C(C−1)/2).

    The output is laid out as [logits (M) | means (M·C) | log-scales (M·C) | coefficients
    (M·C(C−1)/2)], the last three row-major (M, ·). The means are offset by 0.5, so that a zero
    output is mid-grey; the log-scales are clipped to `LOG_SCALE_RANGE`; the coupling
    coefficients are raw (`coupled_channel_means` applies tanh).

    Returns the blocks flat: (…, M), (…, M·C), (…, M·C), (…, M·C(C−1)/2).
    """
    m, c = components, channels
    return (params[..., :m], params[..., m : m + m * c] + 0.5,
            ops.clip(params[..., m + m * c : m + 2 * m * c], *LOG_SCALE_RANGE),
            params[..., m + 2 * m * c :])


def logistic_mixture_parameters(params, components, channels):
    """The coupled mixture's parameters from the decoder output (…, P) (`mixture_blocks`):
    logits (…, M), means and log-scales (…, M, C), raw coefficients (…, M, C(C−1)/2)."""
    m = components
    # The leading axes as reshape takes them: an unknown one (a symbolic batch) as -1.
    shape = tuple(-1 if d is None else d for d in ops.shape(params)[:-1])
    logits, means, log_scales, coefficients = mixture_blocks(params, components, channels)
    return (logits, ops.reshape(means, shape + (m, channels)),
            ops.reshape(log_scales, shape + (m, channels)),
            ops.reshape(coefficients, shape + (m, channels * (channels - 1) // 2)))


def distribution_parameters(likelihood, params, channels, mixture_components=1):
    """The 8-bit decoders' parameters as one tensor laid out as the output (…, P): for the
    discretized logistic [μ (C) | log s (C)] (`logistic_parameters`), for the mixture its four
    blocks with the offset and clipping applied (`mixture_blocks`). What the exported
    decoder's `x_params` output holds."""
    if likelihood == "discretized_logistic":
        return ops.concatenate(logistic_parameters(params, channels), axis=-1)
    blocks = mixture_blocks(params, mixture_components, channels)
    return ops.concatenate(blocks if channels > 1 else blocks[:3], axis=-1)


def discretized_log_prob(likelihood, x, params, mixture_components=1, event_axes=3):
    """log P(x) of 8-bit images under a decoder output (…, H, W, P) of either 8-bit likelihood,
    summed over the last `event_axes` axes of x (…, H, W, C) (3: one image)."""
    channels = x.shape[-1]
    if likelihood == "discretized_logistic":
        return discretized_logistic_log_prob(x, *logistic_parameters(params, channels), event_axes)
    parameters = logistic_mixture_parameters(params, mixture_components, channels)
    return discretized_logistic_mixture_log_prob(x, *parameters, event_axes - 1)


def discretized_mean(likelihood, params, channels, mixture_components=1):
    """The pixels (…, H, W, C) in [0, 1] that stand for a decoder output of either 8-bit
    likelihood: the logistic's location, or the mixture's mean (`logistic_mixture_mean`)."""
    if likelihood == "discretized_logistic":
        return logistic_parameters(params, channels)[0]
    logits, means, _, coefficients = logistic_mixture_parameters(params, mixture_components, channels)
    return logistic_mixture_mean(logits, means, coefficients)
