"""Hierarchical (multi-group latent) exports: core, onnxruntime, the server, KServe and the CLIs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers.hierarchical_fixtures import GROUPS, make_hierarchical_onnx
from helpers import servers
from helpers.onnx_fixtures import make_decoder_onnx

from keras_vae.core import contract, hierarchy
from keras_vae.core.likelihood import log_mean_exp
from keras_vae.serving import hierarchical
from keras_vae.serving.app import create_app
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.hierarchical import LogWeightModel, find_log_weight, hierarchical_scores
from keras_vae.serving.sampler import ModelLoadError, Sampler

REPO = Path(__file__).resolve().parents[2]
D = 7
TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_hierarchical_onnx(tmp_path_factory.mktemp("hierarchical"))


@pytest.fixture(scope="module")
def sampler(fx):
    return Sampler(fx.decoder, provider="cpu", intra_op_threads=1)


@pytest.fixture(scope="module")
def encoder(fx):
    return Encoder(fx.encoder, provider="cpu", intra_op_threads=1)


@pytest.fixture(scope="module")
def log_weight(fx):
    return LogWeightModel(fx.log_weight_path, provider="cpu", intra_op_threads=1)


@pytest.fixture(scope="module")
def client(sampler, encoder):
    app = create_app(sampler, encoder=encoder, max_batch_size=32, max_score_samples=500)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def images(fx):
    return fx.sample_images(4, seed=3)


# ------------------------------------------------------------------ onnxruntime vs NumPy


def test_graphs_match_the_numpy_references(fx, sampler, encoder, log_weight, images):
    noise = np.random.default_rng(0).standard_normal((6, D)).astype(np.float32)
    np.testing.assert_allclose(sampler.decode(noise), fx.decode(noise), **TOL)
    z_mean, z_log_var = encoder.encode(images)
    ref_mean, ref_log_var = fx.encode(images)
    np.testing.assert_allclose(z_mean, ref_mean, **TOL)
    np.testing.assert_allclose(z_log_var, ref_log_var, **TOL)
    x = np.repeat(images, 2, axis=0)[:6]
    np.testing.assert_allclose(log_weight.log_weights(x, noise), fx.log_weight(x, noise), rtol=1e-5, atol=1e-3)
    # noise 0 decodes the chain of prior means
    np.testing.assert_allclose(sampler.decode(np.zeros((1, D)))[0], fx.decode(np.zeros((1, D)))[0], **TOL)


def test_sampler_reads_the_groups(sampler):
    assert sampler.groups == GROUPS and sampler.latent_dim == D
    info = hierarchical.describe(sampler)
    assert info["model"] == "hierarchical"
    assert [g["name"] for g in info["latent_groups"]] == ["group_0", "group_1"]


def test_log_weight_errors_name_the_expected_shape(log_weight, images):
    with pytest.raises(ValueError, match=r"epsilon must be a 2-D array of shape \[4, 7\]"):
        log_weight.log_weights(images, np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"images must be an array of shape \[n, 4, 4, 1\]"):
        log_weight.log_weights(np.zeros((4, 3, 3, 1)), np.zeros((4, D)))


def test_estimator_matches_the_closed_form(fx, log_weight, images):
    exact = fx.exact_log_px(images)
    estimate = hierarchy.log_likelihood(images, log_weight.log_weights, D, num_samples=3000, seed=0)
    np.testing.assert_allclose(estimate, exact, atol=0.05)
    # the ELBO is below
    _, weights = next(hierarchy.noise_log_weights(images, log_weight.log_weights, D, 200))
    assert np.all(weights.mean(0) < exact)


def test_estimator_noise_does_not_depend_on_batching(fx, images):
    seen = []

    def record(x, eps):
        seen.append(eps.copy())
        return fx.log_weight(x, eps)

    a = hierarchy.log_likelihood(images, record, D, num_samples=10, batch_size=4, samples_per_chunk=10)
    first = np.concatenate([e.reshape(10, 4, D) for e in seen], 0)
    seen.clear()
    b = hierarchy.log_likelihood(images, record, D, num_samples=10, batch_size=3, samples_per_chunk=4)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    # image i's noise is default_rng([seed, i]), as keras_vae.core.likelihood draws it
    expected = np.random.default_rng([0, 2]).standard_normal((10, D), dtype=np.float32)
    np.testing.assert_array_equal(first[:, 2], expected)


def test_scores_from_the_three_files(fx, sampler, encoder, log_weight, images):
    scores = hierarchical_scores(encoder, sampler, log_weight, images, num_samples=50, seed=1)
    eps = np.stack([np.random.default_rng([1, i]).standard_normal((50, D), dtype=np.float32)
                    for i in range(len(images))], axis=1)  # (K, N, D)
    weights = np.stack([fx.log_weight(images, e) for e in eps])
    np.testing.assert_allclose(scores.log_px, log_mean_exp(weights), atol=2e-3)
    np.testing.assert_allclose(scores.elbo, weights.mean(0), atol=2e-3)
    recon = fx.decode(fx.encode(images)[0])
    np.testing.assert_allclose(scores.recon, np.mean((recon - images) ** 2, axis=(1, 2, 3)), rtol=1e-4)
    assert scores.anomaly("typicality").shape == (4,)


# ------------------------------------------------------------------ loading


@pytest.mark.parametrize("metadata, message", [
    ({contract.LATENT_GROUPS: None}, "missing"),
    ({contract.LATENT_GROUPS: "[{"}, "not JSON"),
    ({contract.LATENT_GROUPS: '[{"name": "g", "shape": [6]}]'}, "sum to 6"),
    ({contract.LATENT_GROUPS: '[{"name": "g", "shape": [0]}, {"name": "h", "shape": [7]}]'}, "positive"),
    ({contract.MODEL: "ladder"}, "unknown model"),
])
def test_malformed_hierarchical_files_are_refused_at_load(tmp_path, metadata, message):
    fx = make_hierarchical_onnx(tmp_path, metadata=metadata, log_weight=False)
    with pytest.raises(ModelLoadError, match=message):
        Sampler(fx.decoder, provider="cpu")
    with pytest.raises(ModelLoadError, match=message):
        create_app(str(fx.decoder), provider="cpu")


def test_server_start_refuses_a_malformed_file(tmp_path):
    fx = make_hierarchical_onnx(tmp_path, metadata={contract.LATENT_GROUPS: "[]"}, log_weight=False)
    result = subprocess.run([sys.executable, "-m", "keras_vae.serving.server", str(fx.decoder),
                             "--port", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "malformed latent_groups metadata" in result.stderr


def test_single_latent_files_load_unchanged(tmp_path):
    sampler = Sampler(make_decoder_onnx(tmp_path / "decoder.onnx"), provider="cpu")
    assert sampler.groups is None and hierarchical.describe(sampler) == {}
    assert sampler.latents(3, seed=1).tobytes() == contract.draw_latents(3, 4, None, 1).tobytes()
    assert hierarchical.latents(sampler, 3, 1, 1.0).tobytes() == sampler.latents(3, 1).tobytes()
    with pytest.raises(ValueError, match="hierarchical models only"):
        hierarchical.latents(sampler, 3, 1, 1.0, [1.0])
    with TestClient(create_app(sampler)) as c:
        reply = c.post("/v1/generate", json={"n": 1, "seed": 0, "temperatures": [1.0]})
        assert reply.status_code == 422 and "error" in reply.json()
        assert "log_weight" not in c.get("/v1/model").json()


def test_log_weight_is_found_beside_the_decoder_or_the_encoder(tmp_path, fx, sampler, encoder):
    assert find_log_weight(sampler, encoder).model_path == fx.log_weight_path
    elsewhere = tmp_path / "decoder.onnx"
    shutil.copy(fx.decoder, elsewhere)
    alone = Sampler(elsewhere, provider="cpu")
    assert find_log_weight(alone) is None
    assert find_log_weight(alone, encoder).model_path == fx.log_weight_path


# ------------------------------------------------------------------ the server


def test_model_info_lists_the_groups(client):
    info = client.get("/v1/model").json()
    assert info["model"] == "hierarchical" and info["latent_dim"] == D
    assert info["latent_groups"] == hierarchy.describe_groups(GROUPS)
    assert info["log_weight"]["path"] == "log_weight.onnx"


def test_generate_is_draw_latents_then_decode(client, fx):
    reply = client.post("/v1/generate", json={"n": 3, "seed": 5, "temperature": 0.5, "format": "npy"})
    x = np.load(io.BytesIO(reply.content))
    np.testing.assert_allclose(x, fx.decode(contract.draw_latents(3, D, None, 5, 0.5)), **TOL)


def test_generate_with_per_group_temperatures(client, fx):
    reply = client.post("/v1/generate", json={"n": 2, "seed": 5, "temperatures": [0.0, 1.0],
                                              "format": "npy"})
    assert reply.status_code == 200
    noise = contract.draw_latents(2, D, None, 5, 1.0)
    noise[:, :3] = 0
    np.testing.assert_allclose(np.load(io.BytesIO(reply.content)), fx.decode(noise), **TOL)
    both = client.post("/v1/generate", json={"n": 2, "seed": 5, "temperature": 0.5,
                                             "temperatures": [1.0, 2.0], "format": "npy"})
    noise = contract.draw_latents(2, D, None, 5, 1.0) * np.float32(0.5)
    noise[:, 3:] = contract.draw_latents(2, D, None, 5, 1.0)[:, 3:] * np.float32(1.0)
    np.testing.assert_allclose(np.load(io.BytesIO(both.content)), fx.decode(noise), **TOL)
    for bad in ([1.0], [1.0, 2.0, 3.0], [1.0, -1.0], [1.0, 11.0], "warm"):
        reply = client.post("/v1/generate", json={"n": 1, "temperatures": bad})
        assert reply.status_code == 422 and reply.json()["error"]


def test_decode_encode_reconstruct(client, fx, images):
    noise = np.random.default_rng(2).standard_normal((3, D)).astype(np.float32)
    reply = client.post("/v1/decode", json={"z": noise.tolist(), "format": "json"})
    np.testing.assert_allclose(np.array(reply.json()["images"]), fx.decode(noise), **TOL)
    encoded = client.post("/v1/encode", json={"images": images.tolist()}).json()
    ref_mean, ref_log_var = fx.encode(images)
    np.testing.assert_allclose(encoded["z_mean"], ref_mean, **TOL)
    np.testing.assert_allclose(encoded["z_log_var"], ref_log_var, **TOL)
    recon = client.post("/v1/reconstruct", json={"images": images.tolist(), "format": "json"}).json()
    np.testing.assert_allclose(np.array(recon["images"]), fx.decode(ref_mean), **TOL)


@pytest.mark.parametrize("z", [[[0.0] * 6], [[0.0] * 8], [[[0.0] * 7]], [["a"] * 7], [], [[True] * 7]])
def test_decode_refuses_wrong_noise(client, z):
    reply = client.post("/v1/decode", json={"z": z})
    assert reply.status_code == 422 and reply.json()["error"]


def test_decode_error_names_the_expected_shape(sampler):
    with pytest.raises(ValueError, match=r"shape \[n, 7\]"):
        sampler.validate_latents(np.zeros((2, 6)))


def test_score(client, fx, images):
    reply = client.post("/v1/score", json={"images": images.tolist(), "num_samples": 400, "seed": 0})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["measure"] == "nll" and body["num_samples"] == 400
    np.testing.assert_allclose(body["log_px"], fx.exact_log_px(images), atol=0.1)
    assert np.all(np.array(body["elbo"]) <= np.array(body["log_px"]))
    assert len(body["recon_mse"]) == 4 and len(body["bits_per_dim"]) == 4


def test_score_without_the_log_weight_graph(tmp_path, sampler):
    fx = make_hierarchical_onnx(tmp_path, log_weight=False)
    with TestClient(create_app(str(fx.decoder), encoder=str(fx.encoder), provider="cpu")) as c:
        assert c.get("/v1/model").json()["log_weight"] is None
        reply = c.post("/v1/score", json={"images": fx.sample_images(1).tolist()})
        assert reply.status_code == 422 and "log_weight.onnx" in reply.json()["error"]
        assert c.get("/models/log_weight.onnx").status_code == 404


def test_model_files(client, fx):
    assert client.get("/models/log_weight.onnx").content == fx.log_weight_path.read_bytes()
    assert client.get("/models/decoder.onnx").content == fx.decoder.read_bytes()


def test_kserve_metadata_and_infer(client, fx):
    meta = client.get("/v2/models/vae_decoder").json()
    assert meta["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, D]}]
    assert meta["outputs"][0]["shape"] == [-1, 4, 4, 1]
    noise = np.random.default_rng(7).standard_normal((2, D)).astype(np.float32)
    reply = client.post("/v2/models/vae_decoder/infer", json={"inputs": [
        {"name": "z", "datatype": "FP32", "shape": [2, D], "data": noise.ravel().tolist()}]})
    out = reply.json()["outputs"][0]
    np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), fx.decode(noise), **TOL)
    wrong = client.post("/v2/models/vae_decoder/infer", json={"inputs": [
        {"name": "z", "datatype": "FP32", "shape": [1, D - 1], "data": [0.0] * (D - 1)}]})
    assert wrong.status_code == 400 and "error" in wrong.json()


def test_encoder_with_other_groups_is_refused(tmp_path, fx, sampler):
    other = make_hierarchical_onnx(tmp_path, metadata={})
    import onnx
    model = onnx.load(str(other.encoder))
    for prop in model.metadata_props:
        if prop.key == contract.LATENT_GROUPS:
            prop.value = json.dumps([{"name": "top", "shape": [4]}, {"name": "bottom", "shape": [3]}])
    onnx.save(model, str(other.encoder))
    with pytest.raises(ModelLoadError, match="latent groups"):
        create_app(sampler, encoder=str(other.encoder))


def test_full_queues_shed_generate_and_score(fx, images):
    app = create_app(str(fx.decoder), encoder=str(fx.encoder), max_queue_ms=100, provider="cpu")
    with TestClient(app) as c:
        queues = app.state.serving.admission.queues
        for work_class, path, body in (
                ("sample", "/v1/generate", {"n": 1, "temperatures": [1.0, 0.5]}),
                ("score", "/v1/score", {"images": images[:1].tolist(), "num_samples": 5})):
            held = queues[work_class].add("decode", 1e9)
            refused = c.post(path, json=body)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert f"{work_class} queue" in refused.json()["error"]
            queues[work_class].remove(held)
            assert c.post(path, json=body).status_code == 200


def test_concurrent_generate_requests_go_through_the_micro_batcher(sampler, encoder, fx):
    from concurrent.futures import ThreadPoolExecutor

    app = create_app(sampler, encoder=encoder, batch_wait_ms=50)
    with TestClient(app) as c:
        def one(seed):
            reply = c.post("/v1/generate", json={"n": 2, "seed": seed, "temperatures": [1.0, 0.0],
                                                 "format": "npy"})
            return seed, np.load(io.BytesIO(reply.content))

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(8)))
        for seed, x in results:
            noise = contract.draw_latents(2, D, None, seed, 1.0)
            noise[:, 3:] = 0
            np.testing.assert_allclose(x, fx.decode(noise), **TOL)
        registry = app.state.serving.metrics.registry
        assert app.state.serving.batcher is not None
        # every row went through the micro-batcher (warm-up rows aside)
        rows = registry.get_sample_value("vae_inference_batch_rows_sum")
        calls = registry.get_sample_value("vae_inference_batch_requests_sum")
        assert rows >= 16 and calls >= 8


def test_a_hosts_own_batching_gets_the_noise(sampler, encoder, fx):
    """``decode_fn`` (the Ray Serve deployment's ``@serve.batch``) decodes the validated noise."""
    seen = []

    async def decode_fn(z):
        seen.append(z.copy())
        return sampler.decode_rows(z)

    with TestClient(create_app(sampler, encoder=encoder, decode_fn=decode_fn)) as c:
        reply = c.post("/v1/generate", json={"n": 3, "seed": 1, "temperatures": [0.5, 2.0],
                                             "format": "npy"})
        assert reply.status_code == 200
        assert c.post("/v1/score", json={"images": fx.sample_images(1).tolist(),
                                         "num_samples": 10}).status_code == 200
    want = contract.draw_latents(3, D, None, 1, 1.0) * np.repeat(np.float32([0.5, 2.0]), [3, 4])
    np.testing.assert_array_equal(seen[0], want)


# ------------------------------------------------------------------ the command lines


def test_generate_cli_per_group_temperatures(tmp_path, fx):
    out = tmp_path / "t.npy"
    command = [sys.executable, "-m", "keras_vae.serving.generate", str(fx.decoder), "-n", "2",
               "--seed", "9", "--npy", str(out), "--provider", "cpu", "--temperatures"]
    result = subprocess.run(command + ["0", "1.5"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    noise = contract.draw_latents(2, D, None, 9, 1.0) * np.repeat(np.float32([0, 1.5]), [3, 4])
    np.testing.assert_allclose(np.load(out), fx.decode(noise), **TOL)
    wrong = subprocess.run(command + ["1"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode != 0 and "one per latent group" in wrong.stderr


def test_generate_cli_writes_the_same_bytes_for_the_same_seed(tmp_path, fx, client):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.npy"
        result = subprocess.run([sys.executable, "-m", "keras_vae.serving.generate", str(fx.decoder),
                                 "-n", "3", "--seed", "9", "--npy", str(out), "--out",
                                 str(tmp_path / f"{name}.png"), "--provider", "cpu"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    served = client.post("/v1/generate", json={"n": 3, "seed": 9, "format": "npy"}).content
    np.testing.assert_array_equal(np.load(io.BytesIO(outs[0])), np.load(io.BytesIO(served)))


def test_score_cli(tmp_path, fx, images):
    data = tmp_path / "data.npz"
    np.savez(data, x_test=images, y_test=np.zeros(len(images), np.int64))
    out = tmp_path / "scores.csv"
    result = subprocess.run([sys.executable, "-m", "keras_vae.commands.score", str(fx.decoder),
                             "--dataset", str(data), "--num-samples", "300", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("index,log_px,elbo,recon_mse") and len(rows) == 5
    log_px = np.array([float(r.split(",")[1]) for r in rows[1:]])
    np.testing.assert_allclose(log_px, fx.exact_log_px(images), atol=0.1)


# ------------------------------------------------------------------ a live server


@contextlib.contextmanager
def live_server(fx, log_path):
    """``host:port`` of `keras-vae serve` with the hierarchical decoder and encoder (its
    log-weight graph found beside them)."""
    with servers.live_server(fx.decoder, fx.encoder, log_path, "--max-batch-size", "32",
                             "--max-score-samples", "200") as address:
        yield address


def test_tritonclient_round_trip(fx, tmp_path):
    import tritonclient.http as triton

    with live_server(fx, tmp_path / "server.log") as address:
        client = triton.InferenceServerClient(address, network_timeout=30)
        meta = client.get_model_metadata("vae_decoder")
        assert meta["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, D]}]
        noise = np.random.default_rng(6).standard_normal((4, D)).astype(np.float32)
        for binary in (False, True):
            inputs = [triton.InferInput("z", list(noise.shape), "FP32")]
            inputs[0].set_data_from_numpy(noise, binary_data=binary)
            out = triton.InferRequestedOutput("x_mean", binary_data=binary)
            x = client.infer("vae_decoder", inputs, outputs=[out]).as_numpy("x_mean")
            np.testing.assert_allclose(x, fx.decode(noise), **TOL)


@pytest.mark.slow
def test_every_schemathesis_check_passes_on_a_hierarchical_server(fx, tmp_path):
    from helpers.api_fuzz import fuzz  # raises AssertionError listing any failure or error

    with live_server(fx, tmp_path / "server.log") as address:
        statuses = fuzz(f"http://{address}", seconds=40,
                        known_path_parameters={"name": "vae_decoder", "version": "1"})
    print(f"\n{sum(statuses.values())} fuzzed requests, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) > 100 and not any(code >= 500 for code in statuses)
