"""Independent truth for the 8-bit likelihoods: probabilities from scipy's logistic CDF.

The discretized logistic gives level k of an 8-bit pixel the logistic's mass on the bin
[k − ½, k + ½]/255, open at 0 and 255; the coupled mixture (PixelCNN++) averages, over its
components, the product of its channels' discretized logistics, channel c's location shifted
by tanh(α)·x_j for every earlier channel j.
"""

import numpy as np
import scipy.special
import scipy.stats


def scipy_discretized_logistic(levels, mean, scale):
    """P(k) for k in `levels` from scipy's logistic CDF: the bin [k − ½, k + ½]/255, open at 0 and 255."""
    upper = np.where(levels == 255, np.inf, (levels + 0.5) / 255.0)
    lower = np.where(levels == 0, -np.inf, (levels - 0.5) / 255.0)
    logistic = scipy.stats.logistic(loc=mean, scale=scale)
    # Above the mean, a difference of survival functions keeps its precision.
    return np.where(lower > mean, logistic.sf(lower) - logistic.sf(upper),
                    logistic.cdf(upper) - logistic.cdf(lower))


def scipy_coupled_mixture(x_levels, logits, means, scales, coefficients):
    """P(pixel) under the coupled mixture from scipy's logistic CDF: levels (..., C) ints -> (...)."""
    x_levels = np.asarray(x_levels)
    channels = x_levels.shape[-1]
    x = x_levels / 255.0
    weights = scipy.special.softmax(logits)
    total = 0.0
    for k in range(len(weights)):
        probability, index = weights[k], 0
        for c in range(channels):
            location = means[k, c] + np.zeros(x.shape[:-1])
            for j in range(c):
                location = location + np.tanh(coefficients[k, index]) * x[..., j]
                index += 1
            probability = probability * scipy_discretized_logistic(x_levels[..., c], location, scales[k, c])
        total = total + probability
    return total


def split_mixture_output(params, components, channels):
    """The mixture's (logits, means, log-scales, coefficients) of one pixel's output (P,), read by
    the layout [logits (M) | means (M·C) | log-scales (M·C) | coefficients (M·C(C−1)/2)]."""
    m, c = components, channels
    logits = params[:m]
    means = params[m : m + m * c].reshape(m, c)
    log_scales = params[m + m * c : m + 2 * m * c].reshape(m, c)
    coefficients = params[m + 2 * m * c :].reshape(m, c * (c - 1) // 2)
    return logits, means, log_scales, coefficients


def image_log_prob(likelihood, levels, params, components=None):
    """log P of one 8-bit image (levels (H, W, C) ints) under a decoder's parameters (H, W, P),
    laid out as `keras_vae.core.contract.split_decoder_params` says: the sum over its pixels of
    the scipy probabilities above, in float64."""
    height, width, channels = levels.shape
    total = 0.0
    for i in range(height):
        for j in range(width):
            p = np.asarray(params[i, j], np.float64)
            if likelihood == "discretized_logistic":
                total += np.log(scipy_discretized_logistic(levels[i, j], p[:channels],
                                                           np.exp(p[channels:]))).sum()
            else:
                logits, means, log_scales, coefficients = split_mixture_output(p, components, channels)
                total += np.log(scipy_coupled_mixture(levels[i, j], logits, means, np.exp(log_scales),
                                                      coefficients))
    return total
