"""The VAE model on the current backend: objective, gradients, noise, fit, saving, errors."""

import numpy as np
import pytest
import scipy.special
import scipy.stats

import keras
from keras import ops

import keras_vae

pytestmark = pytest.mark.backend


def small_vae(**kwargs):
    options = dict(input_shape=(8, 8, 1), latent_dim=4, hidden_units=(64,), seed=1)
    options.update(kwargs)
    return keras_vae.VAE(**options)


def per_example(vae, x, training=False):
    return {k: ops.convert_to_numpy(v) for k, v in vae.compute_losses(x, training=training).items()}


def test_iwae_with_one_sample_equals_the_elbo_in_expectation(digits):
    # With K = 1 the IWAE bound is the single-sample ELBO, log p(x|z) + log p(z) − log q(z|x);
    # the ELBO loss uses the closed-form KL instead. They agree in expectation over z.
    repeats = 4000
    x = np.repeat(digits[1][:4], repeats, axis=0)
    elbo_vae = small_vae(objective="elbo", num_samples=1)
    iwae_vae = small_vae(objective="iwae", num_samples=1)
    iwae_vae.set_weights(elbo_vae.get_weights())
    elbo = per_example(elbo_vae, x)["loss"].reshape(4, repeats)
    iwae = per_example(iwae_vae, x)["loss"].reshape(4, repeats)
    standard_error = np.sqrt(elbo.var(1) / repeats + iwae.var(1) / repeats)
    np.testing.assert_array_less(np.abs(iwae.mean(1) - elbo.mean(1)), 4 * standard_error)


def test_iwae_bound_is_tighter_than_the_elbo_on_average(digits):
    x = digits[1][:64]
    elbo_vae = small_vae(objective="elbo", num_samples=50)
    iwae_vae = small_vae(objective="iwae", num_samples=50)
    iwae_vae.set_weights(elbo_vae.get_weights())
    # loss = −bound, so a tighter (larger) bound is a smaller loss.
    assert per_example(iwae_vae, x)["loss"].mean() < per_example(elbo_vae, x)["loss"].mean() - 0.1


def test_reparameterization_gives_the_encoder_a_gradient(digits):
    # With β = 0 the loss is only −log p(x|z): the encoder can learn only through z = μ + σ·ε.
    vae = small_vae(beta=0.0)
    vae.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    before = [w.copy() for w in vae.encoder.get_weights()]
    vae.train_on_batch(digits[0][:64])
    changed = [not np.allclose(b, a) for b, a in zip(before, vae.encoder.get_weights())]
    assert all(changed), "every encoder weight should receive a gradient"


@pytest.mark.parametrize("sticking_the_landing", [True, False])
def test_sticking_the_landing_gives_no_encoder_gradient_at_the_exact_posterior(
    digits, sticking_the_landing
):
    # A decoder with zero output weights ignores z, so the exact posterior is the prior
    # N(0, I); an encoder with zero output weights emits exactly that. Then log w = log p(x)
    # for every z, so the pathwise gradient is zero for every ε (Roeder et al. 2017), while
    # the score term −∂ log q/∂μ = −ε of the standard estimator is not.
    vae = small_vae(objective="iwae", num_samples=4, sticking_the_landing=sticking_the_landing)
    output_layers = [vae.encoder.get_layer("z_mean"), vae.encoder.get_layer("z_log_var_raw"),
                     vae.decoder.get_layer("pixels")]
    for layer in output_layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    vae.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    before = [w.copy() for w in vae.encoder.get_weights()]
    vae.train_on_batch(digits[0][:64])
    moved = max(np.abs(b - a).max() for b, a in zip(before, vae.encoder.get_weights()))
    if sticking_the_landing:
        assert moved < 1e-6
    else:
        assert moved > 1e-3


def test_each_training_step_draws_fresh_noise(digits):
    # A zero learning rate leaves the weights alone; only ε can make two losses differ.
    vae = small_vae()
    vae.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    batch = digits[0][:64]
    losses = [vae.train_on_batch(batch, return_dict=True)["reconstruction_loss"] for _ in range(3)]
    assert len(set(np.round(losses, 6))) == 3, losses


def test_fit_lowers_the_loss_and_reports_validation_metrics(digits):
    x_train, x_test = digits
    vae = small_vae(hidden_units=(128,))
    vae.compile(optimizer=keras.optimizers.Adam(2e-3))
    history = vae.fit(x_train, epochs=8, batch_size=64, validation_data=(x_test,), verbose=0).history
    for name in ("loss", "reconstruction_loss", "kl_loss", "val_loss", "val_reconstruction_loss",
                 "val_kl_loss"):
        assert name in history and len(history[name]) == 8
    assert history["loss"][-1] < history["loss"][0] - 3.0
    assert history["val_loss"][-1] < history["val_loss"][0] - 1.0


def test_loss_is_negative_elbo_in_nats_per_example(digits):
    x = digits[1][:16]
    vae = small_vae(num_samples=2000)
    losses = per_example(vae, x)
    np.testing.assert_allclose(losses["loss"], losses["reconstruction_loss"] + losses["kl_loss"], rtol=1e-5)
    # An independent Monte Carlo estimate of −E_q log p(x|z) with scipy's Bernoulli.
    z_mean, z_log_var = vae.encode(x)
    rng = np.random.default_rng(0)
    z = z_mean + np.exp(0.5 * z_log_var) * rng.standard_normal((2000,) + z_mean.shape)
    probs = vae.decode(z.reshape(-1, 4)).reshape((2000,) + x.shape).astype("float64")
    log_px = (x * np.log(probs) + (1 - x) * np.log1p(-probs)).sum(axis=(2, 3, 4))
    np.testing.assert_allclose(losses["reconstruction_loss"], -log_px.mean(0), rtol=0.01)


@pytest.mark.parametrize("compiled", [True, False])
def test_kl_warmup_rises_during_fit(digits, compiled):
    vae = small_vae(kl_warmup_steps=20)
    vae.compile(optimizer="adam", jit_compile=compiled if keras.backend.backend() != "torch" else False)
    betas = []

    class RecordBeta(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # `self.model` syncs the JAX training state back into the variables.
            betas.append(float(ops.convert_to_numpy(self.model.current_beta())))

    vae.fit(digits[0][:640], epochs=3, batch_size=64, callbacks=[RecordBeta()], verbose=0)
    assert betas[0] == pytest.approx(1 / 20)
    assert betas[9] == pytest.approx(10 / 20)
    assert betas[-1] == pytest.approx(1.0)
    assert np.all(np.diff(betas) >= 0)


def test_learned_gaussian_variance_is_trained(digits):
    vae = small_vae(likelihood="gaussian", decoder_std="learned")
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = ops.convert_to_numpy(vae.decoder_log_var).copy()
    vae.fit(digits[0], epochs=2, batch_size=128, verbose=0)
    assert not np.allclose(before, ops.convert_to_numpy(vae.decoder_log_var))


def test_dynamic_binarization_trains_on_binary_draws(digits):
    # A decoder that ignores z and emits logit 1 for every pixel: log p(x|z) = Σ (x − softplus(1)),
    # so each training loss reveals Σ x of the image the step saw. Binary draws make it a whole
    # number of pixels that changes from step to step, with mean Σ x of the grey image.
    vae = small_vae(dynamic_binarization=True, beta=0.0)
    pixels = vae.decoder.get_layer("pixels")
    pixels.set_weights([np.zeros_like(pixels.get_weights()[0]), np.ones(64, "float32")])
    x = digits[0][:6]
    grey_sums = x.reshape(6, -1).sum(1)
    assert np.all(np.abs(grey_sums - np.round(grey_sums)) > 1e-3)  # grey sums are not whole

    def pixels_on(training):
        loss = per_example(vae, x, training=training)["reconstruction_loss"]
        return 64 * np.log1p(np.e) - loss  # Σ x of what the step saw

    draws = np.stack([pixels_on(training=True) for _ in range(200)])  # (200, 6)
    np.testing.assert_allclose(draws, np.round(draws), atol=1e-3)
    assert np.all(draws.std(0) > 0.5)
    np.testing.assert_allclose(draws.mean(0), grey_sums, atol=4 * draws.std(0).max() / np.sqrt(200))
    np.testing.assert_allclose(pixels_on(training=False), grey_sums, rtol=1e-5)  # evaluation: no draw


@pytest.mark.parametrize("prior", ["standard", "mixture"])
def test_log_likelihood_matches_the_closed_form_of_a_linear_gaussian_model(prior):
    # No hidden layers and a Gaussian decoder: x = Wz + b + σ·noise, so p(x) = N(b, WWᵀ + σ²I)
    # under p(z) = N(0, I), and Σ_c w_c N(Wᵀμ_c + b, Wᵀ Σ_c W + σ²I) under a mixture prior.
    sigma, latent_dim = 0.5, 2
    vae = keras_vae.VAE(input_shape=(4, 4, 1), latent_dim=latent_dim, hidden_units=(),
                        likelihood="gaussian", decoder_std=sigma, prior=prior, prior_components=2,
                        seed=0)
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(latent_dim, 16)).astype("float32")
    bias = rng.normal(size=(16,)).astype("float32") * 0.1
    vae.decoder.get_layer("pixels").set_weights([weight, bias])
    # Encoder: the exact posterior mean, and the diagonal of the posterior variance.
    posterior_cov = np.linalg.inv(np.eye(latent_dim) + weight @ weight.T / sigma**2)
    vae.encoder.get_layer("z_mean").set_weights(
        [(weight.T @ posterior_cov / sigma**2).astype("float32"),
         (-bias @ weight.T @ posterior_cov / sigma**2).astype("float32")])
    vae.encoder.get_layer("z_log_var_raw").set_weights(
        [np.zeros((16, latent_dim), "float32"), np.log(np.diag(posterior_cov)).astype("float32")])

    x = rng.normal(size=(5, 4, 4, 1)).astype("float32")
    if prior == "standard":
        exact = scipy.stats.multivariate_normal(
            bias, weight.T @ weight + sigma**2 * np.eye(16)).logpdf(x.reshape(5, 16))
    else:
        means = np.array([[0.6, -0.3], [-0.5, 0.4]], "float32")
        log_vars = np.array([[-0.4, 0.2], [0.1, -0.3]], "float32")
        logits = np.array([0.5, -0.5], "float32")
        vae.prior_means.assign(means)
        vae.prior_log_vars.assign(log_vars)
        vae.prior_logits.assign(logits)
        per_component = [
            scipy.stats.multivariate_normal(
                means[c] @ weight + bias,
                weight.T @ np.diag(np.exp(log_vars[c])) @ weight + sigma**2 * np.eye(16),
            ).logpdf(x.reshape(5, 16))
            for c in range(2)
        ]
        exact = scipy.special.logsumexp(
            np.stack(per_component) + scipy.special.log_softmax(logits)[:, None], axis=0)
    estimate = vae.log_likelihood(x, num_samples=4000, batch_size=5, samples_per_chunk=1000, seed=0)
    np.testing.assert_allclose(estimate, exact, atol=0.05)


def test_log_likelihood_is_at_least_the_elbo_and_does_not_depend_on_chunking(digits):
    x = digits[1][:40]
    vae = small_vae()
    elbo = -per_example(vae, x)["loss"]
    # Each image's noise depends only on the seed and its index, so splitting the work
    # differently must give the same numbers, up to float32 rounding in the networks.
    small_chunks = vae.log_likelihood(x, num_samples=200, batch_size=8, samples_per_chunk=7, seed=0)
    one_chunk = vae.log_likelihood(x, num_samples=200, batch_size=40, seed=0)
    assert small_chunks.shape == (40,)
    assert small_chunks.mean() > elbo.mean()
    np.testing.assert_allclose(small_chunks, one_chunk, rtol=1e-6, atol=1e-4)
    # A subset keeps each image's noise: image i of x is image i - 10 of x[10:].
    np.testing.assert_allclose(vae.log_likelihood(x[:10], num_samples=200, seed=0),
                               vae.log_likelihood(x, num_samples=200, seed=0)[:10], rtol=1e-6, atol=1e-4)
    assert not np.allclose(vae.log_likelihood(x, num_samples=200, seed=1), one_chunk, atol=1e-3)


def test_mixture_prior_of_standard_normals_gives_the_standard_bounds(digits):
    # Every component N(0, I): the mixture is the standard prior, so the IWAE loss is the
    # same number, and the ELBO's sampled KL estimates the closed-form KL.
    x = digits[1][:8]
    for objective, num_samples in [("iwae", 5), ("elbo", 4000)]:
        standard = small_vae(objective=objective, num_samples=num_samples)
        mixture = small_vae(objective=objective, num_samples=num_samples, prior="mixture",
                            prior_components=3)
        mixture.encoder.set_weights(standard.encoder.get_weights())
        mixture.decoder.set_weights(standard.decoder.get_weights())
        mixture.prior_means.assign(np.zeros((3, 4), "float32"))
        expected, got = per_example(standard, x), per_example(mixture, x)
        if objective == "iwae":
            np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)
        else:
            np.testing.assert_allclose(got["kl_loss"], expected["kl_loss"], atol=0.15, rtol=0.02)


def test_mixture_prior_is_trained(digits):
    vae = small_vae(prior="mixture", prior_components=3, objective="iwae", num_samples=3)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = [ops.convert_to_numpy(w).copy() for w in (vae.prior_means, vae.prior_log_vars, vae.prior_logits)]
    vae.fit(digits[0][:256], epochs=1, batch_size=64, verbose=0)
    after = [ops.convert_to_numpy(w) for w in (vae.prior_means, vae.prior_log_vars, vae.prior_logits)]
    assert all(not np.allclose(b, a) for b, a in zip(before, after))


def test_latents_are_drawn_from_the_mixture_prior():
    vae = small_vae(prior="mixture", prior_components=2)
    vae.prior_means.assign(np.array([[5.0] * 4, [-5.0] * 4], "float32"))
    vae.prior_log_vars.assign(np.full((2, 4), np.log(0.01), "float32"))
    vae.prior_logits.assign(np.log(np.array([0.2, 0.8], "float32")))
    z = vae.sample_latents(4000, seed=0)
    first = z[:, 0] > 0
    assert abs(first.mean() - 0.2) < 0.03
    np.testing.assert_allclose(z[first].std(0), 0.1, rtol=0.1)
    np.testing.assert_allclose(z[~first].mean(0), -5.0, atol=0.02)
    np.testing.assert_allclose(np.abs(vae.sample_latents(10, seed=1, temperature=0.0)), 5.0, rtol=1e-6)


def test_save_and_load_round_trip(tmp_path, digits):
    vae = small_vae(architecture="conv", conv_filters=(8, 16), kl_warmup_steps=5, prior="mixture",
                    prior_components=3)
    vae.compile(optimizer="adam")
    vae.fit(digits[0][:128], epochs=1, batch_size=64, verbose=0)
    vae.save(tmp_path / "vae.keras")
    loaded = keras.models.load_model(tmp_path / "vae.keras")
    assert isinstance(loaded, keras_vae.VAE)
    assert loaded.get_config() == vae.get_config()
    z = np.random.default_rng(0).standard_normal((6, 4))
    np.testing.assert_allclose(loaded.decode(z), vae.decode(z), atol=1e-5)
    np.testing.assert_allclose(loaded.sample_latents(5, seed=0), vae.sample_latents(5, seed=0), rtol=1e-6)
    assert float(ops.convert_to_numpy(loaded.steps_seen)) == 2.0
    loaded.fit(digits[0][:128], epochs=1, batch_size=64, verbose=0)  # still trains


@pytest.mark.parametrize("architecture,shape", [("mlp", (28, 28, 1)), ("conv", (28, 28, 1)),
                                                ("conv", (8, 8, 1)), ("conv", (32, 32, 3))])
def test_architectures_handle_image_sizes(architecture, shape):
    vae = keras_vae.VAE(input_shape=shape, latent_dim=3, architecture=architecture)
    x = np.random.default_rng(0).random((2,) + shape).astype("float32")
    assert vae.reconstruct(x).shape == (2,) + shape
    assert vae.sample(3, seed=0).shape == (3,) + shape


def test_gated_layers_compute_the_gated_product_in_numpy():
    vae = small_vae(hidden_units=(16, 8), gated=True)
    for network in (vae.encoder, vae.decoder):  # biases away from zero, so they count
        for weight in network.weights:
            weight.assign(np.random.default_rng(weight.shape[-1]).normal(size=weight.shape) * 0.3)
    x = np.random.default_rng(0).random((5, 8, 8, 1)).astype("float32")

    def gated(h, network, name):
        (w, b), (v, c) = (network.get_layer(n).get_weights() for n in (name, name + "_gate"))
        return (h @ w + b) * scipy.special.expit(h @ v + c)

    h = x.reshape(5, -1)
    for i in range(2):
        h = gated(h, vae.encoder, f"dense_{i}")
    w, b = vae.encoder.get_layer("z_mean").get_weights()
    z_mean, _ = vae.encode(x)
    np.testing.assert_allclose(z_mean, h @ w + b, rtol=1e-4, atol=1e-5)

    z = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    h = z
    for i in range(2):
        h = gated(h, vae.decoder, f"dense_{i}")
    w, b = vae.decoder.get_layer("pixels").get_weights()
    np.testing.assert_allclose(vae.decode(z).reshape(5, -1), scipy.special.expit(h @ w + b),
                               rtol=1e-4, atol=1e-6)
    assert keras_vae.VAE.from_config(vae.get_config()).gated


def test_sample_is_deterministic_for_a_seed():
    vae = small_vae()
    np.testing.assert_array_equal(vae.sample(4, seed=7), vae.sample(4, seed=7))
    assert not np.allclose(vae.sample(4, seed=7), vae.sample(4, seed=8))


@pytest.mark.parametrize("bad_shape", [(10, 8, 8), (10, 8, 8, 3), (10, 64), (10, 7, 8, 1)])
def test_wrong_image_shape_is_a_clear_error(bad_shape, digits):
    vae = small_vae()
    vae.compile(optimizer="adam")
    x = np.zeros(bad_shape, "float32")
    for call in (lambda: vae.fit(x, epochs=1, verbose=0), lambda: vae.encode(x),
                 lambda: vae.log_likelihood(x, num_samples=2)):
        with pytest.raises(ValueError, match=r"Expected images of shape \(batch, 8, 8, 1\), got"):
            call()


def test_bernoulli_data_outside_unit_interval_is_a_clear_error(digits):
    vae = small_vae()
    vae.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\], got values in \[0, 16\]"):
        vae.fit(digits[0] * 16.0, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.fit(digits[0], validation_data=(digits[1] * 255.0,), epochs=1, verbose=0)


@pytest.mark.parametrize("kwargs,message", [
    ({"likelihood": "poisson"}, "likelihood must be one of"),
    ({"objective": "vi"}, "objective must be one of"),
    ({"architecture": "conv", "input_shape": (7, 7, 1)}, "divisible by 4"),
    ({"num_samples": 0}, "num_samples must be >= 1"),
    ({"decoder_std": -1.0}, "decoder_std must be a positive float or 'learned'"),
    ({"prior": "vamp"}, "prior must be one of"),
    ({"prior": "mixture", "prior_components": 0}, "prior_components must be >= 1"),
    ({"architecture": "conv", "gated": True}, "gated dense layers are an option of architecture='mlp'"),
])
def test_bad_constructor_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_vae(**kwargs)


def test_a_failed_save_leaves_the_previous_file_whole(digits, tmp_path):
    # ModelCheckpoint saves over model.keras every epoch; an error (or a kill) part-way
    # through a save must not leave a truncated file where the last good model was.
    path = str(tmp_path / "model.keras")
    vae = small_vae()
    vae.save(path)
    saved = open(path, "rb").read()

    def fail(store):
        raise OSError("disk full")

    vae.decoder.get_layer("pixels").save_own_variables = fail  # fails after the file is opened
    with pytest.raises(OSError, match="disk full"):
        vae.save(path)
    assert open(path, "rb").read() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    np.testing.assert_allclose(keras.saving.load_model(path).decode(np.zeros((1, 4))),
                               vae.decode(np.zeros((1, 4))), rtol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="ONNX export runs under TensorFlow")
@pytest.mark.parametrize("gated", [False, True])
def test_exported_decoder_samples_from_the_mixture_prior_like_keras(tmp_path, gated):
    from keras_vae.export.onnx import export_decoder
    from keras_vae.serving.sampler import Sampler

    vae = small_vae(prior="mixture", prior_components=3, gated=gated)
    vae.prior_means.assign(np.random.default_rng(0).normal(size=(3, 4)).astype("float32"))
    vae.prior_log_vars.assign(np.random.default_rng(1).normal(size=(3, 4)).astype("float32"))
    vae.prior_logits.assign(np.array([0.5, -1.0, 0.2], "float32"))
    export_decoder(vae, str(tmp_path / "decoder.onnx"))
    sampler = Sampler(tmp_path / "decoder.onnx", provider="cpu")
    for temperature in (1.0, 0.5):
        z = sampler.latents(50, seed=3, temperature=temperature)
        np.testing.assert_allclose(z, vae.sample_latents(50, seed=3, temperature=temperature), rtol=1e-6)
    np.testing.assert_allclose(sampler.sample(9, seed=4), vae.sample(9, seed=4), atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="ONNX export runs under TensorFlow")
@pytest.mark.parametrize("decoder_std", [0.3, "learned"])
def test_exported_gaussian_files_score_like_keras(tmp_path, digits, decoder_std):
    from keras_vae.export.onnx import export_decoder
    from keras_vae.export.onnx import export_encoder
    from keras_vae.serving.likelihood import onnx_log_likelihood
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler

    vae = small_vae(likelihood="gaussian", decoder_std=decoder_std, prior="mixture", prior_components=3)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    vae.fit(digits[0][:256], epochs=2, batch_size=64, verbose=0)
    export_decoder(vae, str(tmp_path / "decoder.onnx"))
    export_encoder(vae, str(tmp_path / "encoder.onnx"))
    x = digits[1][:12]
    from_files = onnx_log_likelihood(Encoder(tmp_path / "encoder.onnx"), Sampler(tmp_path / "decoder.onnx"),
                                     x, num_samples=100, seed=4)
    np.testing.assert_allclose(from_files, vae.log_likelihood(x, num_samples=100, seed=4), atol=1e-3)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="ONNX export runs under TensorFlow")
def test_exported_bernoulli_files_score_confidently_wrong_pixels_like_keras(tmp_path, digits):
    """Logits beyond ±17 saturate the float32 sigmoid: scored from x_mean, a wrong pixel costs
    at most −log(1e-7) ≈ 16 nats, where Keras, from the logits, has their full cost. The
    export's logits output gives onnxruntime Keras's numbers."""
    from keras_vae.serving.likelihood import onnx_log_likelihood
    from keras_vae.export.onnx import export_decoder, export_encoder
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler

    vae = small_vae()
    pixels = vae.decoder.get_layer("pixels")
    bias = ops.convert_to_numpy(pixels.bias).copy()
    bias[:4], bias[-4:] = 25.0, -22.0  # confident: these pixels "must" be 1 (first 4) and 0 (last 4)
    pixels.bias.assign(bias)
    export_decoder(vae, str(tmp_path / "decoder.onnx"))
    export_encoder(vae, str(tmp_path / "encoder.onnx"))
    x = (digits[1][:10] > 0.5).astype("float32")
    x.reshape(len(x), -1)[:, :4], x.reshape(len(x), -1)[:, -4:] = 0.0, 1.0  # ... and are wrong
    encoder, decoder = Encoder(tmp_path / "encoder.onnx"), Sampler(tmp_path / "decoder.onnx")
    assert decoder.logits_name == "logits"
    z = np.random.default_rng(0).standard_normal((7, 4)).astype("float32")
    np.testing.assert_allclose(decoder.decode(z), 1 / (1 + np.exp(-decoder.decode_logits(z))), atol=1e-6)
    keras_log_px = vae.log_likelihood(x, num_samples=50, seed=3)
    np.testing.assert_allclose(onnx_log_likelihood(encoder, decoder, x, num_samples=50, seed=3),
                               keras_log_px, atol=1e-3, rtol=0)
    decoder.logits_name = None  # an export without logits: scored from the probabilities
    old = onnx_log_likelihood(encoder, decoder, x, num_samples=50, seed=3)
    assert np.all(old - keras_log_px > 0.1)


def test_depth_to_space_lays_each_pixels_channels_out_as_a_block():
    from keras_vae.models.networks import DepthToSpace

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 12)).astype("float32")
    out = keras.ops.convert_to_numpy(DepthToSpace(2)(keras.ops.convert_to_tensor(x)))
    assert out.shape == (2, 6, 8, 3)
    for i in range(2):  # channel (i·2 + j)·C + c of pixel (h, w) -> pixel (2h + i, 2w + j), channel c
        for j in range(2):
            np.testing.assert_array_equal(out[:, i::2, j::2, :], x[..., (i * 2 + j) * 3 : (i * 2 + j + 1) * 3])


def test_a_subpixel_conv_decoder_trains_saves_and_loads(tmp_path):
    import keras_vae

    x = np.random.default_rng(0).random((32, 8, 8, 3)).astype("float32")
    vae = keras_vae.VAE(input_shape=(8, 8, 3), latent_dim=2, architecture="conv",
                        conv_filters=(4, 8), conv_upsampling="subpixel", seed=0)
    vae.compile(optimizer="adam")
    vae.fit(x, epochs=1, batch_size=16, verbose=0)
    names = [layer.name for layer in vae.decoder.layers]
    assert "deconv_0_depth_to_space" in names
    vae.save(tmp_path / "vae.keras")
    loaded = keras.models.load_model(tmp_path / "vae.keras")
    z = np.random.default_rng(1).standard_normal((5, 2)).astype("float32")
    np.testing.assert_allclose(loaded.decode(z), vae.decode(z), atol=1e-6)


def test_a_residual_block_adds_its_convolutions_to_its_input():
    from keras_vae.models.networks import residual_block

    h = keras.Input((4, 4, 3))
    block = keras.Model(h, residual_block(h, 3, name="res"))
    x = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")  # >= 0, as after a ReLU
    second = block.get_layer("res_b")
    first_out = keras.Model(h, block.get_layer("res_a").output)(x)
    expected = np.maximum(x + ops.convert_to_numpy(second(first_out)), 0.0)
    np.testing.assert_allclose(ops.convert_to_numpy(block(x)), expected, atol=1e-5)
    second.set_weights([np.zeros_like(w) for w in second.get_weights()])
    np.testing.assert_allclose(ops.convert_to_numpy(block(x)), x, atol=1e-6)  # identity at zero


def test_a_conv_vae_with_residual_blocks_trains_saves_and_loads(tmp_path):
    x = np.random.default_rng(0).random((32, 8, 8, 3)).astype("float32")
    vae = keras_vae.VAE(input_shape=(8, 8, 3), latent_dim=2, architecture="conv",
                        conv_filters=(4, 8), conv_residual_blocks=2, seed=0)
    vae.compile(optimizer="adam")
    vae.fit(x, epochs=1, batch_size=16, verbose=0)
    names = {layer.name for layer in vae.encoder.layers + vae.decoder.layers}
    assert {"conv_1_residual_1_add", "deconv_1_residual_1_add"} <= names
    vae.save(tmp_path / "vae.keras")
    loaded = keras.models.load_model(tmp_path / "vae.keras")
    z = np.random.default_rng(1).standard_normal((5, 2)).astype("float32")
    np.testing.assert_allclose(loaded.decode(z), vae.decode(z), atol=1e-6)


@pytest.mark.parametrize("shape, filters", [
    ((8, 8, 1), (32, 64)), ((28, 28, 1), (32, 64)), ((32, 32, 3), (32, 64)),
    ((64, 64, 3), (32, 64, 128)), ((128, 96, 3), (32, 64, 128, 256)), ((48, 48, 1), (32, 64, 128)),
])
def test_the_conv_depth_follows_the_image_size(shape, filters):
    vae = keras_vae.VAE(input_shape=shape, latent_dim=2, architecture="conv", seed=0)
    assert vae.conv_filters == filters and vae.get_config()["conv_filters"] == list(filters)
    # The encoder's last feature map: each side halved once per layer, at most 8 pixels on
    # the shorter side (or after the two layers every model has).
    last = vae.encoder.get_layer(f"conv_{len(filters) - 1}").output.shape
    assert last[1:] == (shape[0] // 2 ** len(filters), shape[1] // 2 ** len(filters), filters[-1])
    assert min(last[1], last[2]) <= 8 or len(filters) == 2
    assert vae.decoder.output.shape[1:] == shape
