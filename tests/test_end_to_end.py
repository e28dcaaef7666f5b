"""The pipelines end to end, each backend in its own process: train -> evaluate -> load
anywhere -> export to ONNX -> sample with onnxruntime."""

import csv
import json
import os

import numpy as np
import onnx
import onnxruntime
import pytest

from helpers.processes import BACKENDS
from helpers.processes import markdown_rows
from helpers.processes import run_python

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One short training run on digits per backend: {backend: run_dir}.

    The JAX run has gated layers, as README's MNIST recipe does, so that loading across
    backends, export parity and serving cover them too.
    """
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for backend in BACKENDS:
        run_dir = str(root / backend)
        run_python(["pipelines/train.py", "--epochs", "4", "--latent-dim", "8", "--hidden-units",
                    "128", "--kl-warmup-steps", "10", "--checkpoint-every", "2",
                    "--dynamic-binarization", "--quiet", "--out", run_dir,
                    *(["--gated"] if backend == "jax" else [])], backend)
        runs[backend] = run_dir
    return runs


@pytest.fixture(scope="module")
def decoded(runs, tmp_path_factory):
    """Every run's model decoded on the same z under every backend: {loader: npz}."""
    root = tmp_path_factory.mktemp("decoded")
    results = {}
    for loader in BACKENDS:
        out = str(root / f"{loader}.npz")
        run_python(["tests/helpers/decode_worker.py", out, *runs.values()], loader)
        results[loader] = dict(np.load(out))
    return results


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_writes_a_complete_run_directory(runs, backend):
    run_dir = runs[backend]
    for name in ("config.json", "model.keras", "last.keras", "history.csv", "samples.png",
                 "reconstructions.png", "logs", "checkpoints/epoch_0004.keras"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert not os.path.exists(os.path.join(run_dir, "backup")), "a finished run keeps no backup"
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["backend"] == backend and config["image_shape"] == [8, 8, 1]
    assert backend in config["versions"] and config["hidden_units"] == [128]
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluate_reports_nll_at_least_as_tight_as_the_elbo(runs, backend, tmp_path):
    result = run_python(["pipelines/evaluate.py", runs[backend], "--num-samples", "100",
                         "--out", str(tmp_path)], backend)
    assert "Test ELBO" in result.stdout
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["num_images"] == 360 and metrics["backend"] == backend
    assert metrics["test_binarized"] is True and "cross_entropy" not in metrics
    assert metrics["nll"] <= -metrics["elbo"] + 3 * metrics["nll_standard_error"]
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll"] / (64 * np.log(2)))
    for name in ("test_reconstructions.png", "test_samples.png", "latent_space.png",
                 "interpolation.png"):
        assert (tmp_path / name).stat().st_size > 100


def test_evaluation_names_a_cross_entropy_and_binarizes_for_binarized_runs(tmp_path):
    import keras

    import keras_vae
    from keras_vae.data.datasets import binarize
    from keras_vae.data.datasets import load_dataset

    vae = keras_vae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden_units=(32,))
    vae.compile(optimizer="adam")
    vae.fit(load_dataset("digits", "train").images, epochs=1, verbose=0)
    vae.save(tmp_path / "grey.keras")
    # Grey test digits under a Bernoulli decoder: a cross-entropy, said so, without bits/dim.
    result = run_python(["pipelines/evaluate.py", str(tmp_path / "grey.keras"), "--num-samples",
                         "20", "--out", str(tmp_path / "grey")])
    assert "this is a cross-entropy, not a negative log-likelihood" in result.stdout
    metrics = json.loads((tmp_path / "grey" / "metrics.json").read_text())
    assert "nll" not in metrics and "bits_per_dim" not in metrics and metrics["cross_entropy"] > 0
    # A --binarize run (binarized once, not dynamically) is measured on binarized test digits.
    run_dir = tmp_path / "binarized_run"
    run_dir.mkdir()
    vae.save(run_dir / "model.keras")
    (run_dir / "config.json").write_text('{"dataset": "digits", "binarize": true}')
    result = run_python(["pipelines/evaluate.py", str(run_dir), "--num-samples", "20"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_binarized"] is True and "bits/dim" in result.stdout
    expected = -vae.log_likelihood(binarize(load_dataset("digits", "test").images, seed=0),
                                   num_samples=20, seed=0).mean()
    assert metrics["nll"] == pytest.approx(expected, abs=1e-3)
    keras.backend.clear_session()


def test_quality_benchmark_tables_the_nll_of_every_checkpoint(runs, tmp_path):
    result = run_python(["benchmarks/quality.py", runs["jax"], "--images", "50",
                         "--num-samples", "20"])
    rows = markdown_rows(result.stdout)
    # run, model, parameters, epoch, training min, training CPU min, peak RSS MiB, test ELBO,
    # test NLL, bits/dim
    assert {row[1] for row in rows} == {"VAE"}
    assert [row[3] for row in rows][:2] == ["2", "4"] and "(best)" in rows[2][3]
    minutes = [float(row[4]) for row in rows[:2]]
    assert 0 <= minutes[0] <= minutes[1]
    # The best model's row agrees with pipelines/evaluate.py on the same images, K and seed.
    run_python(["pipelines/evaluate.py", runs["jax"], "--max-images", "50", "--num-samples", "20",
                "--backend", "tensorflow", "--out", str(tmp_path)])
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["num_images"] == 50
    assert rows[2][8].split(" ± ")[0] == f"{metrics['nll']:.2f}"


@pytest.mark.parametrize("source", BACKENDS)
def test_a_saved_model_decodes_the_same_under_every_backend(decoded, source):
    reference = decoded[source][source]
    for loader in BACKENDS:
        np.testing.assert_allclose(decoded[loader][source], reference, atol=1e-5,
                                   err_msg=f"{source} model loaded under {loader}")


@pytest.mark.parametrize("source", BACKENDS)
def test_export_matches_keras_for_every_origin_backend(runs, decoded, source, tmp_path):
    decoder_path, encoder_path = tmp_path / "decoder.onnx", tmp_path / "encoder.onnx"
    result = run_python(["pipelines/export.py", runs[source], "--out", str(decoder_path),
                         "--encoder-out", str(encoder_path), "--triton-repo",
                         str(tmp_path / "repo")])
    assert "max |onnxruntime fp32 - keras|: batch 1:" in result.stdout

    session = onnxruntime.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    (z_input,), (x_output, logits) = session.get_inputs(), session.get_outputs()
    assert (z_input.name, z_input.shape, z_input.type) == ("z", ["batch", 8], "tensor(float)")
    assert (x_output.name, x_output.shape) == ("x_mean", ["batch", 8, 8, 1])
    assert (logits.name, logits.shape) == ("logits", ["batch", 8, 8, 1])
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["latent_dim"] == "8" and json.loads(metadata["image_shape"]) == [8, 8, 1]
    assert metadata["precision"] == "fp32"
    assert metadata["likelihood"] == "bernoulli" and metadata["source_backend"] == source
    assert metadata["dataset"] == "digits" and metadata["keras_vae_version"] and metadata["created"]

    # The same z as the Keras decoders saw, at a batch size the export never checked.
    z = decoded[source]["z"]
    np.testing.assert_allclose(session.run(["x_mean"], {"z": z})[0], decoded[source][source], atol=1e-5)
    assert session.run(["x_mean"], {"z": z[:3]})[0].shape == (3, 8, 8, 1)

    encoder = onnxruntime.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in encoder.get_outputs()] == ["z_mean", "z_log_var"]
    z_mean, z_log_var = encoder.run(None, {"x": np.zeros((2, 8, 8, 1), "float32")})
    assert z_mean.shape == z_log_var.shape == (2, 8)

    config = (tmp_path / "repo" / "vae_decoder" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 256" in config
    assert "dynamic_batching" in config and 'name: "z"' in config and "dims: [ 8, 8, 1 ]" in config
    assert (tmp_path / "repo" / "vae_decoder" / "1" / "model.onnx").read_bytes() == decoder_path.read_bytes()
    data = decoder_path.read_bytes()
    assert str(tmp_path).encode() not in data and os.getcwd().encode() not in data


def test_server_scores_images_as_keras_does_on_the_same_noise(runs, tmp_path):
    # /v1/score runs the two ONNX files in onnxruntime; VAE.log_likelihood runs Keras. They
    # share the estimator and its per-image noise, so they agree far within its own noise.
    from fastapi.testclient import TestClient

    from keras_vae.training.run_directory import load_vae
    from keras_vae.evaluation.evaluate import test_images
    from keras_vae.serving.app import create_app

    run_python(["pipelines/export.py", runs["jax"], "--out", str(tmp_path / "decoder.onnx"),
                "--encoder-out", str(tmp_path / "encoder.onnx")])
    vae = load_vae(runs["jax"])
    images = test_images(vae, "digits")[0][:50]
    expected = vae.log_likelihood(images, num_samples=300, seed=7)
    app = create_app(str(tmp_path / "decoder.onnx"), encoder=str(tmp_path / "encoder.onnx"),
                     max_batch_size=64)
    with TestClient(app) as client:
        r = client.post("/v1/score", json={"images": images.tolist(), "num_samples": 300, "seed": 7})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["log_px"], expected, atol=2e-3)
    assert r.json()["measure"] == "nll"


@pytest.mark.parametrize("source", BACKENDS)
def test_a_model_file_outside_a_run_directory_exports_its_training_backend(runs, source, tmp_path):
    # model.keras is written by vae.save; alone in a folder, it still names its backend.
    bare = tmp_path / "vae.keras"
    bare.write_bytes(open(os.path.join(runs[source], "model.keras"), "rb").read())
    run_python(["pipelines/export.py", str(bare), "--out", str(tmp_path / "decoder.onnx")])
    session = onnxruntime.InferenceSession(str(tmp_path / "decoder.onnx"),
                                           providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["source_backend"] == source and metadata["dataset"] == "unknown"


def test_int8_export_measures_its_nll_cost_and_serves_like_any_decoder(runs, tmp_path):
    from fastapi.testclient import TestClient

    from keras_vae.training.run_directory import load_vae
    from keras_vae.evaluation.evaluate import test_images
    from keras_vae.serving.app import create_app

    int8_path, fp32_path = tmp_path / "decoder.int8.onnx", tmp_path / "decoder.onnx"
    result = run_python(["pipelines/export.py", runs["torch"], "--precision", "int8", "--out",
                         str(int8_path), "--triton-repo", str(tmp_path / "repo")])
    assert "int8 against fp32 on 360 test images, K = 200, same noise" in result.stdout
    run_python(["pipelines/export.py", runs["torch"], "--out", str(fp32_path)])
    session = onnxruntime.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["precision"] == "int8" and metadata["source_backend"] == "torch"
    report = json.loads(metadata["quantization"])
    assert report["images"] == 360 and report["num_samples"] == 200 and "static QDQ" in report["method"]
    assert report["cost"] <= 0.1 and report["max_output_difference"] <= 0.15
    assert metadata["quantization_recipe"] == "u8s7" and "7 bits" in report["method"]
    machine = json.loads(metadata["int8_measured_on"])
    assert machine["onnxruntime"] == onnxruntime.__version__ and machine["cpu"]
    assert f"recipe u8s7, measured on {machine['cpu']} (avx2 " in result.stdout
    # The check's fp32 NLL is Keras' own estimate on the same images, K and noise.
    vae = load_vae(runs["torch"])
    expected = -vae.log_likelihood(test_images(vae, "digits")[0], num_samples=200, seed=0).mean()
    assert report["nll_fp32"] == pytest.approx(expected, abs=2e-3)
    assert "DequantizeLinear" in {node.op_type for node in onnx.load(str(int8_path)).graph.node}
    assert 'string_value: "int8"' in (tmp_path / "repo" / "vae_decoder" / "config.pbtxt").read_text()

    z = np.random.default_rng(0).standard_normal((64, 8)).astype("float32")
    fp32 = onnxruntime.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    difference = np.abs(session.run(["x_mean"], {"z": z})[0] - fp32.run(["x_mean"], {"z": z})[0])
    assert 0 < difference.max() <= 0.15
    with TestClient(create_app(str(int8_path))) as client:
        info = client.get("/v1/model").json()
        assert info["precision"] == "int8" and info["metadata"]["quantization_recipe"] == "u8s7"
        assert json.loads(info["metadata"]["int8_measured_on"]) == machine
        r = client.post("/v1/generate", json={"n": 4, "seed": 1, "format": "npy"})
        assert r.status_code == 200
    run_python(["-m", "keras_vae", "generate", str(int8_path), "-n", "16", "--out", str(tmp_path / "s.png")])


def test_int8_export_refuses_a_decoder_that_costs_too_much(runs, tmp_path):
    from keras_vae.training.run_directory import load_vae
    from keras_vae.evaluation.evaluate import test_images
    from keras_vae.export.onnx import ExportError
    from keras_vae.export.int8 import export_int8_decoder

    vae = load_vae(runs["jax"])
    images = test_images(vae, "digits")[0][:100]
    # Calibrated on z squeezed to 1/1000 of the prior's spread, every activation saturates.
    with pytest.raises(ExportError, match=r"int8 costs .* nats of test NLL .* nothing was written"):
        export_int8_decoder(vae, str(tmp_path / "bad.onnx"), images, nll_samples=20,
                            calibration_temperature=0.001)
    summary = export_int8_decoder(vae, str(tmp_path / "forced.onnx"), images, nll_samples=20,
                                  calibration_temperature=0.001, force=True)
    assert summary["int8"]["cost"] > 0.1 and len(summary["warnings"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forced.onnx"]
    bare = tmp_path / "vae.keras"
    bare.write_bytes(open(os.path.join(runs["jax"], "model.keras"), "rb").read())
    result = run_python(["pipelines/export.py", str(bare), "--precision", "int8", "--out",
                         str(tmp_path / "d.onnx")], check=False)
    assert result.returncode == 1 and "pass --dataset" in result.stderr


def test_onnx_decoder_serves_samples_from_the_command_line(runs, tmp_path):
    decoder_path = tmp_path / "decoder.onnx"
    run_python(["pipelines/export.py", runs["torch"], "--out", str(decoder_path)])
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for out in (first, second):
        run_python(["-m", "keras_vae", "generate", str(decoder_path), "-n", "16", "--seed", "3",
                    "--out", str(out)])
    assert first.read_bytes() == second.read_bytes()


def test_export_bad_inputs_exit_with_a_clear_message(runs, tmp_path):
    import keras

    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    cases = [
        ([str(tmp_path / "missing.keras")], "No such model file or run directory"),
        ([str(tmp_path / "plain.keras")], "not a keras_vae.VAE"),
        ([str(tmp_path)], "without model.keras"),
    ]
    for args, message in cases:
        result = run_python(["pipelines/export.py", *args, "--out", str(tmp_path / "d.onnx")],
                            check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    result = run_python(["pipelines/export.py", runs["tensorflow"], "--out",
                         str(blocked / "decoder.onnx")], check=False)
    assert result.returncode != 0 and "not a writable directory" in result.stderr
    assert not any(p.suffix == ".onnx" or p.name.startswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("args,message", [
    (["pipelines/train.py", "--epochs", "0"], "--epochs must be at least 1"),
    (["pipelines/train.py", "--architecture", "resnet"], "invalid choice: 'resnet'"),
    (["pipelines/train.py", "--decoder-std", "wide"], "--decoder-std must be a number or 'learned'"),
    (["pipelines/train.py", "--dataset", "no_such_dataset_anywhere"], "Unknown dataset"),
    (["pipelines/train.py", "--dataset", "missing.npz"], "No such .npz file"),
    (["pipelines/evaluate.py", "no/such/run"], "No such model file or run directory"),
    (["pipelines/evaluate.py", "x", "--num-samples", "0"], "must be at least 1"),
    (["pipelines/evaluate.py", "x", "--max-images", "0"], "--max-images must be at least 1"),
    (["pipelines/train.py", "--checkpoint-every", "-1"], "--checkpoint-every must be 0"),
    (["benchmarks/quality.py", "no/such/run"], "has no history.csv"),
])
def test_bad_command_lines_exit_non_zero_with_a_message(args, message, tmp_path):
    result = run_python([*args, *(["--out", str(tmp_path / "o")] if "train" in args[0] else [])],
                        check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
