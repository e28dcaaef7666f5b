"""The export↔serving contract, the NumPy likelihood estimator and the atomic writer,
checked against scipy and closed forms (no Keras)."""

import os

import numpy as np
import pytest
import scipy.special
import scipy.stats

from keras_vae.core import contract
from keras_vae.core import likelihood
from keras_vae.core.files import atomic_path
from keras_vae.core.files import is_temp_file
from keras_vae.core.files import remove_stale_temp_files
from keras_vae.core.files import write_bytes_atomic

RNG = np.random.default_rng(0)


def mixture(components=3, latent_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.random(components) + 0.1
    return contract.MixturePrior(weights / weights.sum(), rng.normal(size=(components, latent_dim)),
                                 rng.normal(scale=0.5, size=(components, latent_dim)))


def test_prior_round_trips_through_metadata_as_float32():
    prior = mixture()
    decoded = contract.decode_prior(contract.encode_prior(prior), latent_dim=2)
    for name in ("weights", "means", "log_vars"):
        expected = getattr(prior, name).astype(np.float32).astype(np.float64)
        if name == "weights":
            expected = expected / expected.sum()
        np.testing.assert_array_equal(getattr(decoded, name), expected)
    assert contract.decode_prior(None, latent_dim=2) is None


@pytest.mark.parametrize("value, message", [
    ('{"type": "vamp"}', "unknown prior type"),
    ('[1, 2]', "unknown prior type"),
    ('not json', "malformed prior metadata"),
    ('{"type": "mixture", "components": 0}', "components must be >= 1"),
    ('{"type": "mixture", "components": 2, "weights": "!!", "means": "", "log_vars": ""}',
     "malformed prior metadata"),
])
def test_malformed_prior_metadata_is_a_clear_error(value, message):
    with pytest.raises(ValueError, match=message):
        contract.decode_prior(value, latent_dim=2)


def test_prior_with_wrong_sizes_or_values_is_refused():
    text = contract.encode_prior(mixture(latent_dim=2))
    with pytest.raises(ValueError, match="malformed prior metadata"):
        contract.decode_prior(text, latent_dim=3)
    bad = mixture()
    bad = contract.MixturePrior(np.array([0.5, 0.5, np.nan]), bad.means, bad.log_vars)
    with pytest.raises(ValueError, match="NaN or infinite"):
        contract.decode_prior(contract.encode_prior(bad), latent_dim=2)


def test_draws_follow_the_standard_prior_and_the_seed():
    z = contract.draw_latents(20000, 3, seed=1, temperature=0.5)
    assert z.dtype == np.float32 and z.shape == (20000, 3)
    np.testing.assert_allclose(z.std(0), 0.5, rtol=0.03)
    epsilon = np.random.default_rng(1).standard_normal((20000, 3), dtype=np.float32)
    np.testing.assert_array_equal(z, epsilon * np.float32(0.5))


def test_draws_follow_the_mixture_weights_and_spreads():
    prior = contract.MixturePrior(np.array([0.25, 0.75]), np.array([[6.0], [-6.0]]),
                                  np.log(np.array([[0.04], [0.25]])))
    z = contract.draw_latents(40000, 1, prior, seed=0)[:, 0]
    first = z > 0
    assert abs(first.mean() - 0.25) < 0.01
    np.testing.assert_allclose([z[first].std(), z[~first].std()], [0.2, 0.5], rtol=0.03)
    # Kolmogorov-Smirnov against the mixture's CDF.
    cdf = lambda v: 0.25 * scipy.stats.norm.cdf(v, 6, 0.2) + 0.75 * scipy.stats.norm.cdf(v, -6, 0.5)
    assert scipy.stats.kstest(z, cdf).pvalue > 0.01


@pytest.mark.parametrize("temperature", [-0.1, 10.5, 1e308, float("nan"), float("inf"), "hot", None, True])
def test_temperatures_outside_the_contract_are_refused(temperature):
    with pytest.raises(ValueError, match="temperature must be a number from 0 to 10"):
        contract.draw_latents(2, 3, seed=0, temperature=temperature)


def test_largest_temperature_keeps_every_draw_finite():
    prior = contract.MixturePrior(np.array([1.0]), np.array([[1e3, -1e3]]), np.array([[10.0, 10.0]]))
    z = contract.draw_latents(10000, 2, prior, seed=0, temperature=contract.MAX_TEMPERATURE)
    assert np.isfinite(z).all()


@pytest.mark.parametrize("n, seed", [(0, 1), (-1, 1), (2.0, 1), (True, 1), (2, -1), (2, 1.5)])
def test_bad_counts_and_seeds_are_refused(n, seed):
    with pytest.raises(ValueError):
        contract.draw_latents(n, 3, seed=seed)


def test_prior_log_prob_matches_scipy():
    z = RNG.normal(size=(5, 4, 2))
    np.testing.assert_allclose(
        likelihood.prior_log_prob(z), scipy.stats.multivariate_normal(np.zeros(2)).logpdf(z), rtol=1e-10)
    prior = mixture()
    per_component = np.stack([
        scipy.stats.multivariate_normal(prior.means[c], np.diag(np.exp(prior.log_vars[c]))).logpdf(z)
        for c in range(3)])
    expected = scipy.special.logsumexp(per_component + np.log(prior.weights)[:, None, None], axis=0)
    np.testing.assert_allclose(likelihood.prior_log_prob(z, prior), expected, rtol=1e-10)


def test_log_mean_exp_matches_scipy_and_survives_large_values():
    values = RNG.normal(scale=50.0, size=(7, 3)) - 1000.0
    expected = scipy.special.logsumexp(values, axis=0) - np.log(7)
    np.testing.assert_allclose(likelihood.log_mean_exp(values, axis=0), expected, rtol=1e-12)
    np.testing.assert_allclose(likelihood.log_mean_exp(np.full((4, 1), -np.inf)), [-np.inf])


def test_pixel_log_probs_match_scipy():
    x = (RNG.random((3, 4, 4, 1)) < 0.5).astype("float32")
    p = RNG.random((3, 4, 4, 1)).astype("float32")
    expected = scipy.stats.bernoulli(p.astype(np.float64)).logpmf(x).sum((1, 2, 3))
    np.testing.assert_allclose(likelihood.bernoulli_log_prob(x, p), expected, rtol=1e-6)
    mean, log_var = RNG.normal(size=(3, 4, 4, 1)), RNG.normal(size=(4, 4, 1))
    expected = scipy.stats.norm(mean, np.exp(0.5 * log_var)).logpdf(x).sum((1, 2, 3))
    np.testing.assert_allclose(likelihood.gaussian_log_prob(x, mean, log_var), expected, rtol=1e-10)


@pytest.mark.parametrize("use_mixture", [False, True])
def test_estimator_matches_the_closed_form_of_a_linear_gaussian_model(use_mixture):
    # x = W z + b + σ·noise, with q(z|x) the exact posterior of the standard prior (a good,
    # not exact, proposal for the mixture): p(x) = Σ_c w_c N(W μ_c + b, W S_c Wᵀ + σ²I).
    latent_dim, pixels, sigma = 2, 9, 0.5
    weight, bias = RNG.normal(size=(pixels, latent_dim)), RNG.normal(size=pixels) * 0.1
    prior = mixture(2, latent_dim, seed=3) if use_mixture else None
    posterior_cov = np.linalg.inv(np.eye(latent_dim) + weight.T @ weight / sigma**2)

    def encode(x):
        flat = x.reshape(len(x), pixels)
        mean = (flat - bias) @ weight @ posterior_cov / sigma**2
        return mean, np.broadcast_to(np.log(np.diag(posterior_cov)), mean.shape)

    def log_px_given_z(x, z):
        mean = (z.astype(np.float64) @ weight.T + bias).reshape(z.shape[:2] + (3, 3, 1))
        return likelihood.gaussian_log_prob(x, mean, 2 * np.log(sigma))

    x = RNG.normal(size=(4, 3, 3, 1))
    components = [(np.zeros(latent_dim), np.eye(latent_dim), 1.0)] if prior is None else [
        (prior.means[c], np.diag(np.exp(prior.log_vars[c])), prior.weights[c]) for c in range(2)]
    exact = scipy.special.logsumexp([
        np.log(w) + scipy.stats.multivariate_normal(weight @ m + bias, weight @ s @ weight.T
                                                    + sigma**2 * np.eye(pixels)).logpdf(x.reshape(4, -1))
        for m, s, w in components], axis=0)
    estimate = likelihood.log_likelihood(x, encode, log_px_given_z, prior, num_samples=4000,
                                         batch_size=3, samples_per_chunk=700, seed=0)
    np.testing.assert_allclose(estimate, exact, atol=0.03)


def test_atomic_writes_keep_extensions_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "latest.weights.h5"
    with atomic_path(target) as temp:
        name = os.path.basename(temp)
        assert name.endswith(".tmp.weights.h5") and is_temp_file(name)
        open(temp, "wb").write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["latest.weights.h5"]
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        open(temp, "wb").write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["latest.weights.h5"]
    write_bytes_atomic(tmp_path / "a.png", b"png")
    (tmp_path / ".a.0123456789ab.tmp.png").write_bytes(b"left by a kill")
    assert remove_stale_temp_files(tmp_path) == [str(tmp_path / ".a.0123456789ab.tmp.png")]
    assert sorted(os.listdir(tmp_path)) == ["a.png", "latest.weights.h5"]


def test_decoder_variance_round_trips_through_metadata():
    def spread(value, shape=(2, 2, 1), likelihood="gaussian"):
        key = contract.DECODER_SPREAD_KEYS.get(likelihood, "none")
        return contract.decoder_spread({} if value is None else {key: value}, likelihood, shape)

    assert spread(contract.encode_decoder_log_var(-1.5)) == -1.5
    per_pixel = RNG.normal(size=(2, 2, 1))
    for likelihood in ("gaussian", "discretized_logistic"):
        decoded = spread(contract.encode_decoder_log_var(per_pixel), likelihood=likelihood)
        np.testing.assert_array_equal(decoded, per_pixel.astype(np.float32))
    assert spread(None) is None
    assert spread(contract.encode_decoder_log_var(-1.5), likelihood="bernoulli") is None
    with pytest.raises(ValueError, match="not the image shape"):
        spread(contract.encode_decoder_log_var(per_pixel), (4, 1, 1))
    with pytest.raises(ValueError, match="malformed decoder_log_var"):
        spread("NaN")
    with pytest.raises(ValueError, match="malformed decoder_log_scale"):
        spread("NaN", likelihood="discretized_logistic")
