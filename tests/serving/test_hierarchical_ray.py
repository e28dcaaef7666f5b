"""A hierarchical export on Ray Serve: the replicas build the same app (``create_app``), so
per-group temperatures, decode, encode and scoring with log_weight.onnx work there as in
``keras-vae serve``, with Ray's ``@serve.batch`` doing the decode batching."""

from __future__ import annotations

import io
import logging
import socket

import numpy as np
import pytest

ray = pytest.importorskip(
    "ray", reason="Ray Serve is not installed (pip install 'ray[serve]'); skipping its tests")
serve = pytest.importorskip(
    "ray.serve", reason="Ray Serve is not installed (pip install 'ray[serve]'); skipping its tests")

import httpx  # noqa: E402
from helpers.hierarchical_fixtures import make_hierarchical_onnx  # noqa: E402

from keras_vae.core import contract, hierarchy  # noqa: E402
from keras_vae.serving.hierarchical import LogWeightModel  # noqa: E402
from keras_vae.serving.ray_app import build_app  # noqa: E402

pytestmark = pytest.mark.slow

D = 7
TOL = {"rtol": 1e-4, "atol": 1e-4}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_hierarchical_onnx(tmp_path_factory.mktemp("hierarchical_ray"))


@pytest.fixture(scope="module")
def client(fx):
    port = _free_port()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
             logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app({"model": str(fx.decoder), "encoder": str(fx.encoder), "num_replicas": "1",
                         "num_cpus": "0.5", "max_batch_size": "32", "batch_wait_ms": "20"})
        serve.run(app, name="vae", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            yield c
    finally:
        serve.shutdown()
        ray.shutdown()


def test_the_replicas_serve_a_hierarchical_export(client, fx):
    info = client.get("/v1/model").json()
    assert info["model"] == "hierarchical" and info["log_weight"]["path"] == "log_weight.onnx"
    reply = client.post("/v1/generate", json={"n": 3, "seed": 2, "temperatures": [1.0, 0.0],
                                              "format": "npy"})
    noise = contract.draw_latents(3, D, None, 2, 1.0)
    noise[:, 3:] = 0
    np.testing.assert_allclose(np.load(io.BytesIO(reply.content)), fx.decode(noise), **TOL)
    bad = client.post("/v1/decode", json={"z": [[0.0] * (D + 1)]})
    assert bad.status_code == 422 and bad.json()["error"]
    x = fx.sample_images(2, seed=5)
    encoded = client.post("/v1/encode", json={"images": x.tolist()}).json()
    np.testing.assert_allclose(encoded["z_mean"], fx.encode(x)[0], **TOL)
    score = client.post("/v1/score", json={"images": x.tolist(), "num_samples": 30, "seed": 1}).json()
    want = hierarchy.log_likelihood(x, LogWeightModel(fx.log_weight_path, provider="cpu").log_weights,
                                    D, num_samples=30, seed=1)
    np.testing.assert_allclose(score["log_px"], want, atol=1e-4)
