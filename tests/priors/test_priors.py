"""keras_vae.priors: the Gaussian mixture, the flow and the diffusion prior, on every backend.

Each is checked against an independent truth: the mixture's samples against the moments of
scikit-learn's fit, the flow's log-density against the change of variables with a numerical
Jacobian (and against its integral over the plane), the diffusion model's samples against its
data; the flow and the diffusion model train with `fit` under each backend.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.backend

import keras  # noqa: E402

from keras_vae.core import fitted_prior  # noqa: E402
from keras_vae.priors import fit_diffusion, fit_flow, fit_gmm, load_prior  # noqa: E402
from keras_vae.priors.fitting import fit_prior  # noqa: E402


def blobs(n=2000, seed=0):
    """(n, 2) float32: two elongated Gaussian blobs, weights 0.3 and 0.7."""
    rng = np.random.default_rng(seed)
    first = rng.random(n) < 0.3
    a = rng.normal(0, 1, (n, 2)) @ np.array([[0.6, 0.2], [0.0, 0.3]]) + [-2.0, 1.0]
    b = rng.normal(0, 1, (n, 2)) @ np.array([[0.3, -0.25], [0.0, 0.5]]) + [1.5, -0.5]
    return np.where(first[:, None], a, b).astype(np.float32)


def mixture_moments(weights, means, covariances):
    mean = weights @ means
    second = np.einsum("c,cij->ij", weights, covariances + np.einsum("ci,cj->cij", means, means))
    return mean, second - np.outer(mean, mean)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied", "spherical"])
def test_the_mixtures_samples_have_scikit_learns_moments(covariance_type):
    from sklearn.mixture import GaussianMixture

    data = blobs()
    prior = fit_gmm(data, components=3, covariance_type=covariance_type, seed=1)
    reference = GaussianMixture(3, covariance_type=covariance_type, random_state=1,
                                reg_covar=1e-6).fit(data.astype(np.float64))
    covariances = reference.covariances_
    full = {"full": lambda: covariances, "tied": lambda: np.broadcast_to(covariances, (3, 2, 2)),
            "diag": lambda: np.stack([np.diag(v) for v in covariances]),
            "spherical": lambda: np.stack([np.eye(2) * v for v in covariances])}[covariance_type]()
    np.testing.assert_allclose(prior.fitted_prior().weights, reference.weights_, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(prior.means), reference.means_, atol=1e-5)
    np.testing.assert_allclose(prior.covariances(), full, atol=1e-5)
    z = prior.sample_latents(40_000, seed=3)
    mean, covariance = mixture_moments(reference.weights_, reference.means_, full)
    np.testing.assert_allclose(z.mean(axis=0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(z, rowvar=False), covariance, atol=0.05)
    sk_samples, _ = reference.sample(40_000)  # scikit-learn's own sampler, the same moments
    np.testing.assert_allclose(z.mean(axis=0), sk_samples.mean(axis=0), atol=0.04)
    # each sample comes from the component the loop picked: z = μ_c + L_c·ε
    epsilon = np.random.default_rng(3).standard_normal((40_000, 2), dtype=np.float32)
    z1 = prior.sample_latents(40_000, seed=3)
    assert np.array_equal(z, z1)
    component = np.random.default_rng(3)
    component.standard_normal((40_000, 2), dtype=np.float32)
    picked = component.choice(3, size=40_000, p=prior.fitted_prior().weights)
    tril = np.linalg.cholesky(full)
    np.testing.assert_allclose(z, reference.means_[picked] + np.einsum("nij,nj->ni", tril[picked], epsilon),
                               atol=1e-4)


def numerical_log_det(to_noise, z, h=1e-3):
    """log|det ∂ε/∂z| of each row of z (n, d) by central differences, float64."""
    n, d = z.shape
    jacobian = np.zeros((n, d, d))
    for j in range(d):
        step = np.zeros(d, np.float32)
        step[j] = h
        plus = np.asarray(keras.ops.convert_to_numpy(to_noise(z + step)), np.float64)
        minus = np.asarray(keras.ops.convert_to_numpy(to_noise(z - step)), np.float64)
        jacobian[:, :, j] = (plus - minus) / (2 * h)
    return np.linalg.slogdet(jacobian)[1]


def test_the_flow_trains_and_its_log_density_is_the_change_of_variables():
    data = blobs()
    prior = fit_flow(data, layers=4, units=32, epochs=6, batch_size=128, lr=3e-3, seed=0)
    assert prior.fit_info["backend"] == keras.backend.backend()
    z = data[:40]
    epsilon = np.asarray(keras.ops.convert_to_numpy(prior.to_noise(z)[0]), np.float64)
    log_det = numerical_log_det(lambda v: prior.to_noise(v)[0], z)
    want = -0.5 * np.sum(epsilon**2, axis=1) - math.log(2 * math.pi) + log_det
    got = np.asarray(keras.ops.convert_to_numpy(prior.log_prob(z)), np.float64)
    # central differences of a float32 network: about 1e-3 of rounding and curvature error per
    # row (a missing or misplaced log-det term is off by far more than 0.01)
    np.testing.assert_allclose(got, want, atol=1e-2)
    assert np.std(log_det) > 0.05  # the flow is not a mere affine map after training
    # a density: it integrates to 1 over the plane (a grid around the data)
    side = np.linspace(-7, 7, 281, dtype=np.float32)
    grid = np.stack(np.meshgrid(side, side), -1).reshape(-1, 2)
    density = np.exp(np.asarray(keras.ops.convert_to_numpy(prior.log_prob(grid)), np.float64))
    assert abs(density.sum() * (side[1] - side[0]) ** 2 - 1) < 0.02
    # it fits its data better than the Gaussian of the same mean and covariance
    mean, cov = data.mean(0), np.cov(data, rowvar=False)
    centred = data - mean
    gaussian = -0.5 * np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred) - 0.5 * (
        np.linalg.slogdet(2 * np.pi * cov)[1])
    assert float(np.mean(keras.ops.convert_to_numpy(prior.log_prob(data)))) > gaussian.mean() + 0.2
    # the graph (ε -> z) inverts to_noise
    back = np.asarray(keras.ops.convert_to_numpy(prior.graph(keras.ops.convert_to_tensor(epsilon.astype("float32")))))
    np.testing.assert_allclose(back, z, atol=1e-4)


def test_the_diffusion_prior_trains_with_fit_and_samples_its_data():
    data = blobs(4000)
    prior = fit_diffusion(data, units=64, blocks=2, embedding=16, train_steps=200, steps=40,
                          epochs=25, batch_size=128, lr=2e-3, seed=0)
    history_loss = prior.fit_info["train_loss"]
    assert history_loss < 0.75  # from about 1 (noise alone) at the start
    z = prior.sample_latents(2000, seed=1)
    assert np.all(np.isfinite(z))
    near_a = np.linalg.norm(z - [-2.0, 1.0], axis=1) < 1.5
    near_b = np.linalg.norm(z - [1.5, -0.5], axis=1) < 1.5
    assert (near_a | near_b).mean() > 0.8  # in the blobs, where N(0, I) puts few
    assert 0.15 < near_a.mean() < 0.45  # both blobs, roughly at their weights
    standard = np.random.default_rng(1).standard_normal((2000, 2)) * data.std(0) + data.mean(0)
    assert (near_a | near_b).mean() > (np.linalg.norm(standard - [-2.0, 1.0], axis=1) < 1.5).mean() + (
        np.linalg.norm(standard - [1.5, -0.5], axis=1) < 1.5).mean() - 0.2


@pytest.mark.parametrize("kind, options", [
    ("gmm", {"components": 2}),
    ("flow", {"layers": 2, "units": 16, "epochs": 1}),
    ("diffusion", {"units": 16, "blocks": 1, "embedding": 8, "train_steps": 50, "steps": 5, "epochs": 1}),
])
def test_a_saved_prior_loads_and_draws_the_same_z(tmp_path, kind, options):
    prior = fit_prior(blobs(300), kind, seed=0, fit={"images": 300}, **options)
    path = prior.save_prior(str(tmp_path / f"{kind}.keras"))
    loaded = load_prior(path)
    assert type(loaded) is type(prior) and loaded.fit_info["images"] == 300
    assert loaded.fit_info["cpu_seconds"] >= 0 and loaded.kind == kind
    np.testing.assert_allclose(loaded.sample_latents(9, seed=4, temperature=0.7),
                               prior.sample_latents(9, seed=4, temperature=0.7), atol=1e-6)
    spec = loaded.fitted_prior()
    assert fitted_prior.decode_fitted_prior(fitted_prior.encode_fitted_prior(spec)).kind == kind
    with pytest.raises(ValueError, match="not a fitted prior|could not load"):
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]).save(str(tmp_path / "other.keras"))
        load_prior(str(tmp_path / "other.keras"))
