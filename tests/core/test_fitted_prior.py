"""keras_vae.core.fitted_prior: the metadata of prior.onnx, and the sampling loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_vae.core import contract, fitted_prior, hierarchy

GROUPS = (hierarchy.LatentGroup("group_0", (3,)), hierarchy.LatentGroup("group_1", (2, 2, 1)))


def gaussian_diffusion(sigma, train_steps=1000, steps=50, eta=0.0, dim=2):
    """A diffusion prior over standardized data N(0, σ² I), whose exact noise estimate is known:
    x_t ~ N(0, (ᾱσ² + 1 − ᾱ) I), so E[ε | x_t] = √(1 − ᾱ)·x_t / (ᾱσ² + 1 − ᾱ)."""
    alphas = fitted_prior.linear_alphas_cumprod(train_steps)
    schedule = fitted_prior.DiffusionSchedule(alphas, steps, eta, np.full(dim, 3.0), np.full(dim, 2.0))
    prior = fitted_prior.FittedPrior("diffusion", dim, schedule=schedule)

    def run(inputs):
        a = alphas[inputs["t"]][:, None]
        return (np.sqrt(1 - a) * inputs["x"] / (a * sigma**2 + 1 - a)).astype(np.float32)
    return prior, run


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_diffusion_loop_samples_a_gaussian_with_its_exact_denoiser(eta):
    """DDIM (η = 0) and DDPM's ancestral sampler (η = 1), with every step, end at the data's
    N(0, σ²), mapped by shift 3 and scale 2: mean 3, standard deviation 2σ; with fewer steps
    DDIM's discretization shrinks the spread."""
    prior, run = gaussian_diffusion(0.5, steps=1000, eta=eta)
    z = fitted_prior.draw_fitted(prior, 8000, 2, run, seed=0)
    assert np.allclose(z.mean(axis=0), 3.0, atol=0.04)
    assert np.allclose(z.std(axis=0), 1.0, rtol=0.025)
    coarse, _ = gaussian_diffusion(0.5, steps=20, eta=eta)
    assert np.all(fitted_prior.draw_fitted(coarse, 8000, 2, run, seed=0).std(axis=0) < 0.95)


def test_ddim_without_eta_is_deterministic_given_the_noise_and_eta_draws_more():
    prior, run = gaussian_diffusion(0.7, steps=20)
    calls = []
    z = fitted_prior.draw_fitted(prior, 5, 2, lambda i: calls.append(i["t"][0]) or run(i), seed=1)
    assert calls == list(fitted_prior.ddim_timesteps(1000, 20))
    assert calls[0] == 999 and calls[-1] == 0 and len(set(calls)) == 20
    # η = 0 uses only ε: the same first draws as the standard prior's T·ε
    epsilon = contract.draw_latents(5, 2, None, seed=1)
    assert np.array_equal(z, fitted_prior.draw_fitted(prior, 5, 2, run, seed=1))
    x = epsilon.astype(np.float64)
    for i, step in enumerate(calls):  # the update, written out independently
        a = fitted_prior.linear_alphas_cumprod(1000)[step]
        a_next = fitted_prior.linear_alphas_cumprod(1000)[calls[i + 1]] if i + 1 < len(calls) else 1.0
        e = run({"x": x.astype(np.float32), "t": np.full(5, step)}).astype(np.float64)
        x = np.sqrt(a_next) * (x - np.sqrt(1 - a) * e) / np.sqrt(a) + np.sqrt(1 - a_next) * e
    assert np.allclose(z, 3.0 + 2.0 * x, atol=1e-5)
    noisy, _ = gaussian_diffusion(0.7, steps=20, eta=1.0)
    assert not np.allclose(fitted_prior.draw_fitted(noisy, 5, 2, run, seed=1), z)


def test_gmm_loop_picks_components_as_draw_latents_picks_a_learned_mixtures():
    """With diagonal factors, the mixture's z is draw_latents' for the same mixture, seed and T."""
    rng = np.random.default_rng(0)
    weights, means, log_vars = rng.random(4) + 0.1, rng.normal(0, 2, (4, 3)), rng.normal(0, 0.5, (4, 3))
    weights /= weights.sum()
    prior = fitted_prior.FittedPrior("gmm", 3, weights=weights)
    std = np.exp(0.5 * log_vars)

    def run(inputs):
        c = inputs["component"]
        return (means[c] + std[c] * inputs["epsilon"]).astype(np.float32)
    for seed, t in ((0, 1.0), (5, 0.3), (2**40 + 5, 2.0)):
        want = contract.draw_latents(500, 3, contract.MixturePrior(weights, means, log_vars), seed, t)
        got = fitted_prior.draw_fitted(prior, 500, 3, run, seed=seed, temperature=t)
        assert np.allclose(got, want, atol=1e-5)


def test_hierarchical_prior_fills_the_top_group_and_keeps_the_other_noise():
    prior = fitted_prior.FittedPrior("flow", 3)
    run = lambda inputs: 10.0 + inputs["epsilon"]  # noqa: E731
    z = fitted_prior.draw_fitted(prior, 6, 7, run, seed=4, temperature=0.5, groups=GROUPS,
                                 temperatures=[2.0, 0.3])
    noise = hierarchy.draw_noise(6, GROUPS, seed=4, temperature=0.5, temperatures=[2.0, 0.3])
    assert np.array_equal(z[:, 3:], noise[:, 3:])  # the lower group: draw_noise's bytes
    assert np.allclose(z[:, :3], 10.0 + noise[:, :3])  # the top group: the prior of T·T_1·ε
    with pytest.raises(ValueError, match="top latent group group_0, 3"):
        fitted_prior.draw_fitted(fitted_prior.FittedPrior("flow", 7), 2, 7, run, groups=GROUPS)
    with pytest.raises(ValueError, match="latent_dim, 5"):
        fitted_prior.draw_fitted(prior, 2, 5, run)


@pytest.mark.parametrize("n, seed, t, message", [
    (0, 0, 1.0, "n must be"), (2, -1, 1.0, "seed must be"), (2, 0, 11.0, "temperature must be"),
    (2, 0.5, 1.0, "seed must be")])
def test_bad_draws_are_refused(n, seed, t, message):
    with pytest.raises(ValueError, match=message):
        fitted_prior.draw_fitted(fitted_prior.FittedPrior("flow", 2), n, 2, lambda i: i["epsilon"],
                                 seed=seed, temperature=t)


def test_metadata_round_trips_every_kind():
    schedule = fitted_prior.DiffusionSchedule(fitted_prior.linear_alphas_cumprod(30), 7, 0.5,
                                              np.arange(3.0), np.ones(3) * 0.1 + 1 / 3)
    for prior in (fitted_prior.FittedPrior("flow", 3, fit={"images": 5}),
                  fitted_prior.FittedPrior("gmm", 3, weights=np.array([0.25, 0.75])),
                  fitted_prior.FittedPrior("diffusion", 3, schedule=schedule)):
        entries = fitted_prior.encode_fitted_prior(prior)
        assert all(isinstance(v, str) for v in entries.values())
        back = fitted_prior.decode_fitted_prior(entries)
        assert (back.kind, back.dim, back.fit) == (prior.kind, prior.dim, prior.fit)
        if prior.weights is not None:
            assert np.array_equal(back.weights, prior.weights)
        if prior.schedule is not None:  # float64, bit for bit
            for name in ("alphas_cumprod", "shift", "scale"):
                assert np.array_equal(getattr(back.schedule, name), getattr(schedule, name))
            assert np.array_equal(back.schedule.timesteps(), [29, 24, 19, 14, 10, 5, 0])


def _diffusion_entries(**changes):
    schedule = fitted_prior.DiffusionSchedule(fitted_prior.linear_alphas_cumprod(10), 5, 0.0,
                                              np.zeros(2), np.ones(2))
    entries = fitted_prior.encode_fitted_prior(fitted_prior.FittedPrior("diffusion", 2, schedule=schedule))
    spec = json.loads(entries["diffusion"])
    spec.update(changes)
    return dict(entries, diffusion=json.dumps(spec))


@pytest.mark.parametrize("entries, message", [
    ({"fitted_prior": "vae", "fitted_prior_dim": "2"}, "must be one of gmm, flow, diffusion"),
    ({"fitted_prior": "flow", "fitted_prior_dim": "0"}, "positive integer"),
    ({"fitted_prior": "flow", "fitted_prior_dim": "2.5"}, "positive integer"),
    ({"fitted_prior": "flow", "fitted_prior_dim": "2", "fitted_prior_fit": "[1]"}, "JSON object"),
    ({"fitted_prior": "gmm", "fitted_prior_dim": "2"}, "gmm_weights"),
    ({"fitted_prior": "gmm", "fitted_prior_dim": "2", "gmm_weights": "[1, -2]"}, ">= 0"),
    ({"fitted_prior": "gmm", "fitted_prior_dim": "2", "gmm_weights": "[]"}, "non-empty"),
    ({"fitted_prior": "diffusion", "fitted_prior_dim": "2"}, "diffusion"),
    (_diffusion_entries(steps=11), "steps must be from 1 to train_steps = 10"),
    (_diffusion_entries(eta=2), "eta must be in"),
    (_diffusion_entries(shift="AAAA"), "shift has"),
    (_diffusion_entries(alphas_cumprod="!!"), "diffusion"),
])
def test_malformed_metadata_is_refused_naming_the_problem(entries, message):
    with pytest.raises(ValueError, match="malformed fitted prior metadata") as info:
        fitted_prior.decode_fitted_prior(entries)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_timesteps_run_down_evenly_and_coefficients_match_ddpm_at_eta_1():
    assert list(fitted_prior.ddim_timesteps(1000, 1)) == [999]
    assert list(fitted_prior.ddim_timesteps(10, 10)) == list(range(9, -1, -1))
    with pytest.raises(ValueError):
        fitted_prior.ddim_timesteps(10, 11)
    alphas = fitted_prior.linear_alphas_cumprod(1000)
    a, a_prev = alphas[500], alphas[499]
    keep, direction, sigma = fitted_prior.ddim_coefficients(a, a_prev, 1.0)
    beta = 1 - a / a_prev  # DDPM's posterior variance β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
    assert np.isclose(sigma**2, beta * (1 - a_prev) / (1 - a))
    assert keep == np.sqrt(a_prev) and np.isclose(direction**2 + sigma**2, 1 - a_prev)
