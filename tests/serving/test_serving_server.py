"""Tests for the HTTP server: /v1, KServe v2, metrics, limits and micro-batching."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import servers
from helpers.onnx_fixtures import make_decoder_onnx, make_encoder_onnx, reference_decode, reference_encode
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from keras_vae.core import likelihood
from keras_vae.serving.batching import MicroBatcher, ShuttingDown
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.sampler import ModelLoadError, Sampler
from keras_vae.serving.app import create_app

REPO = Path(__file__).resolve().parents[2]
JSON = {"content-type": "application/json"}
TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_decoder_onnx(tmp_path_factory.mktemp("model") / "decoder.onnx")


@pytest.fixture(scope="module")
def encoder_model(tmp_path_factory):
    return make_encoder_onnx(tmp_path_factory.mktemp("model") / "encoder.onnx")


@pytest.fixture(scope="module")
def sampler(model):
    return Sampler(model, provider="cpu", intra_op_threads=1)


@pytest.fixture(scope="module")
def client(sampler):
    with TestClient(create_app(sampler, max_batch_size=32, max_body_bytes=64 * 1024)) as c:
        yield c


def _latents(seed, n, temperature=1.0):
    z = np.random.default_rng(seed).standard_normal((n, 4), dtype=np.float32)
    return z * np.float32(temperature)


def _metric(text, name, **labels):
    """The value of one sample in Prometheus text, 0.0 if absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# --------------------------------------------------------------------- /v1


def test_health_and_model_info(client, model):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["model_name"] == "vae_decoder"
    assert info["latent_dim"] == 4 and info["image_shape"] == [8, 8, 1]
    assert info["likelihood"] == "bernoulli" and info["provider"] == "CPUExecutionProvider"
    assert info["metadata"]["dataset"] == "synthetic"
    assert info["max_batch"] == 32 and info["micro_batching"] is True


def test_generate_formats_match_reference(client, model):
    expected = reference_decode(model, _latents(11, 6, 0.8))
    body = {"n": 6, "seed": 11, "temperature": 0.8}

    r = client.post("/v1/generate", json={**body, "format": "npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    x = np.load(io.BytesIO(r.content))
    assert x.dtype == np.float32 and x.shape == (6, 8, 8, 1)
    np.testing.assert_allclose(x, expected, **TOL)

    r = client.post("/v1/generate", json={**body, "format": "json"})
    assert r.json()["shape"] == [6, 8, 8, 1]
    np.testing.assert_allclose(np.array(r.json()["images"]), expected, **TOL)

    r = client.post("/v1/generate", json={**body, "ncols": 3})  # png is the default
    assert r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.mode == "L" and img.size == (3 * 9 + 1, 2 * 9 + 1)
        tile = np.asarray(img)[10:18, 19:27].astype(int)  # image 5: row 1, column 2
    assert np.abs(tile - np.rint(expected[5, ..., 0] * 255)).max() <= 1
    assert r.content == client.post("/v1/generate", json={**body, "ncols": 3}).content


def test_decode_formats_match_reference(client, model):
    z = np.random.default_rng(0).normal(size=(3, 4))
    expected = reference_decode(model, z)
    r = client.post("/v1/decode", json={"z": z.tolist()})
    assert r.status_code == 200 and r.json()["shape"] == [3, 8, 8, 1]
    np.testing.assert_allclose(np.array(r.json()["images"]), expected, **TOL)
    r = client.post("/v1/decode", json={"z": z.tolist(), "format": "npy"})
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)), expected, **TOL)
    r = client.post("/v1/decode", json={"z": [[1, 2, 3, 4]], "format": "png"})
    assert r.headers["content-type"] == "image/png"


def test_large_rgb_responses(tmp_path):
    """Big responses (encoded off the event loop) and colour images are right too."""
    path = make_decoder_onnx(tmp_path / "rgb.onnx", latent_dim=3, image_shape=(32, 32, 3),
                             likelihood="gaussian")
    with TestClient(create_app(path)) as c:
        z = np.random.default_rng(9).standard_normal((8, 3), dtype=np.float32)
        expected = reference_decode(path, z)
        r = c.post("/v1/generate", json={"n": 8, "seed": 9, "format": "json"})
        np.testing.assert_allclose(np.array(r.json()["images"]), expected, rtol=1e-5, atol=1e-5)
        r = c.post("/v1/generate", json={"n": 8, "seed": 9, "ncols": 4})
        with Image.open(io.BytesIO(r.content)) as img:
            assert img.mode == "RGB" and img.size == (4 * 33 + 1, 2 * 33 + 1)
            tile = np.asarray(img)[34:66, 34:66].astype(int)  # image 5
        assert np.abs(tile - np.rint(np.clip(expected[5], 0, 1) * 255)).max() <= 1
        r = c.post(INFER, json={"inputs": [{"name": "z", "datatype": "FP32", "shape": [8, 3],
                                            "data": z.tolist()}]})
        x = np.array(r.json()["outputs"][0]["data"]).reshape(8, 32, 32, 3)
        np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_server_command_line_errors(tmp_path):
    run = subprocess.run([sys.executable, "-m", "keras_vae.serving.server", str(tmp_path / "none.onnx")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip() == (f"keras-vae serve: error: model file not found: "
                                  f"{str(tmp_path / 'none.onnx')!r}")
    help_text = subprocess.run([sys.executable, "-m", "keras_vae", "serve", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=60).stdout
    for flag in ("--host", "--port", "--model-name", "--provider", "--max-batch-size",
                 "--max-body-bytes", "--batch-wait-ms", "--no-micro-batching"):
        assert flag in help_text


# ------------------------------------------------------------------ KServe v2


def _infer_body(z, **extra):
    return {"inputs": [{"name": "z", "datatype": "FP32", "shape": list(z.shape),
                        "data": z.ravel().tolist()}], **extra}


def test_kserve_health_and_metadata(client):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "keras-vae" and "version" in server
    meta = client.get("/v2/models/vae_decoder").json()
    assert meta["name"] == "vae_decoder"
    assert meta["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "x_mean", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert client.get("/v2/models/vae_decoder/versions/1").json() == meta
    assert client.get("/v2/models/vae_decoder/ready").json() == {"name": "vae_decoder",
                                                                  "ready": True}
    for url in ("/v2/models/other", "/v2/models/other/ready", "/v2/models/vae_decoder/versions/9"):
        r = client.get(url)
        assert r.status_code == 404 and "error" in r.json()


def test_kserve_infer_json(client, model):
    z = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    r = client.post("/v2/models/vae_decoder/infer", json=_infer_body(z, id="req-7"))
    assert r.status_code == 200
    out = r.json()
    assert out["model_name"] == "vae_decoder" and out["id"] == "req-7"
    (tensor,) = out["outputs"]
    assert tensor["name"] == "x_mean" and tensor["datatype"] == "FP32"
    assert tensor["shape"] == [5, 8, 8, 1]
    x = np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    np.testing.assert_allclose(x, reference_decode(model, z), **TOL)

    # nested data, explicit outputs, versioned URL; no id in -> no id out
    nested = {"inputs": [{"name": "z", "datatype": "FP32", "shape": [5, 4],
                          "data": z.tolist()}], "outputs": [{"name": "x_mean"}]}
    r2 = client.post("/v2/models/vae_decoder/versions/1/infer", json=nested)
    assert "id" not in r2.json()
    assert r2.json()["outputs"][0]["data"] == tensor["data"]


def test_kserve_infer_binary_extension(client, model):
    z = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    header = json.dumps({
        "inputs": [{"name": "z", "datatype": "FP32", "shape": [3, 4],
                    "parameters": {"binary_data_size": z.nbytes}}],
        "outputs": [{"name": "x_mean", "parameters": {"binary_data": True}}],
    }).encode()
    r = client.post("/v2/models/vae_decoder/infer", content=header + z.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(header)),
                             "content-type": "application/octet-stream"})
    assert r.status_code == 200
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    size = head["outputs"][0]["parameters"]["binary_data_size"]
    assert size == 3 * 64 * 4 and len(r.content) == n + size
    x = np.frombuffer(r.content[n:], dtype="<f4").reshape(head["outputs"][0]["shape"])
    np.testing.assert_allclose(x, reference_decode(model, z), **TOL)


# ------------------------------------------------- encoder: encode, reconstruct, score

DIGITS = (np.random.default_rng(5).random((3, 8, 8, 1)) < 0.4).astype(np.float32)  # binary images


@pytest.fixture(scope="module")
def encoder_client(sampler, encoder_model):
    app = create_app(sampler, max_batch_size=32, max_score_samples=200, encoder=encoder_model)
    with TestClient(app) as c:
        yield c


def test_encode_and_reconstruct_match_reference(encoder_client, model, encoder_model):
    r = encoder_client.post("/v1/encode", json={"images": DIGITS.tolist()})
    assert r.status_code == 200, r.text
    z_mean, z_log_var = reference_encode(encoder_model, DIGITS)
    np.testing.assert_allclose(r.json()["z_mean"], z_mean, **TOL)
    np.testing.assert_allclose(r.json()["z_log_var"], z_log_var, **TOL)
    r = encoder_client.post("/v1/reconstruct", json={"images": DIGITS.tolist(), "format": "npy"})
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)), reference_decode(model, z_mean), **TOL)


def test_score_is_the_importance_sampled_log_likelihood(encoder_client, model, encoder_model):
    r = encoder_client.post("/v1/score", json={"images": DIGITS.tolist(), "num_samples": 200, "seed": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["measure"] == "nll" and body["num_samples"] == 200
    # The same estimator on the weights in NumPy (float64, no onnxruntime), same noise.
    expected = likelihood.log_likelihood(
        DIGITS, lambda x: reference_encode(encoder_model, x),
        lambda x, z: likelihood.bernoulli_log_prob(x, reference_decode(model, z.reshape(-1, 4)).reshape(
            z.shape[:2] + (8, 8, 1))), num_samples=200, seed=3)
    np.testing.assert_allclose(body["log_px"], expected, atol=1e-4)
    np.testing.assert_allclose(body["nll"], -expected, atol=1e-4)
    np.testing.assert_allclose(body["bits_per_dim"], -expected / (64 * np.log(2)), atol=1e-5)
    # Grey images under a Bernoulli decoder: a cross-entropy, named as one.
    grey = encoder_client.post("/v1/score", json={"images": (DIGITS * 0.5).tolist(), "num_samples": 10})
    assert grey.json()["measure"] == "cross_entropy" and "bits_per_dim" not in grey.json()


@pytest.mark.parametrize("body, fragment", [
    ({"images": DIGITS[:, :7].tolist()}, "images.0: List should have at least 8 items"),
    ({"images": (DIGITS + 1).tolist()}, "less than or equal to 1"),
    ({"images": []}, "images: List should have at least 1 item"),
    ({"images": DIGITS.tolist(), "num_samples": 201}, "num_samples: Input should be less than or equal to 200"),
    ({"images": DIGITS.tolist(), "num_samples": 0}, "num_samples:"),
    ({"images": "digits"}, "images:"),
])
def test_bad_score_requests_get_422(encoder_client, body, fragment):
    r = encoder_client.post("/v1/score", json=body)
    assert r.status_code == 422 and fragment in r.json()["error"], r.text


def test_model_files_are_served_byte_for_byte(encoder_client, client, model, encoder_model):
    assert encoder_client.get("/models/decoder.onnx").content == model.read_bytes()
    assert encoder_client.get("/models/encoder.onnx").content == encoder_model.read_bytes()
    assert encoder_client.get("/v1/model").json()["encoder"]["path"] == "encoder.onnx"
    for url in ("/models/encoder.onnx", "/v1/encode", "/v1/score"):
        r = client.get(url) if url.startswith("/models") else client.post(url, json={})
        assert r.status_code == 404 and "error" in r.json()
    assert client.get("/v1/model").json()["encoder"] is None


def test_an_encoder_that_does_not_fit_the_decoder_is_refused(sampler, tmp_path):
    other = make_encoder_onnx(tmp_path / "encoder.onnx", latent_dim=5)
    with pytest.raises(ModelLoadError, match="does not fit decoder"):
        create_app(sampler, encoder=Encoder(other))
    result = subprocess.run([sys.executable, "-m", "keras_vae.serving.server", str(sampler.model_path),
                             "--encoder", str(other)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "does not fit decoder" in result.stderr


# ------------------------------------------------------------- bad requests

GEN, DEC, INFER = "/v1/generate", "/v1/decode", "/v2/models/vae_decoder/infer"
Z1 = {"name": "z", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}
BINARY_HEADER = json.dumps({"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4],
                                        "parameters": {"binary_data_size": 16}}]}).encode()

BAD_REQUESTS = [
    # (url, kwargs for client.post, status, fragment of the error message)
    (GEN, {"json": {"n": 0}}, 422, "n:"),
    (GEN, {"json": {"n": -1}}, 422, "n:"),
    (GEN, {"json": {"n": 33}}, 422, "n: Input should be less than or equal to 32"),
    (GEN, {"json": {"n": "4"}}, 422, "valid integer"),
    (GEN, {"json": {"n": 4.5}}, 422, "valid integer"),
    (GEN, {"json": {"n": True}}, 422, "valid integer"),
    (GEN, {"json": {"seed": -1}}, 422, "seed:"),
    (GEN, {"json": {"seed": "abc"}}, 422, "seed:"),
    (GEN, {"json": {"temperature": -1}}, 422, "temperature:"),
    (GEN, {"json": {"temperature": "hot"}}, 422, "temperature:"),
    (GEN, {"content": b'{"temperature": NaN}', "headers": JSON}, 422, "finite"),
    # Extremes: a temperature that overflows z, numbers beyond float64 or float32, seeds beyond
    # JSON's safe integers (2**53 - 1, the bound the OpenAPI document states).
    (GEN, {"json": {"temperature": 1e308}}, 422, "temperature: Input should be less than or equal to 10"),
    (GEN, {"json": {"temperature": 1e38}}, 422, "temperature:"),
    (GEN, {"content": b'{"temperature": 1e999}', "headers": JSON}, 422, "temperature:"),
    (GEN, {"content": b'{"n": 1' + b"0" * 400 + b"}", "headers": JSON}, 422, "n:"),
    (GEN, {"json": {"seed": 2**53}}, 422, "seed: Input should be less than or equal to 9007199254740991"),
    (GEN, {"json": {"seed": 2**64}}, 422, "seed:"),
    (DEC, {"json": {"z": [[1e308, 0, 0, 0]]}}, 422, "z.0.0: Input should be less than or equal to 1000000"),
    (DEC, {"content": b'{"z": [[1' + b"0" * 400 + b', 0, 0, 0]]}', "headers": JSON}, 422, "z.0.0:"),
    (DEC, {"json": {"z": [["0", 0, 0, 0]]}}, 422, "z.0.0:"),
    (DEC, {"json": {"z": [[None, 0, 0, 0]]}}, 422, "z.0.0:"),
    (DEC, {"json": {"z": [[[0], 0, 0, 0]]}}, 422, "z.0.0:"),
    (DEC, {"json": {"z": [[]]}}, 422, "z.0:"),
    (INFER, {"json": {"inputs": [{**Z1, "shape": [2, 4]}]}}, 400, "has 4 values but shape [2, 4]"),
    (INFER, {"json": {"inputs": [{**Z1, "data": [1e308, 0, 0, 0]}]}}, 400, "NaN or inf"),
    (INFER, {"content": b'{"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4], '
                        b'"data": [1' + b"0" * 400 + b', 0, 0, 0]}]}', "headers": JSON}, 400, "z"),
    (INFER, {"json": {"inputs": [{**Z1, "shape": [1, 2**70]}]}}, 400, "shape.1: Input should be less"),
    (INFER, {"json": {"inputs": [{**Z1, "parameters": {"binary_data_size": "16"}}]}}, 400, "z"),
    (GEN, {"json": {"format": "gif"}}, 422, "format:"),
    (GEN, {"json": {"ncols": 0}}, 422, "ncols:"),
    (GEN, {"json": {"samples": 4}}, 422, "samples:"),
    (GEN, {"json": [1, 2]}, 422, "body"),
    (GEN, {"content": b'{"n": 4', "headers": JSON}, 400, "malformed JSON"),
    (GEN, {"content": b"n=4", "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
    (GEN, {"content": b'{"n": 4}'}, 415, "Content-Type"),
    (GEN, {}, 422, "body"),
    (DEC, {"json": {"z": [[0, 1, 2]]}}, 422, "z.0: List should have at least 4 items"),
    (DEC, {"json": {"z": [[0, 1, 2, 3], [0, 1]]}}, 422, "z.1: List should have at least 4 items"),
    (DEC, {"json": {"z": [[[0, 1, 2, 3]]]}}, 422, "z.0.0"),
    (DEC, {"json": {"z": [["a", 1, 2, 3]]}}, 422, "valid number"),
    (DEC, {"json": {"z": [[None, 1, 2, 3]]}}, 422, "valid number"),
    (DEC, {"content": b'{"z": [[0, 1, 2, NaN]]}', "headers": JSON}, 422, "z.0.3: Input should be a finite number"),
    (DEC, {"content": b'{"z": [[0, 1, 2, -Infinity]]}', "headers": JSON}, 422, "z.0.3: Input should be a finite"),
    (DEC, {"json": {"z": [[0, 1, 2, 1e39]]}}, 422, "z.0.3: Input should be less than or equal to 1000000"),
    (DEC, {"json": {"z": [[0, 1, 2, -1e6 - 1]]}}, 422, "z.0.3: Input should be greater than or equal to -1000000"),
    (DEC, {"json": {"z": []}}, 422, "z: List should have at least 1 item"),
    (DEC, {"json": {"z": [[0, 0, 0, 0]] * 33}}, 422, "z: List should have at most 32 items"),
    (DEC, {"json": {"z": "zeros"}}, 422, "z:"),
    (DEC, {"json": {}}, 422, "z: Field required"),
    (INFER, {"content": b"{oops", "headers": JSON}, 400, "malformed JSON"),
    (INFER, {"json": [Z1]}, 400, "JSON object"),
    (INFER, {"json": {}}, 400, "inputs"),
    (INFER, {"json": {"inputs": []}}, 400, "inputs"),
    (INFER, {"json": {"inputs": [{**Z1, "name": "x"}]}}, 400, "exactly one input 'z'"),
    (INFER, {"json": {"inputs": [Z1, Z1]}}, 400, "exactly one input 'z'"),
    (INFER, {"json": {"inputs": [{**Z1, "datatype": "FP64"}]}}, 400, "FP32"),
    (INFER, {"json": {"inputs": [{**Z1, "shape": [4]}]}}, 400, "shape [n, 4]"),
    (INFER, {"json": {"inputs": [{**Z1, "shape": [1, 5]}]}}, 400, "shape [n, 4]"),
    (INFER, {"json": {"inputs": [{**Z1, "shape": [0, 4], "data": []}]}}, 400, "n >= 1"),
    (INFER, {"json": {"inputs": [{**Z1, "shape": [33, 4]}]}}, 400, "at most 32"),
    (INFER, {"json": {"inputs": [{**Z1, "shape": ["1", 4]}]}}, 400, "valid integer"),
    (INFER, {"json": {"inputs": [{**Z1, "data": [0, 0, 0]}]}}, 400, "has 3 values"),
    (INFER, {"json": {"inputs": [{**Z1, "data": [0, 0, "a", 0]}]}}, 400, "must hold numbers"),
    (INFER, {"json": {"inputs": [{**Z1, "data": [[0, 0], [0]]}]}}, 400, "not a (nested) list"),
    (INFER, {"json": {"inputs": [{**Z1, "data": None}]}}, 400, "no data"),
    (INFER, {"content": b'{"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4], '
                        b'"data": [0, NaN, 0, 0]}]}', "headers": JSON}, 400, "NaN or inf"),
    (INFER, {"json": {"inputs": [Z1], "outputs": [{"name": "logits"}]}}, 400, "unknown outputs"),
    (INFER, {"content": json.dumps({"inputs": [Z1]}).encode(),
             "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
    (INFER, {"content": b"\x1f\x8b", "headers": {"content-encoding": "gzip"}}, 415, "Encoding"),
    (INFER, {"content": b"{}", "headers": {"Inference-Header-Content-Length": "99"}}, 400,
     "Inference-Header-Content-Length"),
    (INFER, {"content": BINARY_HEADER + b"\0" * 8,  # 8 of the 16 bytes declared
             "headers": {"Inference-Header-Content-Length": str(len(BINARY_HEADER))}}, 400,
     "binary_data_size"),
    ("/v2/models/other/infer", {"json": {"inputs": [Z1]}}, 404, "unknown model 'other'"),
    ("/v1/nothing", {"json": {}}, 404, "Not Found"),
]


@pytest.mark.parametrize("url, kwargs, status, fragment", BAD_REQUESTS,
                         ids=[f"{i}-{c[0].rsplit('/', 1)[-1]}" for i, c in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_json_4xx(client, url, kwargs, status, fragment):
    r = client.post(url, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and fragment in body["error"], body


@pytest.mark.parametrize("body", [{"n": 2, "temperature": 1e-320, "seed": 2**53 - 1},
                                  {"n": 2.0, "temperature": 1, "seed": 2.0**53 - 1},
                                  {"n": 2, "temperature": 10.0, "seed": 0}])
def test_extreme_but_valid_generate_requests_succeed(client, model, body):
    r = client.post(GEN, json={**body, "format": "npy"})
    assert r.status_code == 200, r.text
    x = np.load(io.BytesIO(r.content))
    expected = reference_decode(model, _latents(int(body["seed"]), 2, body["temperature"]))
    np.testing.assert_allclose(x, expected, **TOL)


def test_tiny_and_large_finite_latents_decode(client, model):
    z = [[1e-320, -1e-38, 1e6, -1e6]]  # 1e6: the largest magnitude the schema allows
    r = client.post(DEC, json={"z": z})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["images"], reference_decode(model, np.array(z, "float32")), **TOL)


def test_wrong_method_and_server_survives_bad_input(client):
    r = client.get("/v1/generate")
    assert r.status_code == 405 and "error" in r.json()
    assert client.post(GEN, json={"n": 2, "format": "json"}).status_code == 200


def test_body_size_limit(sampler):
    with TestClient(create_app(sampler, max_body_bytes=200)) as c:
        z = [[0.123456789] * 4] * 10  # about 500 bytes of JSON
        r = c.post(DEC, json={"z": z})
        assert r.status_code == 413 and "limit is 200 bytes" in r.json()["error"]

        # no Content-Length (chunked upload): the bytes actually received count
        def chunks():
            yield b'{"z": ['
            for _ in range(30):
                yield b"[0.5, 0.5, 0.5, 0.5],"
            yield b"[0, 0, 0, 0]]}"

        r = c.post(DEC, content=chunks(), headers=JSON)
        assert r.status_code == 413 and r.json()["error"].startswith("request body too large")
        assert c.post(DEC, json={"z": [[0, 0, 0, 0]]}).status_code == 200


def test_metrics_count_requests_and_images(sampler):
    with TestClient(create_app(sampler, micro_batching=False)) as c:
        for n in (1, 2, 3):
            assert c.post(GEN, json={"n": n, "format": "npy"}).status_code == 200
        assert c.post(GEN, json={"n": 0}).status_code == 422
        assert c.post(DEC, json={"z": [[0, 0, 0, 0]] * 4}).status_code == 200
        assert c.post(INFER, json={"inputs": [{**Z1, "shape": [2, 4],
                                               "data": [0] * 8}]}).status_code == 200
        assert c.get("/v2/models/nope").status_code == 404
        assert c.get("/no/such/path").status_code == 404
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    count = "vae_http_requests_total"
    assert _metric(text, count, route=GEN, method="POST", status="200") == 3
    assert _metric(text, count, route=GEN, method="POST", status="422") == 1
    assert _metric(text, count, route=DEC, status="200") == 1
    assert _metric(text, count, route="/v2/models/{name}/infer", status="200") == 1
    assert _metric(text, count, route="/v2/models/{name}", status="404") == 1
    assert _metric(text, count, route="unmatched", status="404") == 1
    assert _metric(text, "vae_http_request_duration_seconds_count", route=GEN) == 4
    assert _metric(text, "vae_images_generated_total") == 1 + 2 + 3 + 4 + 2
    # without micro-batching every request is its own onnxruntime call
    assert _metric(text, "vae_inference_batch_requests_count") == 5
    assert _metric(text, "vae_inference_batch_requests_sum") == 5


def test_two_apps_in_one_process_have_separate_metrics(sampler):
    with TestClient(create_app(sampler)) as a, TestClient(create_app(sampler)) as b:
        a.get("/healthz")
        a.get("/healthz")
        b.get("/healthz")
        count_a = _metric(a.get("/metrics").text, "vae_http_requests_total", route="/healthz")
        count_b = _metric(b.get("/metrics").text, "vae_http_requests_total", route="/healthz")
    assert (count_a, count_b) == (2, 1)


# ---------------------------------------------------------- micro-batching


@pytest.mark.parametrize("micro_batching", [True, False])
def test_concurrent_requests_get_their_own_results(sampler, model, micro_batching):
    app = create_app(sampler, batch_wait_ms=20, micro_batching=micro_batching)
    latents = [np.random.default_rng(i).normal(size=(i % 4 + 1, 4)) for i in range(48)]
    with TestClient(app) as c:
        def call(i):
            if i % 3 == 2:  # mix the v1 and v2 APIs in the same batches
                z = latents[i].astype(np.float32)
                r = c.post(INFER, json=_infer_body(z, id=str(i)))
                assert r.json()["id"] == str(i)
                return np.array(r.json()["outputs"][0]["data"]).reshape(-1, 8, 8, 1)
            r = c.post(DEC, json={"z": latents[i].tolist(), "format": "npy"})
            return np.load(io.BytesIO(r.content))

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(48)))
        text = c.get("/metrics").text
    for z, x in zip(latents, results):
        np.testing.assert_allclose(x, reference_decode(model, z), **TOL)
    calls = _metric(text, "vae_inference_batch_requests_count")
    assert _metric(text, "vae_inference_batch_requests_sum") == 48
    if micro_batching:
        assert calls < 48  # requests were merged
    else:
        assert calls == 48


def test_micro_batcher_merges_splits_and_shuts_down():
    calls = []

    def decode(z):
        calls.append(len(z))
        time.sleep(0.005)
        return z[:, :, None, None] * 2.0  # [n, d] -> [n, d, 1, 1]

    async def scenario():
        batcher = MicroBatcher(decode, max_batch=10, wait_ms=50)
        await batcher.start()
        blocks = [np.full((i % 3 + 1, 2), i, dtype=np.float32) for i in range(20)]
        results = await asyncio.gather(*(batcher.decode(b) for b in blocks))
        for b, x in zip(blocks, results):
            np.testing.assert_array_equal(x, b[:, :, None, None] * 2.0)
        # a request cancelled while queued does not disturb the others
        doomed = asyncio.ensure_future(batcher.decode(np.zeros((1, 2), np.float32)))
        kept = asyncio.ensure_future(batcher.decode(np.ones((2, 2), np.float32)))
        await asyncio.sleep(0)
        doomed.cancel()
        np.testing.assert_array_equal(await kept, np.full((2, 2, 1, 1), 2.0))
        # requests queued at shutdown fail cleanly instead of hanging
        pending = asyncio.ensure_future(batcher.decode(np.ones((1, 2), np.float32)))
        await asyncio.sleep(0)
        await batcher.stop()
        with pytest.raises(ShuttingDown):
            await pending
        with pytest.raises(ShuttingDown):
            await batcher.decode(np.ones((1, 2), np.float32))

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert calls[-1] == 2  # the kept request alone: the cancelled one was skipped
    assert sum(calls[:-1]) == sum(i % 3 + 1 for i in range(20))  # every row decoded once
    assert max(calls) <= 10 and len(calls) < 20


# ------------------------------------------------- live server + tritonclient


@pytest.fixture(scope="module")
def live_server(model, encoder_model, tmp_path_factory):
    """``host:port`` of `keras-vae serve` in a subprocess, stopped after the tests."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with servers.live_server(model, encoder_model, log_path, "--max-score-samples", "50",
                             "--max-n", "32") as address:
        yield address


def test_tritonclient_round_trip(live_server, model):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(live_server, network_timeout=30)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("vae_decoder")
        meta = client.get_model_metadata("vae_decoder")
        assert meta["inputs"][0]["shape"] == [-1, 4]
        z = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)
        expected = reference_decode(model, z)
        for binary in (False, True):
            inp = triton.InferInput("z", list(z.shape), "FP32")
            inp.set_data_from_numpy(z, binary_data=binary)
            out = triton.InferRequestedOutput("x_mean", binary_data=binary)
            result = client.infer("vae_decoder", [inp], outputs=[out], request_id="abc")
            x = result.as_numpy("x_mean")
            assert x.dtype == np.float32 and x.shape == (6, 8, 8, 1)
            np.testing.assert_allclose(x, expected, **TOL)
            assert result.get_response()["id"] == "abc"
            sent_binary = "parameters" in result.get_response()["outputs"][0]
            assert sent_binary == binary
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.infer("not_a_model", [inp])
        bad = triton.InferInput("z", [2, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((2, 3), np.float32), binary_data=False)
        with pytest.raises(InferenceServerException, match=r"shape \[n, 4\]"):
            client.infer("vae_decoder", [bad])
    finally:
        client.close()


@pytest.mark.slow
def test_every_schemathesis_check_passes_on_the_openapi_document(live_server):
    from helpers.api_fuzz import fuzz  # raises AssertionError listing any failure or error

    statuses = fuzz(f"http://{live_server}", seconds=60,
                    known_path_parameters={"name": "vae_decoder", "version": "1"})
    print(f"\n{sum(statuses.values())} fuzzed requests, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) > 500 and not any(code >= 500 for code in statuses)
