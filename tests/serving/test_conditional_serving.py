"""Serving a class-conditional export: the Sampler and Encoder, /v1, KServe v2 (tritonclient),
Ray Serve and `keras-vae generate --label`, against NumPy recomputations of small graphs.

The graphs follow the conditional contract of `keras-vae export` (`keras_vae.core.contract`):

    decoder: z float32 [batch, D], label int64 [batch] -> x_mean float32 [batch, H, W, C]
    encoder: x float32 [batch, H, W, C], label int64 [batch] -> z_mean, z_log_var [batch, D]

with `class_names` metadata. Each is a linear map of its input joined to the label's one-hot
vector (a sigmoid on the decoder's pixels), built with `onnx.helper` from fixed random
weights; `reference_decode` and `reference_encode` recompute them in NumPy as the truth.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import servers
from helpers.servers import free_port

from keras_vae.core import likelihood

REPO = Path(__file__).resolve().parents[2]
D, SHAPE, CLASSES = 3, (4, 4, 1), ("zero", "one", "two", "three", "four")
TOL = {"rtol": 1e-5, "atol": 1e-6}
VALID = '0..4 (names "zero", "one", "two", "three", "four")'


def _weights(seed, rows, cols, scale):
    return (np.random.default_rng(seed).standard_normal((rows, cols)) * scale).astype(np.float32)


def _one_hot_nodes(prefix):
    """OneHot(label) as float32 [batch, C]: the nodes and their constants."""
    depth = numpy_helper.from_array(np.array(len(CLASSES), np.int64), f"{prefix}_depth")
    values = numpy_helper.from_array(np.array([0.0, 1.0], np.float32), f"{prefix}_values")
    node = helper.make_node("OneHot", ["label", f"{prefix}_depth", f"{prefix}_values"],
                            [f"{prefix}_one_hot"], axis=-1)
    return [node], [depth, values]


def _save(graph, path, metadata):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def make_conditional_decoder(path, class_names=CLASSES):
    pixels = int(np.prod(SHAPE))
    nodes, inits = _one_hot_nodes("dec")
    inits += [numpy_helper.from_array(_weights(1, D + len(CLASSES), pixels, 1.0), "W"),
              numpy_helper.from_array(_weights(2, 1, pixels, 0.3)[0], "b"),
              numpy_helper.from_array(np.array([-1, *SHAPE], np.int64), "shape")]
    nodes += [helper.make_node("Concat", ["z", "dec_one_hot"], ["h"], axis=1),
              helper.make_node("MatMul", ["h", "W"], ["hw"]), helper.make_node("Add", ["hw", "b"], ["a"]),
              helper.make_node("Sigmoid", ["a"], ["p"]),
              helper.make_node("Reshape", ["p", "shape"], ["x_mean"])]
    graph = helper.make_graph(
        nodes, "decoder",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", D]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("x_mean", TensorProto.FLOAT, ["batch", *SHAPE])], inits)
    metadata = {"latent_dim": str(D), "image_shape": json.dumps(list(SHAPE)), "likelihood": "bernoulli"}
    if class_names is not None:
        metadata["class_names"] = json.dumps(list(class_names))
    return _save(graph, path, metadata)


def make_conditional_encoder(path):
    pixels = int(np.prod(SHAPE))
    nodes, inits = _one_hot_nodes("enc")
    inits += [numpy_helper.from_array(_weights(3, pixels + len(CLASSES), D, 0.5), "Wm"),
              numpy_helper.from_array(_weights(4, pixels + len(CLASSES), D, 0.1), "Wv"),
              numpy_helper.from_array(np.array([-1, pixels], np.int64), "flat")]
    nodes += [helper.make_node("Reshape", ["x", "flat"], ["xf"]),
              helper.make_node("Concat", ["xf", "enc_one_hot"], ["h"], axis=1),
              helper.make_node("MatMul", ["h", "Wm"], ["z_mean"]),
              helper.make_node("MatMul", ["h", "Wv"], ["z_log_var"])]
    graph = helper.make_graph(
        nodes, "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *SHAPE]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", D])
         for name in ("z_mean", "z_log_var")], inits)
    return _save(graph, path, {"latent_dim": str(D), "image_shape": json.dumps(list(SHAPE)),
                               "likelihood": "bernoulli", "class_names": json.dumps(list(CLASSES))})


def reference_decode(z, labels):
    h = np.hstack([np.asarray(z, np.float64), np.eye(len(CLASSES))[labels]])
    logits = h @ _weights(1, D + len(CLASSES), int(np.prod(SHAPE)), 1.0) + _weights(2, 1, int(np.prod(SHAPE)), 0.3)[0]
    return (1.0 / (1.0 + np.exp(-logits))).reshape(-1, *SHAPE)


def reference_encode(x, labels):
    h = np.hstack([np.asarray(x, np.float64).reshape(len(x), -1), np.eye(len(CLASSES))[labels]])
    pixels = int(np.prod(SHAPE))
    return h @ _weights(3, pixels + len(CLASSES), D, 0.5), h @ _weights(4, pixels + len(CLASSES), D, 0.1)


def _latents(seed, n):
    """What the samplers draw for a seed under the standard prior."""
    return np.random.default_rng(seed).standard_normal((n, D), dtype=np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("conditional")
    return make_conditional_decoder(root / "decoder.onnx"), make_conditional_encoder(root / "encoder.onnx")


@pytest.fixture(scope="module")
def client(files):
    from fastapi.testclient import TestClient

    from keras_vae.serving.app import create_app

    with TestClient(create_app(files[0], encoder=files[1], max_batch_size=32)) as test_client:
        yield test_client


def _npy(response):
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


# ----------------------------------------------------------- Sampler, Encoder

def test_sampler_decodes_each_label_like_numpy(files):
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler

    sampler = Sampler(files[0], provider="cpu")
    assert sampler.class_names == CLASSES and sampler.conditional
    assert sampler.describe()["class_names"] == list(CLASSES)
    z = np.random.default_rng(0).standard_normal((7, D)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 2, 0])
    np.testing.assert_allclose(sampler.decode(z, labels=labels), reference_decode(z, labels), **TOL)
    by_name = sampler.decode(z, labels=[CLASSES[k] for k in labels], batch_size=3)
    np.testing.assert_allclose(by_name, reference_decode(z, labels), **TOL)
    # the same seed gives the same z whatever the label; the label changes the images
    sevens = sampler.sample(5, seed=11, labels=3)
    np.testing.assert_allclose(sevens, reference_decode(_latents(11, 5), np.full(5, 3)), **TOL)
    assert not np.allclose(sampler.sample(5, seed=11, labels=1), sevens, atol=1e-3)
    encoder = Encoder(files[1], provider="cpu")
    encoder.check_pairs_with(sampler)
    x = np.random.default_rng(1).random((5, *SHAPE)).astype(np.float32)
    for got, expected in zip(encoder.encode(x, labels[:5]), reference_encode(x, labels[:5])):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_label_errors_name_the_classes(files, tmp_path):
    from keras_vae.serving.onnx_model import ModelLoadError
    from keras_vae.serving.sampler import Sampler

    sampler = Sampler(files[0], provider="cpu")
    z = np.zeros((2, D), np.float32)
    for labels in (None, 5, -1, "five", True, 1.5, [1, 2, 3]):
        with pytest.raises(ValueError, match=r"0\.\.4"):
            sampler.decode(z, labels=labels)
    unconditional = make_conditional_decoder(tmp_path / "no_names.onnx", class_names=None)
    with pytest.raises(ModelLoadError, match="class_names"):
        Sampler(unconditional)


# --------------------------------------------------------------------- /v1

def test_generate_and_decode_with_labels_over_http(client):
    info = client.get("/v1/model").json()
    assert info["class_names"] == list(CLASSES)
    got = _npy(client.post("/v1/generate", json={"n": 4, "label": 2, "seed": 5, "format": "npy"}))
    np.testing.assert_allclose(got, reference_decode(_latents(5, 4), np.full(4, 2)), **TOL)
    by_name = _npy(client.post("/v1/generate", json={"n": 4, "label": "two", "seed": 5, "format": "npy"}))
    np.testing.assert_array_equal(by_name, got)
    # labels repeat in turn; without any, image i gets class i mod 5
    cycled = _npy(client.post("/v1/generate", json={"n": 5, "labels": ["one", 4], "seed": 2,
                                                    "format": "npy"}))
    np.testing.assert_allclose(cycled, reference_decode(_latents(2, 5), [1, 4, 1, 4, 1]), **TOL)
    default = _npy(client.post("/v1/generate", json={"n": 7, "seed": 3, "format": "npy"}))
    np.testing.assert_allclose(default, reference_decode(_latents(3, 7), np.arange(7) % 5), **TOL)
    z = [[0.1, -0.2, 0.3], [1.0, 0.5, -1.5]]
    decoded = _npy(client.post("/v1/decode", json={"z": z, "labels": [3, 0], "format": "npy"}))
    np.testing.assert_allclose(decoded, reference_decode(z, [3, 0]), **TOL)


@pytest.mark.parametrize("body", [{"n": 2, "label": 5}, {"n": 2, "label": "five"},
                                  {"n": 2, "labels": [0, 9]}, {"n": 2, "label": True},
                                  {"n": 2, "label": 1.5}, {"n": 2, "label": -1}])
def test_bad_labels_are_422s_naming_the_classes(client, body):
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422
    assert VALID in response.json()["error"]


def test_unconditional_server_refuses_labels(tmp_path):
    from fastapi.testclient import TestClient
    from helpers.onnx_fixtures import make_decoder_onnx

    from keras_vae.serving.app import create_app

    with TestClient(create_app(make_decoder_onnx(tmp_path / "d.onnx"))) as plain:
        response = plain.post("/v1/generate", json={"n": 2, "label": 1})
        assert response.status_code == 422 and "label" in response.json()["error"]
        assert "class_names" not in plain.get("/v1/model").json()


def test_score_encode_and_reconstruct_take_labels(client):
    x = np.random.default_rng(4).random((3, *SHAPE)).astype(np.float32)
    labels = np.array([4, 0, 2])
    body = {"images": x.tolist(), "labels": labels.tolist(), "num_samples": 50, "seed": 3}
    scores = client.post("/v1/score", json=body).json()

    def log_px_given_z(x_batch, z, y_batch):  # log p(x|z, y), Bernoulli, in NumPy
        means = reference_decode(z.reshape(-1, D), np.tile(y_batch, len(z)))
        means = np.clip(means, likelihood.PROBABILITY_FLOOR, 1 - likelihood.PROBABILITY_FLOOR)
        means = means.reshape(z.shape[:2] + SHAPE)
        return np.sum(x_batch * np.log(means) + (1 - x_batch) * np.log1p(-means), axis=(-3, -2, -1))

    expected = likelihood.log_likelihood(x, reference_encode, log_px_given_z, None, num_samples=50,
                                         seed=3, labels=labels)
    np.testing.assert_allclose(scores["log_px"], expected, rtol=1e-4, atol=1e-3)
    other = client.post("/v1/score", json=dict(body, labels=[1, 1, 1])).json()
    assert not np.allclose(other["log_px"], scores["log_px"], atol=1e-2)
    for wrong in ([1], [4, 0], [4, 0, 2, 1]):  # not one per image: refused, never cycled
        short = client.post("/v1/score", json=dict(body, labels=wrong))
        assert short.status_code == 422, short.text
        assert short.json()["error"] == (f"labels must give one class per image: got {len(wrong)} "
                                         f"label{'s' if len(wrong) > 1 else ''} for 3 images")
    one = client.post("/v1/score", json=dict(body, images=x[:1].tolist(), labels=[4])).json()
    np.testing.assert_allclose(one["log_px"], scores["log_px"][:1], rtol=1e-6)
    encoded = client.post("/v1/encode", json={"images": x.tolist(), "labels": labels.tolist()}).json()
    np.testing.assert_allclose(encoded["z_mean"], reference_encode(x, labels)[0], rtol=1e-5, atol=1e-5)
    missing = client.post("/v1/encode", json={"images": x.tolist()})
    assert missing.status_code == 422 and "labels" in missing.json()["error"]
    bad = client.post("/v1/reconstruct", json={"images": x.tolist(), "labels": [7]})
    assert bad.status_code == 422 and VALID in bad.json()["error"]


def test_openapi_documents_the_label_fields(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    generate = schemas["GenerateRequest"]["properties"]
    label = json.dumps(generate["label"])
    assert '"maximum": 4' in label and '"four"' in label
    assert "labels" in schemas["ScoreRequest"]["required"]
    assert "one per image" in schemas["ScoreRequest"]["properties"]["labels"]["description"]
    assert "repeats in turn" in schemas["EncodeRequest"]["properties"]["labels"]["description"]


# ------------------------------------------------------------------ KServe v2

def test_kserve_infer_takes_z_and_label(client):
    meta = client.get("/v2/models/vae_decoder").json()
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("z", "FP32"), ("label", "INT64")]
    z = np.random.default_rng(5).standard_normal((3, D)).astype(np.float32)
    body = {"inputs": [{"name": "z", "shape": [3, D], "datatype": "FP32", "data": z.ravel().tolist()},
                       {"name": "label", "shape": [3], "datatype": "INT64", "data": [4, 1, 0]}]}
    result = client.post("/v2/models/vae_decoder/infer", json=body).json()
    got = np.asarray(result["outputs"][0]["data"], np.float32).reshape(3, *SHAPE)
    np.testing.assert_allclose(got, reference_decode(z, [4, 1, 0]), **TOL)
    body["inputs"][1]["data"] = [4, 1, 5]
    bad = client.post("/v2/models/vae_decoder/infer", json=body)
    assert bad.status_code == 400 and VALID in bad.json()["error"]
    only_z = client.post("/v2/models/vae_decoder/infer", json={"inputs": body["inputs"][:1]})
    assert only_z.status_code == 400 and "label" in only_z.json()["error"]


@contextlib.contextmanager
def live_server(files, log_path):
    """``host:port`` of `keras-vae serve` with the class-conditional decoder and encoder."""
    with servers.live_server(files[0], files[1], log_path, "--max-n", "32") as address:
        yield address


def test_tritonclient_sends_z_and_label(files, tmp_path):
    import tritonclient.http as triton

    with live_server(files, tmp_path / "server.log") as address:
        client = triton.InferenceServerClient(address, network_timeout=30)
        z = np.random.default_rng(6).standard_normal((4, D)).astype(np.float32)
        labels = np.array([[3], [3], [0], [2]], np.int64)  # [n, 1], as Triton's own configs send it
        for binary in (False, True):
            inputs = [triton.InferInput("z", list(z.shape), "FP32"),
                      triton.InferInput("label", list(labels.shape), "INT64")]
            inputs[0].set_data_from_numpy(z, binary_data=binary)
            inputs[1].set_data_from_numpy(labels, binary_data=binary)
            out = triton.InferRequestedOutput("x_mean", binary_data=binary)
            x = client.infer("vae_decoder", inputs, outputs=[out]).as_numpy("x_mean")
            np.testing.assert_allclose(x, reference_decode(z, labels[:, 0]), **TOL)


@pytest.mark.slow
def test_every_schemathesis_check_passes_with_the_label_fields(files, tmp_path):
    from helpers.api_fuzz import fuzz  # raises AssertionError listing any failure or error

    with live_server(files, tmp_path / "server.log") as address:
        statuses = fuzz(f"http://{address}", seconds=20, per_image_labels=True,
                        known_path_parameters={"name": "vae_decoder", "version": "1"})
    assert sum(statuses.values()) > 100 and not any(code >= 500 for code in statuses)


# --------------------------------------------------------- keras-vae generate

def test_generate_command_label(files, tmp_path, capsys):
    from helpers.onnx_fixtures import make_decoder_onnx

    from keras_vae.serving.generate import main

    out = tmp_path / "sevens.npy"
    assert main([str(files[0]), "-n", "4", "--label", "three", "--seed", "1", "--npy", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), reference_decode(_latents(1, 4), np.full(4, 3)), **TOL)
    assert main([str(files[0]), "-n", "3", "--label", "4", "1", "--seed", "1", "--npy", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), reference_decode(_latents(1, 3), [4, 1, 4]), **TOL)
    assert main([str(files[0]), "-n", "2", "--label", "9", "--npy", str(out)]) == 1
    assert VALID in capsys.readouterr().err
    plain = make_decoder_onnx(tmp_path / "plain.onnx")
    assert main([str(plain), "-n", "2", "--label", "1", "--npy", str(out)]) == 1
    assert "unconditional" in capsys.readouterr().err


# ------------------------------------------------------------------ Ray Serve

@pytest.mark.slow
def test_ray_serve_generates_with_labels(files):
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    import httpx

    from keras_vae.serving.ray_app import build_app

    port = free_port()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
             logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"model": str(files[0]), "encoder": str(files[1]), "num_cpus": "0.5",
                             "max_batch_size": "16"}), name="cvae", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            response = http.post("/v1/generate", json={"n": 3, "label": "four", "seed": 9,
                                                      "format": "npy"})
            np.testing.assert_allclose(_npy(response), reference_decode(_latents(9, 3), [4, 4, 4]),
                                       **TOL)
            bad = http.post("/v1/generate", json={"n": 3, "label": 5})
            assert bad.status_code == 422 and VALID in bad.json()["error"]
            z = np.random.default_rng(2).standard_normal((2, D)).astype(np.float32)
            body = {"inputs": [{"name": "z", "shape": [2, D], "datatype": "FP32",
                                "data": z.ravel().tolist()},
                               {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}
            result = http.post("/v2/models/vae_decoder/infer", json=body).json()
            got = np.asarray(result["outputs"][0]["data"], np.float32).reshape(2, *SHAPE)
            np.testing.assert_allclose(got, reference_decode(z, [1, 2]), **TOL)
    finally:
        serve.shutdown()
        ray.shutdown()
