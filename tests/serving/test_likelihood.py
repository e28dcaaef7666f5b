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
