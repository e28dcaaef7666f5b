"""The class-conditional VAE (`VAE(num_classes=C)`, keras_vae.models.conditioning) on each backend,
its export with a label input, and `keras-vae train --conditional` end to end."""

import json
import os

import numpy as np
import pytest

import keras

import keras_vae
from keras_vae.data.datasets import binarize
from keras_vae.data.datasets import load_dataset

from helpers.processes import run_python

backend = pytest.mark.backend


@pytest.fixture(scope="module")
def labelled_digits():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    return (binarize(train.images, seed=1), train.labels), (binarize(test.images, seed=2), test.labels)


def _fit(data, epochs=25, **options):
    (x, y), _ = data
    keras.utils.set_random_seed(0)
    options = {"latent_dim": 4, "hidden_units": (64,), "num_classes": 10, "seed": 0, **options}
    vae = keras_vae.VAE(input_shape=(8, 8, 1), **options)
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = vae.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    return vae


@backend
@pytest.mark.parametrize("options", [
    {},
    pytest.param({"architecture": "conv", "conv_filters": (8,)}, marks=pytest.mark.slow),
    pytest.param({"gated": True, "objective": "iwae", "num_samples": 3, "kl_warmup_steps": 50,
                  "prior": "mixture", "prior_components": 5}, marks=pytest.mark.slow),
], ids=["mlp", "conv", "gated-iwae-warmup-mixture"])
def test_the_label_carries_the_class(labelled_digits, options):
    """Trained on (x, y), the model explains a test digit far better under its own label than
    under another: log p(x|y) − log p(x|y') is large and positive for almost every image."""
    vae = _fit(labelled_digits, epochs=15, **options)
    x, y = labelled_digits[1]
    x, y = x[:40], y[:40]
    right = vae.log_likelihood(x, y, num_samples=30)
    wrong = vae.log_likelihood(x, (y + 1 + np.arange(40) % 9) % 10, num_samples=30)
    assert np.mean(right - wrong) > 5.0
    assert np.mean(right > wrong) > 0.9
    samples = vae.sample(4, labels=3, seed=0)
    assert samples.shape == (4, 8, 8, 1) and np.all((samples >= 0) & (samples <= 1))
    # the same seed draws the same z whatever the label
    np.testing.assert_array_equal(vae.sample_latents(4, seed=0), vae.sample_latents(4, seed=0))
    assert not np.allclose(vae.sample(4, labels=5, seed=0), samples, atol=1e-3)


@backend
def test_conditional_nll_matches_quadrature(labelled_digits):
    """With one latent dimension, log p(x|y) = log ∫ p(x|z, y) N(z; 0, 1) dz by quadrature on a
    fine grid; the importance-sampled estimate agrees."""
    vae = _fit(labelled_digits, epochs=5, latent_dim=1)
    x, y = labelled_digits[1][0][:4], labelled_digits[1][1][:4]
    estimate = vae.log_likelihood(x, y, num_samples=4000, samples_per_chunk=1000)
    grid = np.linspace(-8.0, 8.0, 3201)
    step = grid[1] - grid[0]
    for image, label, got in zip(x, y, estimate):
        means = vae.decode(grid[:, None], labels=np.full(len(grid), label)).astype("float64")
        means = np.clip(means, 1e-7, 1 - 1e-7)
        log_px_z = np.sum(image * np.log(means) + (1 - image) * np.log1p(-means), axis=(1, 2, 3))
        log_joint = log_px_z - 0.5 * grid ** 2 - 0.5 * np.log(2 * np.pi) + np.log(step)
        exact = np.logaddexp.reduce(log_joint)
        assert got == pytest.approx(exact, abs=0.1)


@backend
def test_saved_conditional_model_loads_and_unconditional_config_is_unchanged(labelled_digits, tmp_path):
    vae = _fit(labelled_digits, epochs=1, class_names=[f"digit {k}" for k in range(10)])
    path = str(tmp_path / "cvae.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.num_classes == 10 and loaded.class_names[7] == "digit 7"
    z = vae.sample_latents(5, seed=3)
    np.testing.assert_allclose(loaded.decode(z, labels="digit 7"), vae.decode(z, labels=7), atol=1e-6)
    # A model saved before conditioning existed has no num_classes in its config: unconditional.
    plain = keras_vae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden_units=(16,))
    config = plain.get_config()
    assert config["num_classes"] is None and config["class_names"] is None
    for key in ("num_classes", "class_names"):
        del config[key]
    assert not keras_vae.VAE.from_config(config).conditional


@backend
def test_label_errors(labelled_digits):
    (x, y), _ = labelled_digits
    vae = keras_vae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden_units=(8,), num_classes=10)
    vae.compile(optimizer="adam")
    with pytest.raises(ValueError, match="fit\\(x, y\\)"):
        vae.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        vae.fit(x, y + 1, epochs=1, verbose=0)  # label 10
    with pytest.raises(ValueError, match=r"0\.\.9"):
        vae.sample(2)
    with pytest.raises(ValueError, match="unconditional"):
        keras_vae.VAE(input_shape=(8, 8, 1), latent_dim=2, hidden_units=(8,)).sample(2, labels=1)
    with pytest.raises(ValueError, match="num_classes"):
        keras_vae.VAE(input_shape=(8, 8, 1), num_classes=1)
    with pytest.raises(ValueError, match="distinct"):
        keras_vae.VAE(input_shape=(8, 8, 1), num_classes=2, class_names=["a", "a"])


@backend
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="ONNX export runs under TensorFlow")
def test_export_with_a_label_input(labelled_digits, tmp_path):
    """The exported decoder and encoder take `label`; onnxruntime agrees with Keras for every
    class; the metadata lists the class names; an unconditional export keeps one input."""
    from keras_vae.serving.likelihood import onnx_log_likelihood
    from keras_vae.export.onnx import export_decoder, export_encoder
    from keras_vae.export.int8 import export_int8_decoder
    from keras_vae.export.triton import write_triton_repository
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler

    vae = _fit(labelled_digits, epochs=3)
    summary = export_decoder(vae, str(tmp_path / "decoder.onnx"))
    assert summary["inputs"] == {"z": ["batch", 4], "label": ["batch"]}
    export_encoder(vae, str(tmp_path / "encoder.onnx"))
    sampler, encoder = Sampler(tmp_path / "decoder.onnx"), Encoder(tmp_path / "encoder.onnx")
    assert sampler.class_names == tuple(str(k) for k in range(10))
    z, labels = vae.sample_latents(30, seed=1), np.arange(30) % 10
    np.testing.assert_allclose(sampler.decode(z, labels=labels), vae.decode(z, labels=labels), atol=1e-5)
    np.testing.assert_allclose(sampler.sample(6, seed=2, labels=4), vae.sample(6, seed=2, labels=4), atol=1e-5)
    x, y = labelled_digits[1][0][:20], labelled_digits[1][1][:20]
    np.testing.assert_allclose(onnx_log_likelihood(encoder, sampler, x, num_samples=30, labels=y),
                               vae.log_likelihood(x, y, num_samples=30), atol=1e-3)
    int8 = export_int8_decoder(vae, str(tmp_path / "int8.onnx"), x, test_labels=y, nll_samples=20,
                               force=True)
    assert Sampler(tmp_path / "int8.onnx").class_names == sampler.class_names
    assert abs(int8["int8"]["cost"]) < 1.0
    config = open(write_triton_repository(str(tmp_path / "decoder.onnx"), str(tmp_path / "repo"),
                                          "vae", 4, (8, 8, 1), conditional=True)
                  + "/config.pbtxt").read()
    assert 'name: "label"' in config and "TYPE_INT64" in config

    plain = keras_vae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden_units=(16,))
    export_decoder(plain, str(tmp_path / "plain.onnx"))
    plain_sampler = Sampler(tmp_path / "plain.onnx")
    assert plain_sampler.class_names is None and plain_sampler.label_name is None
    assert "class_names" not in plain_sampler.metadata


@pytest.mark.slow
def test_train_conditional_evaluate_export_end_to_end(tmp_path):
    backend = "jax"  # once: the commands' code is the same on every backend
    run = str(tmp_path / "run")
    run_python(["-m", "keras_vae", "train", "--conditional", "--epochs", "2", "--latent-dim", "4",
                "--hidden-units", "32", "--out", run], backend=backend)
    run_python(["-m", "keras_vae", "evaluate", run, "--num-samples", "10"], backend=backend)
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["likelihood"] == "p(x|y)" and metrics["class_names"][9] == "9"
    run_python(["-m", "keras_vae", "export", run, "--out", str(tmp_path / "d.onnx")])
    from keras_vae.serving.sampler import Sampler

    assert Sampler(tmp_path / "d.onnx").class_names == tuple(str(k) for k in range(10))


def test_train_conditional_without_labels_is_a_clear_error(tmp_path, capsys):
    from keras_vae.commands.train import main

    path = tmp_path / "unlabelled.npz"
    images = np.zeros((20, 8, 8), np.uint8)
    np.savez(path, x_train=images, x_test=images)
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(path), "--conditional", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert exit_info.value.code != 0
    assert "--conditional trains on the dataset's labels" in str(exit_info.value.code)
