"""keras_vae.serving.likelihood (log p(x|z) of the exported files) and keras_vae.serving.onnx_metadata."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers.onnx_fixtures import make_decoder_onnx, reference_decode

from keras_vae.core import contract
from keras_vae.serving.likelihood import onnx_log_px_given_z
from keras_vae.serving.onnx_metadata import set_metadata_entry
from keras_vae.serving.sampler import Sampler


@pytest.mark.parametrize("likelihood, key, name", [
    ("gaussian", "decoder_log_var", "Gaussian"),
    ("discretized_logistic", "decoder_log_scale", "discretized logistic"),
])
def test_a_decoder_without_its_spread_cannot_be_scored(tmp_path, likelihood, key, name):
    sampler = Sampler(make_decoder_onnx(tmp_path / "d.onnx", likelihood=likelihood))
    with pytest.raises(ValueError, match=f"no {key}, so its {name} likelihood cannot be scored"):
        onnx_log_px_given_z(sampler)


@pytest.mark.parametrize("with_logits", [False, True])
def test_bernoulli_log_px_given_z_against_numpy(tmp_path, with_logits):
    """From the logits: exact, even where the sigmoid saturates; from x_mean (an older file), the
    float32 probabilities near 0 and 1 are too coarse (and floored at 1e-7): off by nats."""
    path = make_decoder_onnx(tmp_path / "d.onnx", with_logits=with_logits, weight_scale=10.0)
    z = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)  # (k, B, D)
    x = (np.random.default_rng(1).random((2, 8, 8, 1)) < 0.5).astype(np.float32)
    logits = reference_decode(path, z.reshape(-1, 4), logits=True).reshape(3, 2, 8, 8, 1)
    exact = np.sum(x * logits - np.logaddexp(0.0, logits), axis=(-3, -2, -1))
    got = onnx_log_px_given_z(Sampler(path))(x, z)
    if with_logits:
        np.testing.assert_allclose(got, exact, rtol=1e-5)
    else:
        assert np.abs(got - exact).max() > 1.0


def test_set_metadata_entry_replaces_or_adds_one_entry_as_onnx_reads_it(tmp_path):
    data = make_decoder_onnx(tmp_path / "d.onnx").read_bytes()
    added = set_metadata_entry(data, "anomaly_threshold", "{}")
    replaced = set_metadata_entry(added, contract.LATENT_DIM, "4 (replaced)")
    before = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    after = {p.key: p.value for p in onnx.load_from_string(replaced).metadata_props}
    assert after == {**before, "anomaly_threshold": "{}", contract.LATENT_DIM: "4 (replaced)"}
    assert onnx.load_from_string(replaced).graph == onnx.load_from_string(data).graph
    with pytest.raises(ValueError, match="protobuf"):
        set_metadata_entry(b"\x0a\xff", "k", "v")


@pytest.mark.parametrize("likelihood, components", [("discretized_logistic", None), ("logistic_mixture", 3)])
def test_an_8bit_decoder_is_scored_from_its_x_params_as_scipy_scores_them(tmp_path, likelihood, components):
    """log p(x|z) of a decoder that outputs p(x|z)'s parameters: each image's pixels under the
    discretized logistic, or the coupled mixture, whose parameters the graph gives (recomputed in
    NumPy from its weights), by scipy's logistic CDF."""
    from helpers.discretized_reference import image_log_prob
    from helpers.onnx_fixtures import make_params_decoder_onnx, reference_params

    shape = (2, 3, 3)
    path = make_params_decoder_onnx(tmp_path / "d.onnx", likelihood, image_shape=shape,
                                    mixture_components=components)
    sampler = Sampler(path)
    assert sampler.params_name == contract.DECODER_PARAMS and sampler.image_shape == shape
    z = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)  # (k, B, D)
    levels = np.random.default_rng(1).integers(0, 256, (2, *shape))
    levels[0, 0, 0] = (0, 255, 7)  # both edge levels
    params = reference_params(path, z.reshape(-1, 3)).reshape(3, 2, *shape[:2], -1)
    expected = [[image_log_prob(likelihood, levels[b], params[k, b], components) for b in range(2)]
                for k in range(3)]
    got = onnx_log_px_given_z(sampler)(levels / 255.0, z)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_a_mixture_decoder_without_its_components_cannot_be_scored(tmp_path):
    from helpers.onnx_fixtures import make_params_decoder_onnx

    path = make_params_decoder_onnx(tmp_path / "d.onnx", "logistic_mixture", mixture_components=2)
    data = set_metadata_entry(path.read_bytes(), contract.MIXTURE_COMPONENTS, "two")
    (tmp_path / "bad.onnx").write_bytes(data)
    with pytest.raises(ValueError, match="mixture_components metadata must be a positive integer, got 'two'"):
        onnx_log_px_given_z(Sampler(tmp_path / "bad.onnx"))
    wrong = set_metadata_entry(path.read_bytes(), contract.MIXTURE_COMPONENTS, "3")
    (tmp_path / "wrong.onnx").write_bytes(wrong)
    z = np.zeros((1, 1, 3), np.float32)
    with pytest.raises(ValueError, match="needs 30 values per pixel, got 20"):
        onnx_log_px_given_z(Sampler(tmp_path / "wrong.onnx"))(np.zeros((1, 4, 3, 3)), z)


@pytest.mark.parametrize("likelihood, components", [("discretized_logistic", None), ("logistic_mixture", 2)])
def test_v1_score_scores_an_8bit_decoder_from_its_x_params(tmp_path, likelihood, components):
    """/v1/score and keras_vae.serving.likelihood give the same log p(x) (the same noise), in
    bits per dimension too, and the page's config says to score from x_params."""
    from fastapi.testclient import TestClient
    from helpers.headless_chromium import explorer_app
    from helpers.onnx_fixtures import make_encoder_onnx, make_params_decoder_onnx

    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.likelihood import onnx_log_likelihood

    shape = (4, 3, 3)
    decoder = make_params_decoder_onnx(tmp_path / "d.onnx", likelihood, image_shape=shape,
                                       mixture_components=components)
    encoder = make_encoder_onnx(tmp_path / "e.onnx", latent_dim=3, image_shape=shape)
    images = np.random.default_rng(2).integers(0, 256, (3, *shape)) / 255.0
    want = onnx_log_likelihood(Encoder(encoder), Sampler(decoder), images, num_samples=40, seed=3)
    with TestClient(explorer_app(str(decoder), str(encoder), provider="cpu")) as client:
        reply = client.post("/v1/score", json={"images": images.tolist(), "num_samples": 40, "seed": 3})
        config = client.get("/explorer/config.json").json()
    assert reply.status_code == 200, reply.text
    body = reply.json()
    np.testing.assert_allclose(body["log_px"], want, rtol=1e-12)
    np.testing.assert_allclose(body["bits_per_dim"], -want / (36 * np.log(2)), rtol=1e-12)
    assert config["decoder_params"] is True and config["mixture_components"] == components
    assert config["tensors"]["decoder_params"] == contract.DECODER_PARAMS
