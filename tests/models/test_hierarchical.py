"""The hierarchical VAE on the current backend: fit, clip/skip, saving across backends,
the importance-sampled log p(x) against a closed form, and option errors."""

import json

import numpy as np
import pytest
import scipy.stats

import keras
from keras import ops

from helpers.processes import run_python
from keras_vae.models.hierarchical import HierarchicalVAE
from keras_vae.models.trainers import gradient_guard

pytestmark = pytest.mark.backend

RNG = np.random.default_rng(0)
BINARY = (RNG.random((32, 8, 8, 1)) < 0.4).astype("float32")
EIGHT_BIT = np.round(RNG.random((32, 8, 8, 3)) * 255) / 255
NEXT_BACKEND = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}


def tiny(**kwargs):
    options = dict(input_shape=(8, 8, 1), num_groups=2, latent_dim=3, width=16, seed=0)
    options.update(kwargs)
    return HierarchicalVAE(**options)


def tiny_conv(**kwargs):
    return tiny(**dict(dict(input_shape=(8, 8, 3), architecture="conv", width=8, latent_dim=2,
                            likelihood="logistic_mixture", mixture_components=2), **kwargs))


def weights_and_optimizer_state(model):
    return [np.array(ops.convert_to_numpy(v)) for v in model.trainable_variables + model.optimizer.variables]


@pytest.mark.parametrize("make,data", [
    (lambda: tiny(num_groups=3, free_bits=0.1, kl_warmup_steps=4), BINARY),
    (lambda: tiny_conv(num_groups=3), EIGHT_BIT),
])
def test_fit_reports_finite_losses_and_the_kl_of_every_group(make, data):
    model = make()
    model.compile(optimizer="adam")
    history = model.fit(data, epochs=2, batch_size=16, verbose=0).history
    keys = {"loss", "reconstruction_loss", "kl_loss"} | {f"kl_group_{l}" for l in range(model.num_groups)}
    assert keys <= set(history)
    assert all(np.isfinite(history[key]).all() for key in keys)
    # The groups' KLs add up to the KL term (each a mean over the same examples).
    np.testing.assert_allclose(sum(history[f"kl_group_{l}"][-1] for l in range(model.num_groups)),
                               history["kl_loss"][-1], rtol=1e-4, atol=1e-4)
    assert float(ops.convert_to_numpy(model.steps_seen)) == 4.0


def test_sample_encode_and_reconstruct_give_arrays_of_the_model_shapes():
    model = tiny_conv(num_groups=3)
    data = EIGHT_BIT
    assert model.sample(2, seed=0).shape == (2,) + model.image_shape
    assert model.reconstruct(data[:3]).shape == (3,) + model.image_shape
    assert [z.shape for z in model.encode_groups(data[:3])] == [(3,) + s for s in model.group_shapes]
    z_mean, z_log_var = model.encode(data[:3])
    assert z_mean.shape == z_log_var.shape == (3, model.noise_size)
    assert model.noise_size == sum(int(np.prod(s)) for s in model.group_shapes)


def test_noise_space_encodes_the_posterior_means_and_samples_as_the_server_draws():
    """decode(encode(x)) is the decoding of every group's posterior mean, and sample(seed) is
    the decoding of `keras_vae.core.hierarchy.draw_noise`, which the server uses."""
    from keras_vae.core.hierarchy import draw_noise

    model = tiny_conv(num_groups=3)
    rng = np.random.default_rng(2)
    for layer in model.priors:  # priors with a spread, so that noise and latents differ
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(size=bias.shape).astype("float32")])
    x = EIGHT_BIT[:3]
    from_noise = model.decode(model.encode(x)[0])
    np.testing.assert_allclose(from_noise, model.decode_groups(model.encode_groups(x)), atol=1e-5)
    np.testing.assert_allclose(from_noise, model.reconstruct(x), atol=1e-6)
    noise = draw_noise(4, model.latent_groups(), seed=7, temperature=0.8)
    np.testing.assert_allclose(model.sample(4, seed=7, temperature=0.8), model.decode(noise), atol=1e-6)


def test_a_skipped_update_leaves_weights_and_optimizer_state_unchanged():
    model = tiny(skip_threshold=1e9, grad_clip=1e9)
    model.compile(optimizer="adam")
    history = model.fit(BINARY, epochs=1, batch_size=16, verbose=0).history
    assert history["skipped_updates"] == [0.0]
    before = weights_and_optimizer_state(model)
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 2
    model.skip_threshold = 1e-12  # every gradient is now "huge"
    model.train_function = None  # traced again with the new setting
    history = model.fit(BINARY, epochs=1, batch_size=16, verbose=0).history
    assert history["skipped_updates"] == [2.0]
    assert np.isfinite(history["loss"]).all()
    for b, a in zip(before, weights_and_optimizer_state(model)):
        np.testing.assert_array_equal(a, b)
    assert float(ops.convert_to_numpy(model.skipped_updates)) == 2.0


def test_gradient_clipping_scales_to_the_global_norm():
    gradients = [ops.convert_to_tensor(np.array([3.0, 0.0], "float32")),
                 ops.convert_to_tensor(np.array([[4.0]], "float32")), None]
    norm = gradient_guard.global_norm(gradients)
    np.testing.assert_allclose(ops.convert_to_numpy(norm), 5.0, rtol=1e-6)
    clipped = gradient_guard.clip_gradients(gradients, norm, 1.0)
    np.testing.assert_allclose(ops.convert_to_numpy(clipped[0]), [0.6, 0.0], rtol=1e-5)
    assert clipped[2] is None
    assert bool(ops.convert_to_numpy(gradient_guard.should_skip(norm, 4.0)))
    assert not bool(ops.convert_to_numpy(gradient_guard.should_skip(norm, 6.0)))
    assert bool(ops.convert_to_numpy(gradient_guard.should_skip(ops.convert_to_tensor(np.nan), None)))
    assert gradient_guard.guard_settings(object()) is None  # VAE: no clipping, no skipping


def test_free_bits_charge_at_least_the_floor_per_group():
    model = tiny(num_groups=3, free_bits=2.0)
    losses = model.compute_losses(ops.convert_to_tensor(BINARY[:8]), training=True)
    # At initialisation every posterior is its prior: each KL is 0, and each group costs 2 nats.
    np.testing.assert_allclose(ops.convert_to_numpy(losses["kl_loss"]), 0.0, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(losses["loss"] - losses["reconstruction_loss"]),
                               6.0, rtol=1e-5)


def test_save_and_load_under_another_backend_give_the_same_log_likelihood(tmp_path):
    model = tiny_conv(likelihood="discretized_logistic", upsampling="subpixel", kl_warmup_steps=3,
                      grad_clip=100.0)
    model.compile(optimizer="adam")
    model.fit(EIGHT_BIT, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "hvae.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", EIGHT_BIT[:4])
    expected = model.log_likelihood(EIGHT_BIT[:4], num_samples=16, seed=3)
    code = (
        "import json, sys, numpy as np, keras\n"
        "import keras_vae.models.hierarchical\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "print(json.dumps({'ll': m.log_likelihood(x, num_samples=16, seed=3).tolist(),"
        " 'config': m.get_config(), 'steps': float(keras.ops.convert_to_numpy(m.steps_seen))}))\n"
    )
    result = run_python(["-c", code], backend=NEXT_BACKEND[keras.backend.backend()], timeout=300)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(loaded["ll"], expected, rtol=1e-4)
    assert loaded["config"] == json.loads(json.dumps(model.get_config())) and loaded["steps"] == 2.0


def test_log_likelihood_does_not_depend_on_chunking_and_beats_the_elbo():
    model = tiny(num_groups=3)
    model.compile(optimizer="adam")
    model.fit(BINARY, epochs=2, batch_size=16, verbose=0)
    x = BINARY[:6]
    one_chunk = model.log_likelihood(x, num_samples=60, batch_size=6, seed=0)
    small_chunks = model.log_likelihood(x, num_samples=60, batch_size=3, samples_per_chunk=20, seed=0)
    np.testing.assert_allclose(small_chunks, one_chunk, rtol=1e-6, atol=1e-4)
    # Image i's noise depends on its index i only: a prefix keeps it.
    np.testing.assert_allclose(model.log_likelihood(x[:3], num_samples=60, samples_per_chunk=20, seed=0),
                               one_chunk[:3], rtol=1e-6, atol=1e-4)
    assert not np.allclose(model.log_likelihood(x, num_samples=60, seed=1), one_chunk, atol=1e-3)
    elbo = -ops.convert_to_numpy(model.compute_losses(ops.convert_to_tensor(x))["loss"])
    assert one_chunk.mean() > elbo.mean() - 0.5


def test_sampling_temperature_scales_the_prior_of_each_group():
    model = tiny()
    rng = np.random.default_rng(1)
    for layer in model.priors:  # priors with a spread, so that temperature matters
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(size=bias.shape).astype("float32")])
    cold = model.sample(4, seed=0, temperature=0.0)
    np.testing.assert_allclose(cold, model.sample(4, seed=5, temperature=[0.0, 0.0]), atol=1e-6)
    assert not np.allclose(cold, model.sample(4, seed=0, temperature=[0.0, 1.0]), atol=1e-4)
    np.testing.assert_allclose(model.sample(4, seed=2), model.sample(4, seed=2), atol=1e-6)
    latents = model.encode_groups(BINARY[:3])
    np.testing.assert_allclose(model.decode_groups(latents), model.reconstruct(BINARY[:3]), atol=1e-5)


def test_log_likelihood_matches_the_closed_form_of_a_linear_gaussian_hierarchy():
    # z1 ~ N(0, I), z2 | z1 ~ N(A z1 + a, S), x | z2 ~ N(B z2 + b, σ² I): p(x) is
    # N(B a + b, B (A Aᵀ + S) Bᵀ + σ² I). The MLP variant with identity residual blocks is
    # linear; its layers are set so that q(z2|x, z1) is the exact posterior (B's columns are
    # orthogonal, so it is diagonal) and q(z1|x) has the exact mean and marginal variances.
    sigma, d, pixels = 0.5, 2, 16
    model = tiny(input_shape=(4, 4, 1), latent_dim=d, width=4, likelihood="gaussian",
                 decoder_std=sigma, residual_blocks=1)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(d, d))
    a = rng.normal(size=d) * 0.3
    s2 = np.array([0.4, 0.7])
    B = np.linalg.qr(rng.normal(size=(pixels, pixels)))[0][:, :d] * np.array([1.5, 0.8])
    b = rng.normal(size=pixels) * 0.1
    P = 1.0 / (1.0 / s2 + np.diag(B.T @ B) / sigma**2)  # Cov(z2 | z1, x), diagonal
    noise_cov = B @ np.diag(s2) @ B.T + sigma**2 * np.eye(pixels)  # Cov(x | z1)
    BA = B @ A
    C1 = np.linalg.inv(np.eye(d) + BA.T @ np.linalg.solve(noise_cov, BA))  # Cov(z1 | x)
    M1 = C1 @ BA.T @ np.linalg.inv(noise_cov)  # E[z1 | x] = M1 (x − B a − b)

    def put(layer, kernel, bias):
        layer.set_weights([np.asarray(kernel, "float32"), np.asarray(bias, "float32")])

    for block in model.bottom_up_blocks[0] + model.bottom_up_blocks[1] + model.top_down_blocks[0] \
            + model.top_down_blocks[1]:
        put(block.outer, np.zeros((4, 4)), np.zeros(4))  # identity
    # Bottom-up features f = [M1 (x − Ba − b), P Bᵀ (x − b) / σ²].
    put(model.bottom_up_stem, np.concatenate([M1.T, B * P / sigma**2], axis=1),
        np.concatenate([-M1 @ (B @ a + b), -(P / sigma**2) * (B.T @ b)]))
    # Group 0 (z1): prior N(0, I); posterior mean f[:2], log variance log diag C1.
    put(model.priors[0], np.zeros((4, 2 * d)), np.zeros(2 * d))
    kernel = np.zeros((8, 2 * d))
    kernel[4:6, :d] = np.eye(d)
    put(model.posteriors[0], kernel, np.concatenate([np.zeros(d), np.log(np.diag(C1))]))
    # The stream: h = [z1, z2].
    put(model.latent_projections[0], np.eye(d, 4), np.zeros(4))
    put(model.latent_projections[1], np.eye(d, 4, k=2), np.zeros(4))
    # Group 1 (z2): prior N(A z1 + a, S); posterior mean P (S⁻¹ (A z1 + a) + Bᵀ (x − b) / σ²).
    kernel = np.zeros((4, 2 * d))
    kernel[:d, :d] = A.T
    put(model.priors[1], kernel, np.concatenate([a, np.log(s2)]))
    shrink = np.diag(P / s2) - np.eye(d)
    kernel = np.zeros((8, 2 * d))
    kernel[:d, :d] = (shrink @ A).T
    kernel[6:8, :d] = np.eye(d)
    put(model.posteriors[1], kernel, np.concatenate([shrink @ a, np.log(P) - np.log(s2)]))
    kernel = np.zeros((4, pixels))
    kernel[2:4] = B.T
    put(model.output_head, kernel, b)

    x = rng.normal(size=(5, 4, 4, 1)).astype("float32")
    exact = scipy.stats.multivariate_normal(B @ a + b, B @ (A @ A.T + np.diag(s2)) @ B.T
                                            + sigma**2 * np.eye(pixels)).logpdf(x.reshape(5, pixels))
    num_samples = 4000
    estimate = model.log_likelihood(x, num_samples=num_samples, batch_size=5, samples_per_chunk=1000,
                                    seed=0)
    # Its Monte-Carlo standard error, from the model's own log weights: sd(w) / (mean(w) √K).
    noise = np.random.default_rng(1).standard_normal((num_samples, 5, model.noise_size)).astype("float32")
    log_w = np.asarray(ops.convert_to_numpy(model.importance_log_weights(x, noise)), "float64")
    w = np.exp(log_w - log_w.max(0))
    standard_error = w.std(0) / w.mean(0) / np.sqrt(num_samples)
    assert standard_error.max() < 0.02
    np.testing.assert_array_less(np.abs(estimate - exact), 4 * standard_error + 2e-3)


@pytest.mark.parametrize("kwargs,message", [
    ({"num_groups": 0}, "num_groups must be an integer >= 1"),
    ({"architecture": "conv", "num_resolutions": 4},
     "num_resolutions=4 needs height and width divisible by 16"),
    ({"architecture": "conv", "num_groups": 1, "num_resolutions": 2},
     "num_groups must be >= num_resolutions"),
    ({"likelihood": "logistic_mixture", "mixture_components": 0},
     "mixture_components must be an integer >= 1"),
    ({"likelihood": "logistic_mixture", "mixture_components": 2.5}, "mixture_components must be an integer"),
    ({"likelihood": "poisson"}, "likelihood must be one of"),
    ({"architecture": "resnet"}, "architecture must be one of"),
    ({"upsampling": "transpose"}, "upsampling must be one of"),
    ({"skip_threshold": 0.0}, "skip_threshold must be a positive number"),
    ({"grad_clip": -1.0}, "grad_clip must be a positive number"),
    ({"free_bits": -0.5}, "free_bits must be a number >= 0"),
    ({"decoder_std": 0}, "decoder_std must be a positive number"),
    ({"latent_dim": 0}, "latent_dim must be an integer >= 1"),
])
def test_options_that_cannot_work_are_one_line_errors_naming_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        tiny(**kwargs)
    assert "\n" not in str(error.value)


def test_config_round_trips_and_data_outside_the_unit_interval_is_refused():
    model = tiny_conv(num_groups=3, upsampling="subpixel", skip_threshold=50.0)
    clone = HierarchicalVAE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.log_likelihood(EIGHT_BIT[:2] * 255, num_samples=2)
