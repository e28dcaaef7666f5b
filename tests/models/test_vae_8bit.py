"""The single-latent VAE's 8-bit decoders: the discretized logistic whose scale is a decoder output
(a function of z), the per-pixel scale of models saved before it, and the coupled logistic mixture.

Their log p(x|z) against scipy, what the z-dependent scale learns that a per-pixel one cannot, the
exported files against Keras on the same z, `keras-vae score` on those files, and the models and
exports saved with one log-scale per pixel (tests/models/data/vae_logistic_pixel_scale*, made by
keras-vae 0.1.0: a conv VAE, filters 4-8, latent 2, on 8×8×3 images built from the digits,
trained 8 epochs under TensorFlow) loading and scoring as they did.
"""

import csv
import os

import numpy as np
import pytest
import scipy.special
from helpers.discretized_reference import image_log_prob

import keras
from keras import ops

import keras_vae

pytestmark = pytest.mark.backend

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
OLD_MODEL = os.path.join(DATA, "vae_logistic_pixel_scale.keras")
OLD_DECODER = os.path.join(DATA, "vae_logistic_pixel_scale_decoder.onnx")
OLD_ENCODER = os.path.join(DATA, "vae_logistic_pixel_scale_encoder.onnx")
#: the 8 test images the old files were scored on, their log p(x) by Keras and by the ONNX files
#: (K = 50, seed 0), recorded when they were made
OLD_SCORES = os.path.join(DATA, "vae_logistic_pixel_scale_scores.npz")
SHAPE = (4, 4, 3)
EIGHT_BIT = [
    dict(likelihood="discretized_logistic"),
    dict(likelihood="discretized_logistic", logistic_scale="pixel"),
    dict(likelihood="logistic_mixture", mixture_components=3),
    dict(likelihood="logistic_mixture", mixture_components=2, architecture="conv", conv_filters=(4,)),
]
IDS = ["logistic", "logistic-pixel-scale", "mixture", "mixture-conv"]
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="ONNX export runs under TensorFlow")


def levels(n, seed, shape=SHAPE):
    return np.random.default_rng(seed).integers(0, 256, (n,) + shape)


def small_vae(shape=SHAPE, **kwargs):
    return keras_vae.VAE(input_shape=shape, **dict(dict(latent_dim=3, hidden_units=(16,), seed=1), **kwargs))


def documented_parameters(vae, raw):
    """p(x|z)'s parameters per pixel (…, H, W, P') from the decoder network's raw output, as the
    docs state the heads, written out here in NumPy: a sigmoid for locations, log-scales clipped
    to [-7, 0], the mixture's means offset by 0.5."""
    raw = np.asarray(raw, np.float64)
    channels = vae.image_shape[-1]
    if vae.likelihood == "discretized_logistic" and vae.logistic_scale == "pixel":
        log_scale = np.clip(ops.convert_to_numpy(vae.decoder_log_scale), -7.0, 0.0)
        return np.concatenate([scipy.special.expit(raw), np.broadcast_to(log_scale, raw.shape)], -1)
    if vae.likelihood == "discretized_logistic":
        return np.concatenate([scipy.special.expit(raw[..., :channels]),
                               np.clip(raw[..., channels:], -7.0, 0.0)], -1)
    m = vae.mixture_components
    params = raw.copy()
    params[..., m : m + m * channels] += 0.5
    params[..., m + m * channels : m + 2 * m * channels] = np.clip(
        params[..., m + m * channels : m + 2 * m * channels], -7.0, 0.0)
    return params


@pytest.mark.parametrize("kwargs", EIGHT_BIT, ids=IDS)
def test_log_px_given_z_is_the_decoders_distribution_by_scipy(kwargs):
    vae = small_vae(**kwargs)
    # wider raw outputs, so that locations, scales and weights differ from pixel to pixel
    last = vae.decoder.get_layer("pixels" if vae.architecture == "mlp" else "x_params")
    last.kernel.assign(3.0 * ops.convert_to_numpy(last.kernel))
    z = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")  # (K, B, D)
    pixels = levels(5, 1)
    got = ops.convert_to_numpy(vae.log_px_given_z(ops.convert_to_tensor((pixels / 255.0).astype("float32")),
                                                  ops.convert_to_tensor(z)))
    raw = ops.convert_to_numpy(vae.decoder(ops.convert_to_tensor(z.reshape(-1, 3)))).reshape(
        (2, 5) + SHAPE[:2] + (-1,))
    params = documented_parameters(vae, raw)
    family = "discretized_logistic" if vae.likelihood == "discretized_logistic" else "logistic_mixture"
    expected = [[image_log_prob(family, pixels[b], params[k, b], vae.mixture_components) for b in range(5)]
                for k in range(2)]
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    mean = vae.decode(z[0])
    assert mean.shape == (5,) + SHAPE and 0.0 <= mean.min() and mean.max() <= 1.0


def test_the_decoders_scale_follows_z_where_one_scale_per_pixel_cannot():
    # Half the images are flat (one grey level everywhere), half are noise (every level alike).
    # With the decoder's scale, a flat image's z gives narrow logistics and a noisy one's wide
    # ones, and flat images score far better than under one learned scale per pixel, which must
    # stay wide enough for the noise; on the noise the two do about as well.
    rng = np.random.default_rng(0)
    flat = np.broadcast_to(rng.integers(40, 216, (256, 1, 1, 1)), (256, 4, 4, 1))
    noisy = rng.integers(0, 256, (256, 4, 4, 1))
    x = (np.concatenate([flat, noisy]) / 255.0).astype("float32")
    nll, log_scales = {}, {}
    for scale in ("decoder", "pixel"):
        vae = small_vae((4, 4, 1), latent_dim=2, hidden_units=(32,), likelihood="discretized_logistic",
                        logistic_scale=scale, seed=0)
        vae.compile(optimizer=keras.optimizers.Adam(1e-2))
        vae.fit(x, epochs=30, batch_size=64, verbose=0)
        log_px = vae.log_likelihood(x[::8], num_samples=20)
        nll[scale] = -log_px[:32].mean(), -log_px[32:].mean()  # flat, noisy
        if scale == "decoder":
            log_scales = [vae.decoder_distribution_params(vae.encode(part)[0])[..., 1:].mean()
                          for part in (x[:256], x[256:])]
    assert log_scales[0] < log_scales[1] - 0.5, log_scales
    assert nll["decoder"][0] < nll["pixel"][0] - 5.0, nll
    assert abs(nll["decoder"][1] - nll["pixel"][1]) < 3.0, nll


def test_the_option_is_saved_and_a_model_saved_before_it_loads_with_one_scale_per_pixel(tmp_path):
    from keras_vae.models.options import with_options_saved_before

    vae = small_vae(likelihood="discretized_logistic")
    assert vae.logistic_scale == "decoder" and vae.decoder_log_scale is None
    assert vae.decoder.output.shape[-1] == 6
    config = vae.get_config()
    assert config["logistic_scale"] == "decoder"
    before = {k: v for k, v in config.items() if k != "logistic_scale"}
    assert keras_vae.VAE.from_config(before).logistic_scale == "pixel"
    assert keras_vae.VAE.from_config(config).logistic_scale == "decoder"
    # only a single-latent discretized logistic changed meaning
    for other in (dict(before, likelihood="bernoulli"), dict(before, model="hierarchical")):
        assert "logistic_scale" not in with_options_saved_before(other)
    vae.save(tmp_path / "vae.keras")
    assert keras.models.load_model(tmp_path / "vae.keras").logistic_scale == "decoder"


def test_a_run_saved_before_the_option_does_not_resume_with_the_other_scale():
    from keras_vae.training.resume import changed_options

    saved = {"model": "vae", "likelihood": "discretized_logistic", "latent_dim": 3}
    new = dict(saved, logistic_scale="decoder", mixture_components=5)
    assert changed_options(saved, new) == [
        "logistic_scale: 'pixel' (the run predates the option) -> 'decoder'"]
    assert changed_options(saved, dict(new, logistic_scale="pixel")) == []
    assert changed_options(dict(saved, likelihood="bernoulli"), dict(new, likelihood="bernoulli")) == []


def test_the_model_saved_with_one_scale_per_pixel_loads_and_scores_as_it_did():
    recorded = np.load(OLD_SCORES)
    vae = keras.models.load_model(OLD_MODEL)
    assert vae.likelihood == "discretized_logistic" and vae.logistic_scale == "pixel"
    assert vae.decoder.output.shape[-1] == 3
    log_scale = ops.convert_to_numpy(vae.decoder_log_scale)
    assert log_scale.shape == (8, 8, 3) and log_scale.std() > 0.1  # learned, per pixel
    np.testing.assert_allclose(vae.log_likelihood(recorded["images"], num_samples=50, seed=0),
                               recorded["log_px"], rtol=1e-5)


def test_the_files_exported_with_one_scale_per_pixel_score_as_they_did():
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.likelihood import onnx_log_likelihood
    from keras_vae.serving.sampler import Sampler

    recorded = np.load(OLD_SCORES)
    decoder = Sampler(OLD_DECODER, provider="cpu")
    assert decoder.params_name is None and "decoder_log_scale" in decoder.metadata
    got = onnx_log_likelihood(Encoder(OLD_ENCODER, provider="cpu"), decoder, recorded["images"],
                              num_samples=50, seed=0)
    np.testing.assert_allclose(got, recorded["onnx_log_px"], rtol=1e-9)


@tensorflow_only
def test_the_model_saved_with_one_scale_per_pixel_exports_as_it_did(tmp_path):
    from keras_vae.export.onnx import export_decoder, export_encoder
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.likelihood import onnx_log_likelihood
    from keras_vae.serving.sampler import Sampler

    recorded = np.load(OLD_SCORES)
    vae = keras.models.load_model(OLD_MODEL)
    summary = export_decoder(vae, str(tmp_path / "decoder.onnx"))
    export_encoder(vae, str(tmp_path / "encoder.onnx"))
    assert list(summary["outputs"]) == ["x_mean"]
    decoder = Sampler(tmp_path / "decoder.onnx", provider="cpu")
    assert decoder.params_name is None and "decoder_log_scale" in decoder.metadata
    got = onnx_log_likelihood(Encoder(tmp_path / "encoder.onnx", provider="cpu"), decoder,
                              recorded["images"], num_samples=50, seed=0)
    np.testing.assert_allclose(got, recorded["onnx_log_px"], rtol=1e-6)


def trained(kwargs, shape=SHAPE, **more):
    vae = small_vae(shape, **kwargs, **more)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    labels = np.arange(256) % vae.num_classes if vae.conditional else None
    vae.fit((levels(256, 2, shape) / 255.0).astype("float32"), labels, epochs=2, batch_size=64, verbose=0)
    return vae


@tensorflow_only
@pytest.mark.parametrize("kwargs", [EIGHT_BIT[0], EIGHT_BIT[2], EIGHT_BIT[3],
                                    dict(EIGHT_BIT[2], num_classes=3)],
                         ids=["logistic", "mixture", "mixture-conv", "mixture-conditional"])
def test_exported_files_score_like_keras_on_the_same_z(tmp_path, kwargs):
    from keras_vae.export.onnx import export_decoder, export_encoder
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.likelihood import onnx_log_likelihood, onnx_log_px_given_z
    from keras_vae.serving.sampler import Sampler

    vae = trained(kwargs)
    summary = export_decoder(vae, str(tmp_path / "decoder.onnx"))
    export_encoder(vae, str(tmp_path / "encoder.onnx"))
    width = 6 if vae.likelihood == "discretized_logistic" else vae.mixture_components * 10
    assert summary["outputs"]["x_params"] == ["batch", 4, 4, width]
    decoder, encoder = Sampler(tmp_path / "decoder.onnx", provider="cpu"), Encoder(tmp_path / "encoder.onnx")
    assert decoder.params_name == "x_params" and "decoder_log_scale" not in decoder.metadata
    assert decoder.metadata.get("mixture_components") == (
        None if vae.likelihood == "discretized_logistic" else str(vae.mixture_components))
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 6, 3)).astype("float32")  # (K, B, D)
    labels = np.arange(6) % 3 if vae.conditional else None
    given = {} if labels is None else {"labels": labels}
    keras_given = {} if labels is None else {"labels": ops.convert_to_tensor(labels)}
    flat_labels = {} if labels is None else {"labels": np.tile(labels, 4)}
    np.testing.assert_allclose(decoder.decode(z.reshape(-1, 3), output="x_params", **flat_labels),
                               vae.decoder_distribution_params(z.reshape(-1, 3), **flat_labels), atol=2e-5)
    np.testing.assert_allclose(decoder.decode(z[0], **given), vae.decode(z[0], **given), atol=1e-5)
    x = (levels(6, 4) / 255.0).astype("float32")
    keras_log_px = ops.convert_to_numpy(vae.log_px_given_z(ops.convert_to_tensor(x), ops.convert_to_tensor(z),
                                                           **keras_given))
    onnx_log_px = onnx_log_px_given_z(decoder)(x, z, *([] if labels is None else [labels]))
    np.testing.assert_allclose(onnx_log_px, keras_log_px, rtol=1e-5)
    np.testing.assert_allclose(onnx_log_likelihood(encoder, decoder, x, num_samples=30, seed=5, labels=labels),
                               vae.log_likelihood(x, labels, num_samples=30, seed=5), atol=1e-3)


@tensorflow_only
def test_int8_export_refuses_the_mixture_in_one_line(tmp_path, digits):
    from keras_vae.export.int8 import export_int8_decoder
    from keras_vae.export.onnx import ExportError

    vae = small_vae((8, 8, 1), likelihood="logistic_mixture")
    with pytest.raises(ExportError) as error:
        export_int8_decoder(vae, str(tmp_path / "decoder.int8.onnx"), test_images=digits[1][:10])
    assert str(error.value).startswith("int8 export is for Bernoulli and Gaussian decoders: a logistic "
                                       "mixture decoder's") and "\n" not in str(error.value)
    assert not (tmp_path / "decoder.int8.onnx").exists()


@tensorflow_only
@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [EIGHT_BIT[0], EIGHT_BIT[2]], ids=["logistic", "mixture"])
def test_keras_vae_score_gives_the_onnx_files_the_scores_of_keras(tmp_path, kwargs):
    from helpers.processes import run_python

    vae = trained(kwargs)
    test = levels(12, 5).astype("uint8")
    np.savez(tmp_path / "data.npz", x_train=levels(4, 6).astype("uint8"), x_test=test)
    vae.save(tmp_path / "model.keras")
    from keras_vae.export.onnx import export_decoder, export_encoder

    export_decoder(vae, str(tmp_path / "decoder.onnx"))
    export_encoder(vae, str(tmp_path / "encoder.onnx"))
    scores = {}
    for name, model in (("onnx", "decoder.onnx"), ("keras", "model.keras")):
        run_python(["-m", "keras_vae", "score", str(tmp_path / model), "--dataset", str(tmp_path / "data.npz"),
                    "--num-samples", "40", "--seed", "2", "--out", str(tmp_path / f"{name}.csv"), "--quiet"])
        with open(tmp_path / f"{name}.csv") as f:
            scores[name] = np.array([float(row["log_px"]) for row in csv.DictReader(f)])
    in_process = vae.log_likelihood((test / 255.0).astype("float32"), num_samples=40, seed=2)
    np.testing.assert_allclose(scores["keras"], in_process, atol=1e-3)
    np.testing.assert_allclose(scores["onnx"], in_process, atol=1e-3)
    assert np.all(scores["onnx"] < 0)  # log-probabilities of 8-bit images
