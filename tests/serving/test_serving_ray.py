"""Tests for the Ray Serve deployment (keras_vae/serving/ray_app.py) on a local Ray instance.

One Ray instance (2 CPUs, loopback HTTP on a free port, 2 replicas of the
fixture decoder) is started for the whole module and shut down at the end.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip(
    "ray", reason="Ray Serve is not installed (pip install 'ray[serve]'); skipping its tests")
serve = pytest.importorskip(
    "ray.serve", reason="Ray Serve is not installed (pip install 'ray[serve]'); skipping its tests")

import httpx  # noqa: E402
import yaml  # noqa: E402
from helpers.onnx_fixtures import make_decoder_onnx, make_encoder_onnx, reference_decode  # noqa: E402
from helpers.onnx_fixtures import reference_encode  # noqa: E402
from helpers.prior_fixtures import make_prior_onnx  # noqa: E402
from PIL import Image  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from keras_vae.serving.options import RayAppOptions
from keras_vae.serving.ray_app import build_app, main  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TOL = {"rtol": 1e-5, "atol": 1e-6}
MAX_BATCH = 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _latents(seed, n, temperature=1.0):
    """What /v1/generate draws: numpy.random.default_rng(seed), standard normal * T."""
    z = np.random.default_rng(seed).standard_normal((n, 4), dtype=np.float32)
    return z * np.float32(temperature)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from keras_vae.core.anomaly import AnomalyThreshold
    from keras_vae.serving.scoring import write_threshold

    path = make_decoder_onnx(tmp_path_factory.mktemp("model") / "decoder.onnx")
    # an anomaly threshold (NLL above 45 nats at K = 20), which /v1/score applies in the replicas
    write_threshold(path, AnomalyThreshold("log_px", 45.0, 20, 0.1, 0.1, "fixture", 10))
    return path


@pytest.fixture(scope="module")
def fitted(model):
    """A fitted prior (a diffusion model's denoiser) beside the decoder, which the replicas find."""
    return make_prior_onnx(model.parent / "prior.onnx", "diffusion", 4, 4, steps=5)


@pytest.fixture(scope="module")
def encoder_model(tmp_path_factory):
    return make_encoder_onnx(tmp_path_factory.mktemp("model") / "encoder.onnx")


@pytest.fixture(scope="module")
def url(model, encoder_model, fitted):
    """Base URL of the app: 2 replicas on a local 2-CPU Ray instance, loopback only."""
    port = _free_port()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
             logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app({"model": str(model), "encoder": str(encoder_model), "num_replicas": "2",
                         "num_cpus": "0.5",
                         "max_batch_size": str(MAX_BATCH), "batch_wait_ms": "20",
                         "max_body_bytes": "65536"})
        serve.run(app, name="vae", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


# ------------------------------------------------------------ the running app


def test_health_and_model_info(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["latent_dim"] == 4 and info["image_shape"] == [8, 8, 1]
    assert info["max_batch"] == MAX_BATCH and info["micro_batching"] is True
    assert info["provider"] == "CPUExecutionProvider"


def test_the_replicas_draw_from_the_fitted_prior_as_the_app_does(client, model, fitted):
    from keras_vae.core.fitted_prior import draw_fitted

    assert client.get("/v1/model").json()["fitted_prior"]["kind"] == "diffusion"
    r = client.post("/v1/generate", json={"n": 6, "seed": 3, "sampler": "fitted", "format": "json"})
    assert r.status_code == 200, r.text
    z = draw_fitted(fitted.prior, 6, 4, fitted.run, seed=3)
    np.testing.assert_allclose(np.array(r.json()["images"]), reference_decode(model, z), atol=1e-5)
    r = client.post("/v1/generate", json={"n": 6, "sampler": "posterior"})
    assert r.status_code == 422 and r.json()["error"].startswith("sampler: ")
    assert client.get("/v2/models/vae_decoder_prior").json()["inputs"][1]["name"] == "t"


def test_decode_matches_reference(client, model):
    z = np.random.default_rng(0).normal(size=(3, 4))
    expected = reference_decode(model, z)
    r = client.post("/v1/decode", json={"z": z.tolist()})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["shape"] == [3, 8, 8, 1]
    np.testing.assert_allclose(np.array(r.json()["images"]), expected, **TOL)
    r = client.post("/v1/decode", json={"z": z.tolist(), "format": "npy"})
    assert r.headers["content-type"] == "application/octet-stream"
    x = np.load(io.BytesIO(r.content))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, expected, **TOL)


def test_generate_formats_and_seed_determinism(client, model):
    expected = reference_decode(model, _latents(11, 6, 0.8))
    body = {"n": 6, "seed": 11, "temperature": 0.8}

    r = client.post("/v1/generate", json={**body, "format": "npy"})
    x = np.load(io.BytesIO(r.content))
    assert x.dtype == np.float32 and x.shape == (6, 8, 8, 1)
    np.testing.assert_allclose(x, expected, **TOL)

    r = client.post("/v1/generate", json={**body, "format": "json"})
    assert r.json()["shape"] == [6, 8, 8, 1]
    np.testing.assert_allclose(np.array(r.json()["images"]), expected, **TOL)

    pngs = {client.post("/v1/generate", json={**body, "ncols": 3}).content for _ in range(4)}
    assert len(pngs) == 1  # same seed, same bytes, whichever replica answers
    with Image.open(io.BytesIO(pngs.pop())) as img:
        assert img.format == "PNG" and img.mode == "L"
        assert img.size == (3 * 9 + 1, 2 * 9 + 1)
        tile = np.asarray(img)[10:18, 19:27].astype(int)  # image 5: row 1, column 2
    assert np.abs(tile - np.rint(expected[5, ..., 0] * 255)).max() <= 1

    other = client.post("/v1/generate", json={**body, "seed": 12, "format": "npy"}).content
    assert not np.allclose(np.load(io.BytesIO(other)), x)


def _metric_values(text, name):
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                yield sample.value


def test_concurrent_requests_are_correct_and_batched(url, client, model):
    rng = np.random.default_rng(5)
    blocks = [rng.normal(size=(1 + i % 4, 4)) for i in range(48)]

    def decode(z):
        with httpx.Client(base_url=url, timeout=60) as c:
            return c.post("/v1/decode", json={"z": z.tolist(), "format": "npy"})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(decode, blocks))
    for z, r in zip(blocks, responses):
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.load(io.BytesIO(r.content)), reference_decode(model, z),
                                   **TOL)

    # Each replica reports requests per onnxruntime call; some call merged several.
    merged = False
    for _ in range(8):
        text = client.get("/metrics").text
        total = sum(_metric_values(text, "vae_inference_batch_requests_sum"))
        calls = sum(_metric_values(text, "vae_inference_batch_requests_count"))
        merged |= total > calls > 0
    assert merged, "no onnxruntime call served more than one request"


@pytest.mark.parametrize(
    "path, kwargs, status, fragment",
    [
        ("/v1/decode", {"json": {"z": [[1.0, 2.0, 3.0]]}}, 422, "z.0: List should have at least 4"),
        ("/v1/decode", {"json": {"z": [[1, 2, 3, 4], [1, 2]]}}, 422, "z.1: List should have at least 4"),
        ("/v1/decode", {"json": {"z": []}}, 422, "z: List should have at least 1 item"),
        ("/v1/decode", {"json": {"z": [[1, 2, 3, "a"]]}}, 422, "z."),
        ("/v1/generate", {"json": {"n": 0}}, 422, "n:"),
        ("/v1/generate", {"json": {"n": MAX_BATCH + 1}}, 422, "less than or equal to 32"),
        ("/v1/generate", {"json": {"n": 2, "format": "gif"}}, 422, "format"),
        ("/v1/generate", {"json": {"n": 2, "bogus": 1}}, 422, "bogus"),
        ("/v1/generate", {"content": b'{"n": 2,', "headers": {"content-type": "application/json"}},
         400, "malformed JSON"),
        ("/v1/decode", {"content": b"z=1", "headers": {"content-type": "text/plain"}},
         415, "application/json"),
        ("/v1/decode", {"content": b"0" * 70000, "headers": {"content-type": "application/json"}},
         413, "too large"),
    ],
)
def test_bad_requests_get_json_4xx(client, path, kwargs, status, fragment):
    r = client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert fragment in r.json()["error"]


def test_still_serving_after_bad_requests(client, model):
    r = client.post("/v1/decode", json={"z": [[0, 0, 0, 0]]})
    assert r.status_code == 200
    np.testing.assert_allclose(np.array(r.json()["images"]),
                               reference_decode(model, np.zeros((1, 4))), **TOL)


# --------------------------------------------------- configuration and the CLI


def test_build_app_validates_its_arguments():
    for bad, fragment in [({}, "model"), ({"model": "m.onnx", "num_replicas": "0"}, "num_replicas"),
                          ({"model": "m.onnx", "replica_count": 2}, "replica_count"),
                          ({"model": "m.onnx", "provider": "tpu"}, "provider")]:
        with pytest.raises(ValueError, match=fragment):
            build_app(bad)
    cfg = RayAppOptions.model_validate({"model": "m.onnx", "num_cpus": "2", "max_batch_size": "64"})
    assert cfg.threads() == 2 and cfg.max_batch_size == 64


def test_serve_config_file_is_valid():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((REPO / "keras_vae" / "serving" / "ray_serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "keras_vae.serving.ray_app:build_app"
    assert app.deployments[0].name == "VAEDecoder"
    RayAppOptions.model_validate(app.args)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.onnx")]) == 1
    assert main([str(tmp_path / "missing.onnx"), "--num-replicas", "0"]) == 1
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    assert main([str(tmp_path / "junk.onnx")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("keras-vae serve-ray: error:")
                                   for line in lines)
    assert "not found" in lines[0] and "replicas" in lines[1] and "ONNX" in lines[2]


def test_other_serving_modules_do_not_import_ray():
    code = (
        "import sys\n"
        "import keras_vae.serving.sampler, keras_vae.serving.generate, keras_vae.serving.server, keras_vae.core.images\n"
        "import keras_vae.serving.app, keras_vae.serving.routes.kserve, keras_vae.serving.batching, keras_vae.serving.metrics, keras_vae.serving.limits\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'ray')))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(out) == []


def test_encode_and_score_run_in_the_replicas(client, encoder_model):
    x = (np.random.default_rng(1).random((2, 8, 8, 1)) < 0.5).astype("float32")
    r = client.post("/v1/encode", json={"images": x.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["z_mean"], reference_encode(encoder_model, x)[0], **TOL)
    r = client.post("/v1/score", json={"images": x.tolist(), "num_samples": 20})
    assert r.status_code == 200 and r.json()["measure"] == "nll" and len(r.json()["log_px"]) == 2
    assert r.json()["anomalous"] == [nll > 45.0 for nll in r.json()["nll"]]
    r = client.post("/v1/score", json={"images": x.tolist(), "num_samples": 21})
    assert r.status_code == 422 and "num_samples" in r.json()["error"] and "20" in r.json()["error"]


def test_every_schemathesis_check_passes_on_the_openapi_document(url):
    from helpers.api_fuzz import fuzz  # raises AssertionError listing any failure or error

    statuses = fuzz(url, seconds=60, known_path_parameters={"name": "vae_decoder", "version": "1"})
    print(f"\n{sum(statuses.values())} fuzzed requests, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) > 100 and not any(code >= 500 for code in statuses)
