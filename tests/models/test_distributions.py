"""Distribution math against independent truth: scipy and numeric integration."""

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
from keras import ops

from keras_vae.models import distributions as dist

pytestmark = pytest.mark.backend

RNG = np.random.default_rng(0)


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def tensors(*arrays):
    """The functions take backend tensors, as the model passes them."""
    return [ops.convert_to_tensor(np.asarray(a, dtype="float32")) for a in arrays]


def test_kl_matches_numeric_integral_in_one_dimension():
    for mean, log_var in [(0.0, 0.0), (1.5, -1.0), (-0.7, 0.8)]:
        q = scipy.stats.norm(mean, np.exp(0.5 * log_var))
        p = scipy.stats.norm(0.0, 1.0)
        integral, _ = scipy.integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -30, 30)
        got = to_numpy(dist.gaussian_kl_to_standard_normal(*tensors([[mean]], [[log_var]])))
        np.testing.assert_allclose(got, [integral], rtol=1e-5, atol=1e-6)


def test_kl_sums_over_latent_dimensions_and_matches_monte_carlo():
    mean = RNG.normal(size=(3, 4)).astype("float32")
    log_var = RNG.normal(size=(3, 4)).astype("float32")
    got = to_numpy(dist.gaussian_kl_to_standard_normal(*tensors(mean, log_var)))
    std = np.exp(0.5 * log_var)
    z = mean + std * RNG.standard_normal((200_000, 3, 4))
    log_q = scipy.stats.norm(mean, std).logpdf(z).sum(-1)
    log_p = scipy.stats.norm(0, 1).logpdf(z).sum(-1)
    np.testing.assert_allclose(got, (log_q - log_p).mean(0), rtol=0.02, atol=0.02)
    assert got.shape == (3,)


def test_diagonal_gaussian_log_prob_matches_scipy():
    x = RNG.normal(size=(5, 2, 3)).astype("float32")
    mean = RNG.normal(size=(5, 2, 3)).astype("float32")
    log_var = RNG.normal(size=(5, 2, 3)).astype("float32")
    expected = scipy.stats.norm(mean, np.exp(0.5 * log_var)).logpdf(x).sum(axis=(1, 2))
    got = to_numpy(dist.diagonal_gaussian_log_prob(*tensors(x, mean, log_var), event_axes=2))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_standard_normal_log_prob_matches_scipy():
    z = RNG.normal(size=(6, 4)).astype("float32")
    expected = scipy.stats.multivariate_normal(np.zeros(4), np.eye(4)).logpdf(z)
    np.testing.assert_allclose(to_numpy(dist.standard_normal_log_prob(*tensors(z))), expected, rtol=1e-5)


def test_gaussian_mixture_log_prob_matches_scipy():
    components, latent_dim = 5, 3
    means = RNG.normal(scale=2.0, size=(components, latent_dim)).astype("float32")
    log_vars = RNG.normal(scale=0.5, size=(components, latent_dim)).astype("float32")
    logits = RNG.normal(size=(components,)).astype("float32")
    z = RNG.normal(scale=2.0, size=(4, 6, latent_dim)).astype("float32")
    log_weights = scipy.special.log_softmax(logits.astype("float64"))
    per_component = np.stack(
        [
            scipy.stats.multivariate_normal(means[c], np.diag(np.exp(log_vars[c]))).logpdf(z)
            for c in range(components)
        ],
        axis=-1,
    )  # (4, 6, C)
    expected = scipy.special.logsumexp(per_component + log_weights, axis=-1)
    got = to_numpy(dist.gaussian_mixture_log_prob(*tensors(z, means, log_vars, logits)))
    assert got.shape == (4, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_one_component_standard_mixture_is_the_standard_normal():
    z = RNG.normal(size=(7, 4)).astype("float32")
    got = to_numpy(dist.gaussian_mixture_log_prob(*tensors(z, np.zeros((1, 4)), np.zeros((1, 4)), [3.0])))
    np.testing.assert_allclose(got, to_numpy(dist.standard_normal_log_prob(*tensors(z))), rtol=1e-6)


def test_bernoulli_log_prob_matches_scipy_and_is_stable():
    logits = RNG.normal(scale=3.0, size=(4, 10)).astype("float32")
    x = (RNG.random((4, 10)) < 0.5).astype("float32")
    expected = scipy.stats.bernoulli(scipy.special.expit(logits.astype("float64"))).logpmf(x).sum(-1)
    got = to_numpy(dist.bernoulli_log_prob_from_logits(*tensors(x, logits)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Saturated logits: clipped probabilities would give -inf or lose all precision.
    extreme = to_numpy(dist.bernoulli_log_prob_from_logits(*tensors([[1.0, 0.0]], [[-100.0, 100.0]])))
    np.testing.assert_allclose(extreme, [-200.0], rtol=1e-6)


def test_reparameterize_has_the_requested_moments():
    import keras

    mean = np.full((1, 3), 2.0, "float32")
    log_var = np.log(np.full((1, 3), 0.25, "float32"))
    z = to_numpy(dist.reparameterize(*tensors(mean, log_var), keras.random.SeedGenerator(1),
                                     num_samples=20_000))
    assert z.shape == (20_000, 1, 3)
    np.testing.assert_allclose(z.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(z.std(0), 0.5, atol=0.02)


def scipy_discretized_logistic(levels, mean, scale):
    """P(k) for k in `levels` from scipy's logistic CDF: the bin [k − ½, k + ½]/255, open at 0 and 255."""
    upper = np.where(levels == 255, np.inf, (levels + 0.5) / 255.0)
    lower = np.where(levels == 0, -np.inf, (levels - 0.5) / 255.0)
    logistic = scipy.stats.logistic(loc=mean, scale=scale)
    # Above the mean, a difference of survival functions keeps its precision.
    return np.where(lower > mean, logistic.sf(lower) - logistic.sf(upper),
                    logistic.cdf(upper) - logistic.cdf(lower))


@pytest.mark.parametrize("mean, scale", [(0.5, 0.1), (0.02, 0.01), (0.97, 0.003), (-0.2, 0.05),
                                         (0.3, 0.0005), (1.3, 0.2)])
def test_discretized_logistic_probabilities_sum_to_one_and_match_scipy(mean, scale):
    from keras_vae.core.likelihood import discretized_logistic_log_prob as numpy_log_prob

    levels = np.arange(256)
    x = (levels / 255.0).reshape(256, 1, 1, 1).astype("float32")
    means = np.full_like(x, mean)
    log_scales = np.full_like(x, np.log(scale))
    log_p = to_numpy(dist.discretized_logistic_log_prob(*tensors(x, means, log_scales),
                                                        event_axes=3))  # (256,)
    assert np.exp(log_p.astype("float64")).sum() == pytest.approx(1.0, abs=1e-4)
    # The reference takes the float32 parameters the functions see.
    reference = scipy_discretized_logistic(levels, float(means[0, 0, 0, 0]),
                                           float(np.exp(log_scales[0, 0, 0, 0].astype("float64"))))
    likely = reference > 1e-6  # float32 sigmoids resolve these bins
    np.testing.assert_allclose(log_p[likely], np.log(reference[likely]), atol=2e-3, rtol=1e-3)
    # The NumPy twin (serving's scoring of the exported decoder) is exact in float64.
    log_p64 = numpy_log_prob(x, means, log_scales)
    assert np.exp(log_p64).sum() == pytest.approx(1.0, abs=1e-9)
    positive = reference > 1e-300
    np.testing.assert_allclose(log_p64[positive], np.log(reference[positive]), rtol=1e-6)


def test_discretized_logistic_rounds_to_the_nearest_level_and_sums_over_pixels():
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, size=(3, 4, 4, 3))
    x = (levels / 255.0 + rng.uniform(-0.4, 0.4, levels.shape) / 255.0).astype("float32")
    mean = rng.uniform(0, 1, levels.shape).astype("float32")
    scale = np.float32(0.05)
    log_p = to_numpy(dist.discretized_logistic_log_prob(
        *tensors(x, mean, np.full_like(x, np.log(scale))), event_axes=3))
    expected = np.log(scipy_discretized_logistic(levels, mean, scale)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(log_p, expected, rtol=1e-4)
