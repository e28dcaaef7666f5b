"""Distribution math against independent truth: scipy and numeric integration."""

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
from helpers.discretized_reference import scipy_coupled_mixture
from helpers.discretized_reference import scipy_discretized_logistic
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


# === The hierarchical VAE's math: KL between two Gaussians, the z-dependent and mixture logistics ===


def test_gaussian_kl_matches_numeric_integrals_and_its_numpy_twin():
    from keras_vae.core.likelihood import gaussian_kl as numpy_kl

    for mean_q, log_var_q, mean_p, log_var_p in [(0.0, 0.0, 0.0, 0.0), (1.5, -1.0, -0.5, 0.6),
                                                 (-0.7, 0.8, 0.3, -1.2)]:
        q = scipy.stats.norm(mean_q, np.exp(0.5 * log_var_q))
        p = scipy.stats.norm(mean_p, np.exp(0.5 * log_var_p))
        integral, _ = scipy.integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -40, 40)
        got = to_numpy(dist.gaussian_kl(*tensors([mean_q], [log_var_q], [mean_p], [log_var_p])))
        np.testing.assert_allclose(got, [integral], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(numpy_kl(mean_q, log_var_q, mean_p, log_var_p), integral, rtol=1e-9,
                                   atol=1e-12)
    # Against a standard normal it is the existing closed form, elementwise.
    mean, log_var = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    np.testing.assert_allclose(
        to_numpy(dist.gaussian_kl(*tensors(mean, log_var, np.zeros((3, 4)), np.zeros((3, 4))))).sum(-1),
        to_numpy(dist.gaussian_kl_to_standard_normal(*tensors(mean, log_var))), rtol=1e-5)


def test_discretized_logistic_with_a_scale_per_pixel_matches_scipy():
    # The hierarchical VAE's decoder gives every pixel its own location and log-scale.
    rng = np.random.default_rng(1)
    levels = rng.integers(0, 256, size=(2, 3, 3, 2))
    mean = rng.uniform(0, 1, levels.shape)
    scale = np.exp(rng.uniform(-5, -1, levels.shape))
    x, mean32, log_scale32 = (levels / 255.0).astype("float32"), mean.astype("float32"), \
        np.log(scale).astype("float32")
    got = to_numpy(dist.discretized_logistic_log_prob(*tensors(x, mean32, log_scale32), event_axes=3))
    expected = np.log(scipy_discretized_logistic(levels, mean32.astype("float64"),
                                                 np.exp(log_scale32.astype("float64")))).sum((1, 2, 3))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def mixture_parameters(rng, components, channels, shape=()):
    logits = rng.normal(size=shape + (components,))
    means = rng.uniform(0.1, 0.9, shape + (components, channels))
    log_scales = rng.uniform(-3.5, -2.0, shape + (components, channels))
    coefficients = rng.normal(size=shape + (components, channels * (channels - 1) // 2))
    return logits, means, log_scales, coefficients


def test_each_channel_of_the_coupled_mixture_is_a_distribution_over_256_levels():
    # Channel c's conditional P(x_c | x_<c) = P(x_≤c) / P(x_<c), where P(x_≤c) is the same
    # mixture on the first c + 1 channels (the coefficients of channel c come after those of
    # the channels before it). For any earlier levels, it sums to 1 over the 256 levels of
    # x_c and matches the ratio computed with scipy's logistic CDF.
    from keras_vae.core.likelihood import discretized_logistic_mixture_log_prob as numpy_log_prob

    rng = np.random.default_rng(2)
    logits, means, log_scales, coefficients = mixture_parameters(rng, 2, 3)

    def log_prob(levels, channels, numpy=False):  # levels (N, channels) -> (N,) over the first channels
        x = np.asarray(levels).reshape(-1, 1, 1, channels) / 255.0
        params = [np.broadcast_to(p, (len(x), 1, 1) + p.shape) for p in
                  (logits, means[:, :channels], log_scales[:, :channels],
                   coefficients[:, : channels * (channels - 1) // 2])]
        if numpy:
            return numpy_log_prob(x, *params)
        return to_numpy(dist.discretized_logistic_mixture_log_prob(*tensors(x, *params)))

    def scipy_prob(levels):
        channels = levels.shape[-1]
        return scipy_coupled_mixture(levels, logits, means[:, :channels], np.exp(log_scales[:, :channels]),
                                     coefficients[:, : channels * (channels - 1) // 2])

    for earlier in [(0, 0), (40, 200), (255, 128)]:
        for channel in range(3):
            prefix = tuple(earlier[:channel])
            levels = [prefix + (k,) for k in range(256)]
            reference = scipy_prob(np.array(levels)) / (scipy_prob(np.array(prefix)) if prefix else 1.0)
            assert reference.sum() == pytest.approx(1.0, abs=1e-9)
            prefix_log_prob = {False: 0.0, True: 0.0}
            if prefix:
                prefix_log_prob = {numpy: log_prob([prefix], channel, numpy)[0] for numpy in (False, True)}
            conditional64 = np.exp(log_prob(levels, channel + 1, True) - prefix_log_prob[True])
            assert conditional64.sum() == pytest.approx(1.0, abs=1e-9)
            np.testing.assert_allclose(conditional64, reference, rtol=1e-6, atol=1e-300)
            conditional = np.exp(log_prob(levels, channel + 1) - prefix_log_prob[False])
            assert conditional.sum() == pytest.approx(1.0, abs=1e-4)
            likely = reference > 1e-6
            np.testing.assert_allclose(np.log(conditional[likely]), np.log(reference[likely]),
                                       rtol=1e-3, atol=2e-3)


def test_the_coupled_mixture_sums_to_one_over_every_pair_of_levels():
    # Two channels, three components: the 65,536 joint probabilities of a pixel sum to 1.
    from keras_vae.core.likelihood import discretized_logistic_mixture_log_prob as numpy_log_prob

    rng = np.random.default_rng(3)
    params = mixture_parameters(rng, 3, 2)
    grid = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1).reshape(-1, 1, 1, 2)
    broadcast = [np.broadcast_to(p, (len(grid), 1, 1) + p.shape) for p in params]
    log_p64 = numpy_log_prob(grid / 255.0, *broadcast)
    assert np.exp(log_p64).sum() == pytest.approx(1.0, abs=1e-9)
    log_p = to_numpy(dist.discretized_logistic_mixture_log_prob(*tensors(grid / 255.0, *broadcast)))
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-4)
    for index in rng.integers(0, len(grid), 5):
        expected = scipy_coupled_mixture(grid[index, 0, 0], params[0], params[1],
                                         np.exp(params[2]), params[3])
        np.testing.assert_allclose(log_p64[index], np.log(expected), rtol=1e-6)


def test_coupled_mixture_sums_over_pixels_and_its_mean_is_in_range():
    rng = np.random.default_rng(4)
    logits, means, log_scales, coefficients = mixture_parameters(rng, 2, 3, (2, 3, 3))
    x = rng.integers(0, 256, (2, 3, 3, 3)) / 255.0
    got = to_numpy(dist.discretized_logistic_mixture_log_prob(
        *tensors(x, logits, means, log_scales, coefficients)))
    expected = [sum(np.log(scipy_coupled_mixture(np.round(x[b, i, j] * 255).astype(int),
                                                 logits[b, i, j], means[b, i, j],
                                                 np.exp(log_scales[b, i, j]), coefficients[b, i, j]))
                    for i in range(3) for j in range(3)) for b in range(2)]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    mean = to_numpy(dist.logistic_mixture_mean(*tensors(logits, means, coefficients)))
    assert mean.shape == (2, 3, 3, 3) and mean.min() >= 0.0 and mean.max() <= 1.0


def test_log_one_minus_exp_neg_is_accurate_in_float32_where_naive_forms_are_not():
    from keras_vae.models.distributions import log_one_minus_exp_neg

    delta = np.geomspace(1e-6, 40.0, 2001)
    exact = np.log(-np.expm1(-delta))  # float64
    got = ops.convert_to_numpy(log_one_minus_exp_neg(ops.convert_to_tensor(delta.astype("float32"))))
    np.testing.assert_allclose(got, exact, rtol=2e-6, atol=2e-6)
    naive = np.log(1.0 - np.exp(-delta.astype("float32")))  # what expm1-free code would do naively
    assert np.max(np.abs(naive - exact)[delta < 1e-3]) > 1e-3


# === The 8-bit output heads the family shares: a decoder's raw output (…, P) to probabilities ===


def pack_mixture_output(logits, means, log_scales, coefficients):
    """A mixture decoder's raw output (…, P) for these parameters, in the documented layout
    [logits (M) | means (M·C) | log-scales (M·C) | coefficients (M·C(C−1)/2)]; the head adds
    0.5 to the means, so the output holds means − 0.5."""
    lead = logits.shape[:-1]
    return np.concatenate([logits, (means - 0.5).reshape(lead + (-1,)), log_scales.reshape(lead + (-1,)),
                           coefficients.reshape(lead + (-1,))], axis=-1)


def test_a_logistic_output_head_gives_each_channel_256_levels_that_sum_to_one():
    # One pixel of three channels: the decoder's 2C outputs are the location (through a sigmoid)
    # and the log-scale (clipped to [-7, 0]). The channels are independent, so channel c's
    # probabilities are the image's divided by scipy's probabilities of the other two channels.
    from keras_vae.core.likelihood import decoder_params_log_prob

    rng = np.random.default_rng(5)
    raw = np.concatenate([rng.normal(size=3), [-2.5, 4.0, -9.0]])  # log-scales inside, above, below
    location = scipy.special.expit(raw[:3])
    scale = np.exp(np.clip(raw[3:], -7.0, 0.0))
    fixed = np.array([30, 200, 128])
    params64 = to_numpy(dist.distribution_parameters("discretized_logistic", *tensors(raw), 3))
    for channel in range(3):
        levels = np.repeat(fixed[None], 256, 0)
        levels[:, channel] = np.arange(256)
        x = (levels / 255.0).reshape(256, 1, 1, 3)
        others = sum(np.log(scipy_discretized_logistic(fixed[c], location[c], scale[c]))
                     for c in range(3) if c != channel)
        reference = scipy_discretized_logistic(np.arange(256), location[channel], scale[channel])
        assert reference.sum() == pytest.approx(1.0, abs=1e-12)
        out = np.broadcast_to(raw, (256, 1, 1, 6))
        log_p = to_numpy(dist.discretized_log_prob("discretized_logistic", *tensors(x, out)))
        conditional = np.exp(log_p - others)
        assert conditional.sum() == pytest.approx(1.0, abs=1e-4)
        likely = reference > 1e-6
        np.testing.assert_allclose(np.log(conditional[likely]), np.log(reference[likely]), atol=2e-3)
        # the NumPy twin, from the float32 parameters the export writes (x_params), in float64
        log_p64 = decoder_params_log_prob("discretized_logistic", x, np.broadcast_to(params64, (256, 1, 1, 6)))
        location64, scale64 = params64[:3], np.exp(params64[3:])
        np.testing.assert_allclose(location64, location, rtol=1e-6)
        np.testing.assert_allclose(scale64, scale, rtol=1e-6)
        others64 = sum(np.log(scipy_discretized_logistic(fixed[c], location64[c], scale64[c]))
                       for c in range(3) if c != channel)
        conditional64 = np.exp(log_p64 - others64)
        assert conditional64.sum() == pytest.approx(1.0, abs=1e-9)
        reference64 = scipy_discretized_logistic(np.arange(256), location64[channel], scale64[channel])
        np.testing.assert_allclose(conditional64[likely], reference64[likely], rtol=1e-6)


def test_a_mixture_output_head_gives_each_channel_256_levels_that_sum_to_one():
    # Channel c's conditional is P(x_≤c) / P(x_<c), each the mixture on the first channels,
    # packed into an output of that many channels. Through the head (offset means, clipped
    # log-scales) and through the NumPy twin of the exported parameters, against scipy.
    from keras_vae.core.likelihood import decoder_params_log_prob

    rng = np.random.default_rng(6)
    logits, means, log_scales, coefficients = mixture_parameters(rng, 3, 3)

    def log_prob(levels, channels, numpy=False):  # levels (N, channels) -> (N,)
        out = pack_mixture_output(logits, means[:, :channels], log_scales[:, :channels],
                                  coefficients[:, : channels * (channels - 1) // 2])
        x = np.asarray(levels).reshape(-1, 1, 1, channels) / 255.0
        out = np.broadcast_to(out, (len(x), 1, 1, out.shape[-1]))
        if not numpy:
            return to_numpy(dist.discretized_log_prob("logistic_mixture", *tensors(x, out), 3))
        params = to_numpy(dist.distribution_parameters("logistic_mixture", *tensors(out), channels, 3))
        return decoder_params_log_prob("logistic_mixture", x, params, 3)

    def scipy_prob(levels):
        channels = levels.shape[-1]
        return scipy_coupled_mixture(levels, logits, means[:, :channels], np.exp(log_scales[:, :channels]),
                                     coefficients[:, : channels * (channels - 1) // 2])

    for earlier in [(0, 0), (90, 17), (255, 255)]:
        for channel in range(3):
            prefix = tuple(earlier[:channel])
            levels = np.array([prefix + (k,) for k in range(256)])
            reference = scipy_prob(levels) / (scipy_prob(np.array(prefix)) if prefix else 1.0)
            for numpy, atol in ((False, 1e-4), (True, 1e-6)):
                before = log_prob([prefix], channel, numpy)[0] if prefix else 0.0
                conditional = np.exp(log_prob(levels, channel + 1, numpy) - before)
                assert conditional.sum() == pytest.approx(1.0, abs=atol)
                likely = reference > 1e-6
                # the twin is float64, but from the head's float32 parameters (means + 0.5)
                np.testing.assert_allclose(np.log(conditional[likely]), np.log(reference[likely]),
                                           atol=2e-3 if not numpy else 1e-5)


def test_the_exported_parameters_are_the_heads_and_the_contract_reads_them_back():
    from keras_vae.core import contract

    rng = np.random.default_rng(7)
    raw = rng.normal(scale=4.0, size=(2, 3, 3, 2 * 3)).astype("float32")
    location, log_scale = contract.split_decoder_params(
        "discretized_logistic", to_numpy(dist.distribution_parameters("discretized_logistic", *tensors(raw), 3)), 3)
    np.testing.assert_allclose(location, scipy.special.expit(raw[..., :3]), rtol=1e-6)
    np.testing.assert_allclose(log_scale, np.clip(raw[..., 3:], -7.0, 0.0), rtol=1e-6)
    for channels in (1, 3):
        out = rng.normal(scale=4.0, size=(2, 3, 3, dist.params_per_pixel("logistic_mixture", channels, 4)))
        heads = [to_numpy(p) for p in dist.logistic_mixture_parameters(*tensors(out), 4, channels)]
        exported = to_numpy(dist.distribution_parameters("logistic_mixture", *tensors(out), channels, 4))
        assert exported.shape == out.shape
        read = contract.split_decoder_params("logistic_mixture", exported, channels, 4)
        for got, want in zip(read, heads):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        # the heads: means offset by 0.5, log-scales clipped, logits and coefficients as they are
        expected = [out[..., :4], out[..., 4 : 4 + 4 * channels] + 0.5,
                    np.clip(out[..., 4 + 4 * channels : 4 + 8 * channels], -7.0, 0.0), out[..., 4 + 8 * channels :]]
        for got, want in zip(read, expected):
            np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs 30 values per pixel, got 29"):
        contract.split_decoder_params("logistic_mixture", np.zeros((1, 29)), 3, 3)
