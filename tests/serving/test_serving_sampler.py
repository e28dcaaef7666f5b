"""Tests for keras_vae.serving.sampler.Sampler against a NumPy re-implementation of the decoder."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from helpers.onnx_fixtures import make_decoder_onnx, reference_decode

from keras_vae.serving import onnx_model as onnx_model_module
from keras_vae.serving.sampler import ModelLoadError, ProviderUnavailableError, Sampler

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bernoulli_path(tmp_path_factory):
    return make_decoder_onnx(tmp_path_factory.mktemp("m") / "decoder.onnx")


@pytest.fixture(scope="module")
def gaussian_path(tmp_path_factory):
    return make_decoder_onnx(
        tmp_path_factory.mktemp("g") / "decoder.onnx",
        latent_dim=3, image_shape=(5, 6, 3), likelihood="gaussian",
        metadata={"dataset": "cifar10"},
    )


@pytest.fixture(scope="module")
def sampler(bernoulli_path):
    return Sampler(bernoulli_path, provider="cpu")


def test_serving_imports_no_deep_learning_framework():
    code = (
        "import sys\n"
        "import keras_vae.serving.sampler, keras_vae.serving.generate, keras_vae.serving.server, keras_vae.core.images\n"
        "heavy = {'keras', 'tensorflow', 'jax', 'jaxlib', 'torch'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("which", ["bernoulli_path", "gaussian_path"])
def test_decode_matches_numpy_reference(which, request):
    path = request.getfixturevalue(which)
    s = Sampler(path)
    z = np.random.default_rng(42).normal(size=(7, s.latent_dim))
    x = s.decode(z)
    assert x.dtype == np.float32 and x.shape == (7, *s.image_shape)
    np.testing.assert_allclose(x, reference_decode(path, z), rtol=1e-5, atol=1e-6)


def test_bernoulli_means_are_probabilities_and_gaussian_are_not(sampler, gaussian_path):
    x = sampler.sample(200, seed=0)
    assert 0.0 <= x.min() and x.max() <= 1.0
    g = Sampler(gaussian_path).sample(50, seed=0)
    assert g.min() < 0.0 or g.max() > 1.0  # real-valued means are not clipped


def test_metadata_is_read(sampler, gaussian_path):
    assert sampler.latent_dim == 4
    assert sampler.image_shape == (8, 8, 1)
    assert sampler.likelihood == "bernoulli"
    assert sampler.provider == "CPUExecutionProvider"
    assert sampler.input_name == "z" and sampler.output_name == "x_mean"
    assert sampler.metadata["image_shape"] == "[8, 8, 1]"
    g = Sampler(gaussian_path)
    assert (g.latent_dim, g.image_shape, g.likelihood) == (3, (5, 6, 3), "gaussian")
    assert g.metadata["dataset"] == "cifar10"
    assert set(g.metadata) >= {"latent_dim", "image_shape", "likelihood", "keras_vae_version",
                               "source_backend", "dataset", "created"}
    info = g.describe()
    assert json.loads(json.dumps(info))["image_shape"] == [5, 6, 3]


def test_a_bernoulli_export_with_logits_decodes_them_and_the_same_means(tmp_path, sampler):
    path = make_decoder_onnx(tmp_path / "logits.onnx", with_logits=True)
    s = Sampler(path)
    assert (s.output_name, s.logits_name) == ("x_mean", "logits")
    assert sampler.logits_name is None  # an older file, without the output
    z = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(s.decode(z), sampler.decode(z))  # x_mean as before
    np.testing.assert_allclose(s.decode_logits(z, batch_size=2), reference_decode(path, z, logits=True),
                               atol=1e-5)
    with pytest.raises(ValueError, match="no logits output"):
        sampler.decode_logits(z)


def test_falls_back_to_graph_shapes_without_metadata(tmp_path):
    path = make_decoder_onnx(tmp_path / "bare.onnx", latent_dim=6, image_shape=(4, 3, 3),
                             with_metadata=False)
    s = Sampler(path)
    assert s.metadata == {}
    assert (s.latent_dim, s.image_shape, s.likelihood) == (6, (4, 3, 3), "unknown")
    z = np.ones((2, 6))
    np.testing.assert_allclose(s.decode(z), reference_decode(path, z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("meta", [{"latent_dim": "5"}, {"image_shape": "[8, 8, 3]"}])
def test_metadata_contradicting_graph_is_an_error(tmp_path, meta):
    path = make_decoder_onnx(tmp_path / "bad_meta.onnx", metadata=meta)
    with pytest.raises(ModelLoadError, match="disagrees"):
        Sampler(path)


def prior_metadata(weights, means, log_vars, overrides=None):
    """The "prior" entry keras_vae's export writes: base64 little-endian float32 arrays."""
    arrays = {name: base64.b64encode(np.asarray(v, "<f4").tobytes()).decode("ascii")
              for name, v in (("weights", weights), ("means", means), ("log_vars", log_vars))}
    return {"prior": json.dumps({"type": "mixture", "components": len(weights), **arrays, **(overrides or {})})}


def test_latents_come_from_the_mixture_prior_in_the_metadata(tmp_path):
    means = np.array([[4.0, 4.0, 4.0, 4.0], [-4.0, -4.0, -4.0, -4.0]])
    log_vars = np.full((2, 4), np.log(0.04))
    path = make_decoder_onnx(tmp_path / "mixture.onnx",
                             metadata=prior_metadata([0.3, 0.7], means, log_vars))
    s = Sampler(path)
    z = s.latents(5000, seed=0)
    assert z.dtype == np.float32 and z.shape == (5000, 4)
    first = z[:, 0] > 0
    assert abs(first.mean() - 0.3) < 0.03
    np.testing.assert_allclose(z[first].mean(0), 4.0, atol=0.02)
    np.testing.assert_allclose(z[~first].std(0), 0.2, rtol=0.1)
    np.testing.assert_allclose(np.abs(s.latents(8, seed=1, temperature=0.0)), 4.0)
    np.testing.assert_array_equal(s.latents(6, seed=2), s.latents(6, seed=2))
    info = s.describe()
    assert info["prior"] == "mixture of 2 Gaussians" and "prior" not in info["metadata"]
    assert Sampler(make_decoder_onnx(tmp_path / "plain.onnx")).describe()["prior"] == "standard"


@pytest.mark.parametrize("entry", [
    "not json",
    json.dumps({"type": "flow"}),
    prior_metadata([0.5, 0.5], np.zeros((2, 3)), np.zeros((2, 3)))["prior"],  # latent_dim 4
    prior_metadata([0.5, 0.5], np.zeros((2, 4)), np.zeros((2, 4)), {"means": "***"})["prior"],
    prior_metadata([-1.0, 0.5], np.zeros((2, 4)), np.zeros((2, 4)))["prior"],
])
def test_malformed_prior_metadata_is_a_load_error(tmp_path, entry):
    path = make_decoder_onnx(tmp_path / "bad_prior.onnx", metadata={"prior": entry})
    with pytest.raises(ModelLoadError, match="malformed prior metadata"):
        Sampler(path)


def test_unparseable_metadata_falls_back_to_graph(tmp_path):
    path = make_decoder_onnx(tmp_path / "odd.onnx",
                             metadata={"latent_dim": "four", "image_shape": "not json"})
    s = Sampler(path)
    assert (s.latent_dim, s.image_shape) == (4, (8, 8, 1))


def test_missing_and_invalid_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Sampler(tmp_path / "nope.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelLoadError, match="cannot load"):
        Sampler(garbage)
    # a valid ONNX file that is not a decoder (1-D input, 1-D output)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])], "identity",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    other = tmp_path / "identity.onnx"
    onnx.save(model, str(other))
    with pytest.raises(ModelLoadError, match="not a decoder"):
        Sampler(other)


def test_provider_choice(bernoulli_path, monkeypatch):
    with pytest.raises(ValueError, match="provider must be one of"):
        Sampler(bernoulli_path, provider="tpu")
    monkeypatch.setattr(onnx_model_module.ort, "get_available_providers",
                        lambda: ["CPUExecutionProvider"])
    assert Sampler(bernoulli_path, provider="auto").provider == "CPUExecutionProvider"
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider"):
        Sampler(bernoulli_path, provider="cuda")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                    reason="CUDA is really available here")
@pytest.mark.filterwarnings("ignore:Specified provider")
def test_cuda_listed_but_unusable_falls_back_only_for_auto(bernoulli_path, monkeypatch):
    # A CPU-only onnxruntime that claims CUDA: the session falls back to CPU.
    monkeypatch.setattr(onnx_model_module.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert Sampler(bernoulli_path, provider="auto").provider == "CPUExecutionProvider"
    with pytest.raises(ProviderUnavailableError):
        Sampler(bernoulli_path, provider="cuda")


@pytest.mark.parametrize(
    "z, fragment",
    [
        (np.zeros(4), "got shape [4]"),
        (np.zeros((2, 3)), "got shape [2, 3]"),
        (np.zeros((2, 4, 1)), "got shape [2, 4, 1]"),
        (np.array([["a", "b", "c", "d"]]), "got dtype <U1"),
        (np.ones((1, 4), dtype=bool), "got dtype bool"),
        (np.ones((1, 4), dtype=complex), "got dtype complex128"),
        (np.array([[0.0, np.nan, 0.0, 0.0]]), "NaN or inf"),
        (np.array([[0.0, -np.inf, 0.0, 0.0]]), "NaN or inf"),
        (np.array([[0.0, 1e39, 0.0, 0.0]]), "NaN or inf"),  # overflows float32
        ([[0.0, 1.0, 2.0, 3.0], [1.0]], "ragged"),
        ([[None, 1.0, 2.0, 3.0]], "got dtype object"),
    ],
)
def test_decode_validation_errors(sampler, z, fragment):
    with pytest.raises(ValueError) as info:
        sampler.decode(z)
    message = str(info.value)
    assert "[n, 4]" in message and fragment in message


def test_decode_accepts_integers_and_nested_lists(sampler):
    z = np.arange(8).reshape(2, 4) - 3
    expected = reference_decode(sampler.model_path, z)
    np.testing.assert_allclose(sampler.decode(z), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sampler.decode(z.tolist()), expected, rtol=1e-5, atol=1e-6)
    assert sampler.decode(np.zeros((0, 4))).shape == (0, 8, 8, 1)


def test_sample_is_gaussian_latents_decoded(sampler):
    z = np.random.default_rng(7).standard_normal((9, 4), dtype=np.float32) * np.float32(0.5)
    np.testing.assert_allclose(sampler.sample(9, seed=7, temperature=0.5),
                               reference_decode(sampler.model_path, z), rtol=1e-5, atol=1e-6)
    big = sampler.latents(20000, seed=1, temperature=2.0)
    assert big.dtype == np.float32 and big.shape == (20000, 4)
    assert abs(big.mean()) < 0.05 and abs(big.std() - 2.0) < 0.05
    # temperature 0 decodes z = 0 for every image
    zero = sampler.sample(3, seed=1, temperature=0.0)
    np.testing.assert_allclose(zero, reference_decode(sampler.model_path, np.zeros((3, 4))),
                               rtol=1e-5, atol=1e-6)


def test_sample_determinism(sampler):
    a = sampler.sample(10, seed=3)
    np.testing.assert_array_equal(a, sampler.sample(10, seed=3))
    assert not np.allclose(a, sampler.sample(10, seed=4))
    assert not np.allclose(sampler.sample(10), sampler.sample(10))  # fresh randomness
    # batching does not change which latents are drawn
    np.testing.assert_allclose(a, sampler.sample(10, seed=3, batch_size=3), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"n": -2}, {"n": 2.5}, {"n": True}, {"n": 2, "seed": -1},
     {"n": 2, "seed": "x"}, {"n": 2, "temperature": -0.1},
     {"n": 2, "temperature": float("nan")}, {"n": 2, "temperature": "hot"},
     {"n": 2, "batch_size": 0}],
)
def test_sample_argument_errors(sampler, kwargs):
    with pytest.raises(ValueError):
        sampler.sample(**kwargs)


def test_concurrent_calls_match_serial(sampler):
    inputs = [np.random.default_rng(i).normal(size=(i % 5 + 1, 4)) for i in range(8)]
    serial = [sampler.decode(z) for z in inputs]
    serial_samples = [sampler.sample(6, seed=i) for i in range(8)]
    results: dict[int, list] = {}
    errors = []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            results[i] = [(sampler.decode(inputs[i]), sampler.sample(6, seed=i))
                          for _ in range(25)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for i in range(8):
        for decoded, sampled in results[i]:
            np.testing.assert_array_equal(decoded, serial[i])
            np.testing.assert_array_equal(sampled, serial_samples[i])
