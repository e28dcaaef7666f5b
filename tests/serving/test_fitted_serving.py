"""A prior fitted after training (prior.onnx) served: onnxruntime against NumPy, /v1/generate's
``sampler``, KServe, keras-vae generate and serve, and exports without a prior."""

from __future__ import annotations

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
from helpers.onnx_fixtures import make_decoder_onnx, reference_decode
from helpers.prior_fixtures import make_prior_onnx, with_metadata

from keras_vae.core import fitted_prior, hierarchy
from keras_vae.serving.app import create_app
from keras_vae.serving.fitted import FittedPriorModel, find_prior
from keras_vae.serving.sampler import ModelLoadError, Sampler

REPO = Path(__file__).resolve().parents[2]
D = 4
KINDS = ("gmm", "flow", "diffusion")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{kind: (decoder, prior fixture)}, each pair in a folder of its own, and a folder without a prior."""
    out = {}
    for kind in (*KINDS, None):
        folder = tmp_path_factory.mktemp(kind or "no_prior")
        decoder = make_decoder_onnx(folder / "decoder.onnx", latent_dim=D, image_shape=(8, 8, 1),
                                    with_logits=True)
        prior = make_prior_onnx(folder / fitted_prior.PRIOR_FILE, kind, D, D) if kind else None
        out[kind] = (decoder, prior)
    return out


@pytest.fixture(scope="module")
def clients(folders):
    result = {}
    with contextlib_exit_stack() as stack:
        for kind, (decoder, _) in folders.items():
            app = create_app(Sampler(decoder, provider="cpu", intra_op_threads=1), max_batch_size=64)
            result[kind] = stack.enter_context(TestClient(app))
        yield result


def contextlib_exit_stack():
    import contextlib

    return contextlib.ExitStack()


def generate(client, **body):
    response = client.post("/v1/generate", json={"format": "json", **body})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["images"], np.float32)


# ------------------------------------------------------------------ onnxruntime vs NumPy

@pytest.mark.parametrize("kind", KINDS)
def test_the_served_prior_draws_what_the_numpy_loop_draws_with_the_reference_graph(folders, kind):
    _, fixture = folders[kind]
    model = FittedPriorModel(fixture.path, provider="cpu", intra_op_threads=1)
    assert model.prior.kind == kind and model.latent_dim == D
    for seed, t in ((0, 1.0), (7, 0.4), (2**40 + 5, 2.5)):
        want = fitted_prior.draw_fitted(fixture.prior, 64, D, fixture.run, seed, t)
        np.testing.assert_allclose(model.latents(64, seed, t), want, rtol=1e-5, atol=1e-5)
    assert np.array_equal(model.latents(5, 3), model.latents(5, 3))
    assert not np.array_equal(model.latents(5, 3), model.latents(5, 4))


def test_a_prior_is_found_beside_the_decoder_and_must_fit_it(folders, tmp_path):
    decoder, fixture = folders["gmm"]
    sampler = Sampler(decoder, provider="cpu")
    assert find_prior(sampler).model_path == fixture.path
    assert find_prior(Sampler(folders[None][0], provider="cpu")) is None
    wide = make_prior_onnx(tmp_path / "wide.onnx", "flow", 5, 5)
    with pytest.raises(ModelLoadError, match="latent_dim 5, not 4"):
        find_prior(sampler, wide.path)
    narrow = make_prior_onnx(tmp_path / "narrow.onnx", "flow", 3, 4)
    with pytest.raises(ModelLoadError, match="draws z of 3 numbers, but the decoder needs its latent_dim, 4"):
        find_prior(sampler, narrow.path)
    with pytest.raises(ModelLoadError, match="is not a fitted prior"):
        find_prior(sampler, decoder)  # a decoder is no prior
    with pytest.raises(FileNotFoundError):
        find_prior(sampler, tmp_path / "missing.onnx")


@pytest.mark.parametrize("change, message", [
    ({"fitted_prior": "vae"}, "must be one of gmm, flow, diffusion"),
    ({"gmm_weights": "[1, 2"}, "gmm_weights"),
    ({"fitted_prior": "flow"}, "a flow prior's graph takes"),
    ({"fitted_prior_dim": "3"}, "epsilon of width 4, but its fitted_prior_dim metadata says 3"),
])
def test_a_malformed_prior_is_refused_at_start_in_one_line(folders, tmp_path, change, message):
    decoder, fixture = folders["gmm"]
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(decoder, folder / "decoder.onnx")
    with_metadata(fixture.path, folder / fitted_prior.PRIOR_FILE, **change)
    with pytest.raises(ModelLoadError) as info:
        create_app(str(folder / "decoder.onnx"), provider="cpu")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_keras_vae_serve_refuses_a_malformed_prior_with_one_line(folders, tmp_path):
    decoder, fixture = folders["gmm"]
    shutil.copy(decoder, tmp_path / "decoder.onnx")
    with_metadata(fixture.path, tmp_path / fitted_prior.PRIOR_FILE, gmm_weights="oops")
    done = subprocess.run([sys.executable, "-m", "keras_vae.serving.server",
                           str(tmp_path / "decoder.onnx"), "--port", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-vae serve: error: ")
    assert "gmm_weights" in lines[0] and "prior.onnx" in lines[0]


# ------------------------------------------------------------------ /v1/generate

@pytest.mark.parametrize("kind", KINDS)
def test_generate_with_the_fitted_sampler_decodes_the_loops_z(folders, clients, kind):
    decoder, fixture = folders[kind]
    got = generate(clients[kind], n=12, seed=5, temperature=0.8, sampler="fitted")
    z = fitted_prior.draw_fitted(fixture.prior, 12, D, fixture.run, seed=5, temperature=0.8)
    np.testing.assert_allclose(got, reference_decode(decoder, z), atol=1e-5)
    # the default is the model's own prior, as before
    own = generate(clients[kind], n=12, seed=5, temperature=0.8)
    assert np.array_equal(own, generate(clients[kind], n=12, seed=5, temperature=0.8, sampler="prior"))
    assert not np.allclose(own, got)
    info = clients[kind].get("/v1/model").json()["fitted_prior"]
    assert info["kind"] == kind and info["path"] == fitted_prior.PRIOR_FILE and info["dim"] == D
    assert clients[kind].get("/models/prior.onnx").content == fixture.path.read_bytes()


def test_bad_samplers_are_422_naming_the_field(clients):
    for client in clients.values():
        response = client.post("/v1/generate", json={"n": 2, "sampler": "vampprior"})
        assert response.status_code == 422
        assert response.json()["error"].startswith("sampler: ")
    response = clients[None].post("/v1/generate", json={"n": 2, "sampler": "fitted"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("sampler: ") and "this model has none" in error
    assert clients[None].get("/v1/model").json()["fitted_prior"] is None
    assert clients[None].get("/models/prior.onnx").status_code == 404
    # the API document says what each server takes
    for kind, choices in ((None, ["prior"]), ("gmm", ["prior", "fitted"])):
        schema = clients[kind].get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]
        field = schema["properties"]["sampler"]
        assert field.get("enum", [field.get("const")]) == choices


def test_an_export_without_a_prior_serves_as_before(folders, clients):
    decoder, _ = folders[None]
    sampler = Sampler(decoder, provider="cpu")
    got = generate(clients[None], n=5, seed=1, temperature=0.5)
    np.testing.assert_allclose(got, sampler.sample(5, seed=1, temperature=0.5), atol=1e-6)
    assert clients[None].get("/v2/models/vae_decoder_prior").status_code == 404


# ------------------------------------------------------------------ KServe

def kserve(client, name, inputs):
    body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": "INT64" if v.dtype == np.int64
                        else "FP32", "data": v.ravel().tolist()} for k, v in inputs.items()]}
    response = client.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


@pytest.mark.parametrize("kind", KINDS)
def test_kserve_serves_the_prior_graph_so_a_client_runs_the_loop_to_the_same_images(folders, clients, kind):
    decoder, fixture = folders[kind]
    client = clients[kind]
    meta = client.get("/v2/models/vae_decoder_prior").json()
    assert [i["name"] for i in meta["inputs"]] == list(fitted_prior.TENSORS[kind][0])
    assert meta["outputs"] == [{"name": fitted_prior.TENSORS[kind][1], "datatype": "FP32", "shape": [-1, D]}]
    assert client.get("/v2/models/vae_decoder_prior/ready").json() == {"name": "vae_decoder_prior",
                                                                        "ready": True}
    # the loop of keras_vae.core.fitted_prior, its graph called over KServe
    z = fitted_prior.draw_fitted(fixture.prior, 6, D, lambda i: kserve(client, "vae_decoder_prior", i),
                                 seed=11, temperature=1.0)
    x = kserve(client, "vae_decoder", {"z": z})
    np.testing.assert_allclose(x, generate(client, n=6, seed=11, sampler="fitted"), atol=1e-6)
    if kind != "flow":  # the second input's range is checked
        second = fitted_prior.TENSORS[kind][0][1]
        bad = {fitted_prior.TENSORS[kind][0][0]: np.zeros((1, D), np.float32),
               second: np.array([10**6], np.int64)}
        body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": "INT64" if v.dtype == np.int64
                            else "FP32", "data": v.ravel().tolist()} for k, v in bad.items()]}
        response = client.post("/v2/models/vae_decoder_prior/infer", json=body)
        assert response.status_code == 400 and second in response.json()["error"]


# ------------------------------------------------------------------ keras-vae generate

def run_generate(*args):
    return subprocess.run([sys.executable, "-m", "keras_vae.serving.generate", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_cli_writes_the_servers_png_for_the_same_seed(folders, clients, tmp_path):
    decoder, _ = folders["diffusion"]
    done = run_generate(decoder, "-n", 16, "--seed", 9, "--sampler", "fitted", "--out", tmp_path / "a.png",
                        "--npy", tmp_path / "a.npy", "--provider", "cpu")
    assert done.returncode == 0, done.stderr
    response = clients["diffusion"].post("/v1/generate", json={"n": 16, "seed": 9, "sampler": "fitted"})
    assert response.content == (tmp_path / "a.png").read_bytes()
    npy = np.load(io.BytesIO(clients["diffusion"].post(
        "/v1/generate", json={"n": 16, "seed": 9, "sampler": "fitted", "format": "npy"}).content))
    assert np.array_equal(npy, np.load(tmp_path / "a.npy"))
    done = run_generate(folders[None][0], "-n", 2, "--sampler", "fitted", "--out", tmp_path / "b.png")
    assert done.returncode == 1 and "this model has none" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = run_generate(decoder, "--prior", folders["gmm"][1].path, "--out", tmp_path / "c.png")
    assert done.returncode == 2 and "--sampler fitted" in done.stderr


# ------------------------------------------------------------------ hierarchical models

def test_a_hierarchical_models_prior_fills_its_top_group(tmp_path):
    fx = make_hierarchical_onnx(tmp_path)
    fixture = make_prior_onnx(tmp_path / fitted_prior.PRIOR_FILE, "diffusion", GROUPS[0].size,
                              fx.latent_dim, groups=GROUPS)
    with TestClient(create_app(str(fx.decoder), provider="cpu")) as client:
        got = generate(client, n=5, seed=2, temperature=0.7, temperatures=[1.5, 0.5], sampler="fitted")
        z = fitted_prior.draw_fitted(fixture.prior, 5, fx.latent_dim, fixture.run, 2, 0.7, GROUPS, [1.5, 0.5])
        np.testing.assert_allclose(got, fx.decode(z), atol=1e-4)
        noise = hierarchy.draw_noise(5, GROUPS, 2, 0.7, [1.5, 0.5])
        assert np.array_equal(z[:, 3:], noise[:, 3:])
    other = (hierarchy.LatentGroup("group_0", (4,)), hierarchy.LatentGroup("group_1", (3,)))
    with_metadata(fixture.path, tmp_path / fitted_prior.PRIOR_FILE,
                  latent_groups=hierarchy.encode_groups(other))
    with pytest.raises(ModelLoadError, match="latent groups"):
        create_app(str(fx.decoder), provider="cpu")
    json.dumps(fixture.prior.fit)
