"""Anomaly scores, thresholds and keras-vae score.

Independent truths: a linear-Gaussian model whose log p(x) and exact posterior are known in
closed form (scipy), thresholds against scipy's normal quantiles and NumPy's inverted-CDF
quantile, the fixture ONNX files recomputed in NumPy, and Keras against its own ONNX export.
"""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
from scipy import stats

from keras_vae.core import contract
from keras_vae.core import likelihood
from keras_vae.serving.likelihood import onnx_log_likelihood
from keras_vae.core.anomaly import (AnomalyThreshold, calibrate_threshold, decode_threshold,
                                    encode_threshold, false_positive_rate, score_images,
                                    threshold_from_scores)
from helpers.onnx_fixtures import make_decoder_onnx, make_encoder_onnx, reference_decode, reference_encode

BINARY = (np.random.default_rng(5).random((12, 8, 8, 1)) < 0.4).astype(np.float32)


# ------------------------------------------------------------------ calibration

@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1, 0.25])
@pytest.mark.parametrize("n", [100, 997, 20_000])
def test_calibration_flags_exactly_the_allowed_fraction(fpr, n):
    scores = np.random.default_rng(n).standard_normal(n)
    threshold = calibrate_threshold(scores, fpr)
    allowed = int(np.floor(fpr * n + 1e-9))
    assert int(np.sum(scores > threshold)) == allowed
    assert false_positive_rate(scores, threshold) == allowed / n <= fpr
    # Between the inverted-CDF (1 - fpr) quantile and the next larger score.
    ordered = np.sort(scores)
    low = np.quantile(scores, 1 - fpr, method="inverted_cdf")
    assert low == ordered[n - allowed - 1] <= threshold < ordered[n - allowed]


def test_calibration_converges_to_the_distributions_quantile():
    scores = np.random.default_rng(0).standard_normal(400_000)
    for fpr in (0.01, 0.05):
        # the sample quantile's standard error is sqrt(p(1-p)/n)/pdf, under 0.01 here
        assert calibrate_threshold(scores, fpr) == pytest.approx(stats.norm.ppf(1 - fpr), abs=0.03)
        fresh = np.random.default_rng(1).standard_normal(400_000)
        assert false_positive_rate(fresh, calibrate_threshold(scores, fpr)) == pytest.approx(fpr, rel=0.1)


def test_calibration_edge_cases():
    scores = np.arange(10.0)
    assert calibrate_threshold(scores, 0.0) == 9.0  # nothing above the largest
    assert calibrate_threshold(scores, 0.05) == 9.0  # 0.5 images allowed: none
    assert calibrate_threshold(scores, 0.1) == 8.5
    assert calibrate_threshold(np.ones(50), 0.1) == 1.0  # ties: fewer flagged, never more
    for bad, fpr, message in (([], 0.1, "empty"), ([1.0, np.nan], 0.1, "NaN"),
                              ([1.0], 1.0, "[0, 1)"), ([1.0], -0.1, "[0, 1)")):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
            calibrate_threshold(np.asarray(bad), fpr)


def test_threshold_metadata_round_trips_and_rejects_malformed_values():
    threshold = AnomalyThreshold("log_px", 91.5, 100, 0.01, 0.0099, "data/mnist.npz test", 10000, 3)
    assert decode_threshold(encode_threshold(threshold)) == threshold
    assert decode_threshold(None) is None
    for value, message in (("{", "malformed"), ('{"score": "nll", "value": 1, "fpr": 0.1}', "nll"),
                           ('{"score": "log_px", "value": 1, "fpr": 0.1}', "num_samples"),
                           ('{"score": "recon", "value": "x", "fpr": 0.1}', "malformed"),
                           ('{"score": "recon", "value": 1, "fpr": 2}', "fpr")):
        with pytest.raises(ValueError, match=message):
            decode_threshold(value)


# ------------------------------------------------- the scores against closed forms

def test_scores_of_a_linear_gaussian_model_are_its_exact_log_likelihood():
    # p(z) = N(0, I), p(x|z) = N(Wz + b, s²I): log p(x) = log N(x; b, WWᵀ + s²I), and the exact
    # posterior q(z|x) = N(A(x - b), Σ) makes every importance weight equal p(x): so log_px,
    # the ELBO and log p(x) coincide, whatever K.
    rng = np.random.default_rng(0)
    d, pixels, s2 = 3, 4, 0.3
    # W with orthogonal columns, so that Σ = (I + WᵀW/s²)⁻¹ is diagonal, as q(z|x) is
    w = np.linalg.qr(rng.normal(size=(pixels, d)))[0] * np.array([2.0, 1.2, 0.5])
    b = rng.normal(size=pixels)
    posterior_cov = np.linalg.inv(np.eye(d) + w.T @ w / s2)
    assert np.allclose(posterior_cov, np.diag(np.diag(posterior_cov)))
    gain = posterior_cov @ w.T / s2
    x = rng.normal(size=(7, 2, 2, 1)).astype(np.float32)

    def encode(x_batch):
        flat = x_batch.reshape(len(x_batch), -1).astype(np.float64)
        return (flat - b) @ gain.T, np.tile(np.log(np.diag(posterior_cov)), (len(x_batch), 1))

    def means(z):
        return (np.asarray(z, np.float64) @ w.T + b).reshape(z.shape[:-1] + (2, 2, 1))

    scores = score_images(x, encode, lambda xb, z: likelihood.gaussian_log_prob(xb, means(z), np.log(s2)),
                          means, num_samples=5, batch_size=3, seed=1)
    exact = stats.multivariate_normal(b, w @ w.T + s2 * np.eye(pixels)).logpdf(x.reshape(7, -1))
    np.testing.assert_allclose(scores.log_px, exact, rtol=1e-5)
    np.testing.assert_allclose(scores.elbo, exact, rtol=1e-5)
    z_mean, _ = encode(x)
    np.testing.assert_allclose(scores.recon, np.mean((means(z_mean) - x) ** 2, axis=(1, 2, 3)),
                               rtol=1e-6)
    assert np.all(scores.anomaly("log_px") == -scores.log_px)


def test_the_elbo_is_the_mean_of_the_weights_whose_log_mean_exp_is_log_px(tmp_path):
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler
    from keras_vae.serving.scoring import onnx_scores

    decoder, encoder = make_decoder_onnx(tmp_path / "d.onnx"), make_encoder_onnx(tmp_path / "e.onnx")
    scores = onnx_scores(Encoder(encoder), Sampler(decoder), BINARY, num_samples=50, seed=2)
    np.testing.assert_allclose(scores.log_px, onnx_log_likelihood(
        Encoder(encoder), Sampler(decoder), BINARY, 50, seed=2))
    assert np.all(scores.elbo <= scores.log_px + 1e-9)  # Jensen, on the same weights
    # the reconstruction error from the NumPy recomputation of both graphs
    z_mean, _ = reference_encode(encoder, BINARY)
    np.testing.assert_allclose(scores.recon, np.mean((reference_decode(decoder, z_mean) - BINARY) ** 2,
                                                     axis=(1, 2, 3)), rtol=1e-5)


# --------------------------------------------------------- the threshold in the files

def _exported(tmp_path):
    return make_decoder_onnx(tmp_path / "decoder.onnx"), make_encoder_onnx(tmp_path / "encoder.onnx")


def test_write_threshold_replaces_one_metadata_entry_and_keeps_the_rest(tmp_path):
    import onnx
    import onnxruntime

    from keras_vae.serving.scoring import write_threshold

    decoder, _ = _exported(tmp_path)
    before = {p.key: p.value for p in onnx.load(decoder).metadata_props}
    graph = onnx.load(decoder).graph.SerializeToString()
    for value in (1.5, 2.5):  # the second write replaces the first
        write_threshold(decoder, AnomalyThreshold("recon", value, None, 0.1, 0.1, "x", 10))
    model = onnx.load(decoder)
    onnx.checker.check_model(model, full_check=True)
    after = {p.key: p.value for p in model.metadata_props}
    assert [p.key for p in model.metadata_props].count(contract.ANOMALY_THRESHOLD) == 1
    assert after == {**before, contract.ANOMALY_THRESHOLD: after[contract.ANOMALY_THRESHOLD]}
    assert decode_threshold(after[contract.ANOMALY_THRESHOLD]).value == 2.5
    assert model.graph.SerializeToString() == graph
    meta = onnxruntime.InferenceSession(str(decoder)).get_modelmeta().custom_metadata_map
    assert decode_threshold(meta[contract.ANOMALY_THRESHOLD]).value == 2.5
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ValueError, match="not an ONNX model"):
        write_threshold(not_onnx, AnomalyThreshold("recon", 1.0, None, 0.1, 0.1, "x", 10))
    assert not_onnx.read_bytes() == b"\xff\xff\xff"


def test_v1_score_decides_with_the_threshold_and_refuses_another_k(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from keras_vae.serving.app import create_app
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler
    from keras_vae.serving.scoring import onnx_scores, write_threshold

    decoder, encoder = _exported(tmp_path)
    normal = onnx_scores(Encoder(encoder), Sampler(decoder), BINARY, num_samples=30, seed=0)
    threshold = threshold_from_scores(normal, "log_px", 0.25, "fixture")
    write_threshold(decoder, threshold)
    with TestClient(create_app(str(decoder), encoder=str(encoder), max_score_samples=40)) as client:
        r = client.post("/v1/score", json={"images": BINARY.tolist()})  # K: the threshold's
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["num_samples"] == 30
        np.testing.assert_allclose(body["log_px"], normal.log_px, rtol=1e-9)
        assert body["anomalous"] == (-normal.log_px > threshold.value).tolist()
        assert sum(body["anomalous"]) == 3  # a quarter of the 12 calibration images
        assert body["anomaly_threshold"]["value"] == threshold.value
        np.testing.assert_allclose(body["elbo"], normal.elbo, rtol=1e-9)
        np.testing.assert_allclose(body["recon_mse"], normal.recon, rtol=1e-9)
        r = client.post("/v1/score", json={"images": BINARY.tolist(), "num_samples": 10})
        # the schema pins num_samples to the threshold's K, so the 422 names it
        assert r.status_code == 422 and "num_samples" in r.json()["error"] and "30" in r.json()["error"]
        assert client.get("/v1/model").json()["encoder"]["anomaly_threshold"]["num_samples"] == 30
    # a threshold set at K = 100 where the server allows 40: it refuses to start, naming both
    write_threshold(decoder, AnomalyThreshold("log_px", 1.0, 100, 0.1, 0.1, "x", 10))
    with pytest.raises(ValueError, match=r"K = 100 .*--max-score-samples 40 allows"):
        create_app(str(decoder), encoder=str(encoder), max_score_samples=40)
    from keras_vae.serving.server import main

    assert main([str(decoder), "--encoder", str(encoder), "--max-score-samples", "40"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-vae serve: error: ") and err.count("\n") == 1, err
    assert "K = 100" in err and "--max-score-samples 40" in err
    create_app(str(decoder), max_score_samples=40)  # without an encoder nothing is scored: it serves
    with TestClient(create_app(str(decoder), encoder=str(encoder), max_score_samples=100)) as client:
        r = client.post("/v1/score", json={"images": BINARY[:2].tolist()})
        assert r.status_code == 200 and r.json()["num_samples"] == 100, r.text


# ------------------------------------------------------------------ keras-vae score

def _npz(path, images, key="x_test"):
    np.savez(path, **{key: images})
    return str(path)


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_score_command_on_onnx_files_writes_csv_grids_and_a_threshold(tmp_path, capsys):
    from keras_vae.commands.score import main
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler
    from keras_vae.serving.scoring import onnx_scores

    decoder, encoder = _exported(tmp_path)
    data = _npz(tmp_path / "normal.npz", BINARY)
    out, grid = tmp_path / "scores.csv", tmp_path / "top.png"
    main([str(decoder), "--dataset", data, "--out", str(out), "--num-samples", "20", "--seed", "4",
          "--top", "5", "--grid", str(grid), "--calibrate-fpr", "0.25",
          "--write-threshold", str(decoder), "--quiet"])
    rows = _read_csv(out)
    expected = onnx_scores(Encoder(encoder), Sampler(decoder), BINARY, 20, seed=4)
    np.testing.assert_allclose([float(r["log_px"]) for r in rows], expected.log_px, rtol=1e-12)
    np.testing.assert_allclose([float(r["recon_mse"]) for r in rows], expected.recon, rtol=1e-12)
    assert [int(r["anomalous"]) for r in rows] == (-expected.log_px > calibrate_threshold(
        -expected.log_px, 0.25)).astype(int).tolist()
    from PIL import Image
    assert Image.open(grid).size == (3 * 9 + 1, 2 * 9 + 1)  # 5 tiles of 8x8, 3 a row, 1-px padding
    threshold = decode_threshold(Sampler(decoder).metadata[contract.ANOMALY_THRESHOLD])
    assert (threshold.num_samples, threshold.count, threshold.fpr) == (20, 12, 0.25)
    assert threshold.data == f"{data} test"
    assert "anomalous: 3 of 12" in capsys.readouterr().out


@pytest.mark.parametrize("images, message", [
    (np.zeros((0, 8, 8), np.uint8), "no images"),
    (np.zeros((4, 10, 10), np.uint8), "shape [n, 8, 8, 1]"),
    (np.full((4, 8, 8), 2.0, np.float32), "must be in [0, 1]"),
])
def test_score_command_bad_data_exits_with_a_clear_message(tmp_path, capsys, images, message):
    from keras_vae.commands.score import main

    decoder, _ = _exported(tmp_path)
    data = _npz(tmp_path / "bad.npz", images)
    with pytest.raises(SystemExit) as exit_info:
        main([str(decoder), "--dataset", data, "--out", str(tmp_path / "s.csv"), "--quiet"])
    assert exit_info.value.code not in (0, None)
    assert message in str(exit_info.value.code)
    assert not os.path.exists(tmp_path / "s.csv")


def test_score_command_argument_errors(tmp_path, capsys):
    from keras_vae.commands.score import main

    decoder, _ = _exported(tmp_path)
    for args, message in ((["--grid", "g.png"], "--top"), (["--write-threshold", str(decoder)], "calibrate"),
                          (["--calibrate-fpr", "1.5"], "[0, 1)"), (["--num-samples", "0"], "at least 1")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(decoder), "--dataset", "x.npz", "--out", "s.csv", *args])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def keras_and_onnx(tmp_path_factory):
    """An untrained VAE saved as .keras and exported to ONNX (TensorFlow backend)."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("ONNX export runs under the TensorFlow backend")
    import keras_vae
    from keras_vae.export.onnx import export_decoder, export_encoder

    root = tmp_path_factory.mktemp("keras_and_onnx")
    vae = keras_vae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden_units=(32,),
                        prior="mixture", prior_components=3, seed=0)
    vae(BINARY[:2])
    vae.save(str(root / "model.keras"))
    export_decoder(vae, str(root / "decoder.onnx"))
    export_encoder(vae, str(root / "encoder.onnx"))
    return root


def test_score_on_a_model_and_on_its_onnx_files_agree_on_the_same_noise(keras_and_onnx, tmp_path):
    from keras_vae.commands.score import main

    data = _npz(tmp_path / "x.npz", BINARY)
    for name, model in (("keras", "model.keras"), ("onnx", "decoder.onnx")):
        main([str(keras_and_onnx / model), "--dataset", data, "--num-samples", "40", "--seed", "9",
              "--out", str(tmp_path / f"{name}.csv"), "--quiet"])
    keras_rows, onnx_rows = _read_csv(tmp_path / "keras.csv"), _read_csv(tmp_path / "onnx.csv")
    for column, tolerance in (("log_px", 1e-3), ("elbo", 1e-3), ("recon_mse", 1e-6)):
        np.testing.assert_allclose([float(r[column]) for r in onnx_rows],
                                   [float(r[column]) for r in keras_rows], atol=tolerance)
    # not trivially equal: the scores differ between images
    assert len({r["log_px"] for r in keras_rows}) == len(BINARY)


def test_score_command_copes_with_a_copied_decoder_without_encoder(tmp_path):
    from keras_vae.commands.score import main

    decoder, _ = _exported(tmp_path)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(decoder, lone / "decoder.onnx")
    with pytest.raises(SystemExit) as exit_info:
        main([str(lone / "decoder.onnx"), "--dataset", _npz(tmp_path / "x.npz", BINARY),
              "--out", str(tmp_path / "s.csv"), "--quiet"])
    assert "encoder" in str(exit_info.value.code)


def test_export_stores_a_threshold_set_on_the_test_split(keras_and_onnx, tmp_path):
    from keras_vae.commands.export import main as export
    from keras_vae.commands.score import main as score
    from keras_vae.serving.sampler import Sampler

    data = _npz(tmp_path / "x.npz", BINARY)
    export([str(keras_and_onnx / "model.keras"), "--out", str(tmp_path / "decoder.onnx"),
            "--anomaly-percentile", "75", "--anomaly-samples", "10", "--dataset", data])
    threshold = decode_threshold(Sampler(tmp_path / "decoder.onnx").metadata[contract.ANOMALY_THRESHOLD])
    assert (threshold.score, threshold.num_samples, threshold.count, threshold.data) == (
        "log_px", 10, len(BINARY), f"{data} test")
    score([str(keras_and_onnx / "model.keras"), "--dataset", data, "--num-samples", "10",
           "--out", str(tmp_path / "s.csv"), "--quiet"])
    nll = [-float(r["log_px"]) for r in _read_csv(tmp_path / "s.csv")]
    assert threshold.value == pytest.approx(calibrate_threshold(np.asarray(nll), 0.25), abs=1e-9)
    assert threshold.achieved_fpr == 0.25


LABELS = np.arange(len(BINARY)) % 3


@pytest.fixture(scope="module")
def conditional_keras_and_onnx(tmp_path_factory):
    """An untrained class-conditional VAE (3 classes) saved as .keras and exported to ONNX."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("ONNX export runs under the TensorFlow backend")
    import keras_vae
    from keras_vae.export.onnx import export_decoder, export_encoder

    root = tmp_path_factory.mktemp("conditional")
    vae = keras_vae.VAE(input_shape=(8, 8, 1), latent_dim=4, hidden_units=(32,), num_classes=3, seed=0)
    vae([BINARY[:2], LABELS[:2]])
    vae.save(str(root / "model.keras"))
    export_decoder(vae, str(root / "decoder.onnx"))
    export_encoder(vae, str(root / "encoder.onnx"))
    return root, vae


def test_a_conditional_model_scores_and_sets_thresholds_with_the_datasets_labels(
        conditional_keras_and_onnx, tmp_path, capsys):
    from keras_vae.commands.export import main as export
    from keras_vae.commands.score import main as score
    from keras_vae.serving.sampler import Sampler

    root, vae = conditional_keras_and_onnx
    data = str(tmp_path / "x.npz")
    np.savez(data, x_test=BINARY, y_test=LABELS)
    rows = {}
    for name, model in (("keras", "model.keras"), ("onnx", "decoder.onnx")):
        score([str(root / model), "--dataset", data, "--num-samples", "40", "--seed", "9",
               "--out", str(tmp_path / f"{name}.csv"), "--quiet"])
        rows[name] = np.array([float(r["log_px"]) for r in _read_csv(tmp_path / f"{name}.csv")])
    # log p(x|y), each image under its own label: VAE.log_likelihood on the same noise
    expected = vae.log_likelihood(BINARY, LABELS, num_samples=40, seed=9)
    np.testing.assert_allclose(rows["keras"], expected, atol=1e-3, rtol=0)
    np.testing.assert_allclose(rows["onnx"], expected, atol=1e-3, rtol=0)
    other = vae.log_likelihood(BINARY, (LABELS + 1) % 3, num_samples=40, seed=9)
    assert np.abs(other - expected).max() > 1e-2  # the labels matter
    # export --anomaly-fpr sets the threshold on -log p(x|y) of the labelled test split (seed 0)
    export([str(root / "model.keras"), "--out", str(tmp_path / "decoder.onnx"),
            "--anomaly-percentile", "75", "--anomaly-samples", "40", "--dataset", data])
    threshold = decode_threshold(Sampler(tmp_path / "decoder.onnx").metadata[contract.ANOMALY_THRESHOLD])
    nll = -vae.log_likelihood(BINARY, LABELS, num_samples=40, seed=0)
    assert threshold.value == pytest.approx(calibrate_threshold(nll, 0.25), abs=1e-6)
    # images without labels: a clear refusal, from both commands
    unlabelled = str(tmp_path / "unlabelled.npz")
    np.savez(unlabelled, x_test=BINARY)
    for model in ("model.keras", "decoder.onnx"):
        with pytest.raises(SystemExit) as exit_info:
            score([str(root / model), "--dataset", unlabelled, "--out", str(tmp_path / "s.csv"),
                   "--quiet"])
        message = str(exit_info.value.code)
        assert message.startswith("keras-vae score: error: this model is class-conditional")
        assert f"{unlabelled} test has none" in message and "\n" not in message
    with pytest.raises(SystemExit) as exit_info:
        export([str(root / "model.keras"), "--out", str(tmp_path / "d2.onnx"),
                "--anomaly-fpr", "0.1", "--dataset", unlabelled])
    assert "class-conditional" in str(exit_info.value.code) and "has none" in str(exit_info.value.code)
    assert not (tmp_path / "d2.onnx").exists()


@pytest.mark.slow
def test_anomaly_benchmark_resumes_and_tables_every_score(tmp_path):
    from helpers.processes import markdown_tables, run_python

    rng = np.random.default_rng(0)
    labels = np.arange(300) % 10
    # digit d: a bright square at a place of its own, so that the held-out digit is unusual
    images = (rng.random((300, 28, 28)) < 0.05).astype(np.uint8) * 255
    for i, d in enumerate(labels):
        images[i, 2 * d : 2 * d + 8, 2 * d : 2 * d + 8] = 255
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=images[:200], y_train=labels[:200], x_test=images[200:], y_test=labels[200:])
    args = ["benchmarks/anomaly.py", "--data", str(data), "--out", str(tmp_path / "out"),
            "--digits", "3", "--epochs", "2", "--num-samples", "4", "--peer-epochs", "1",
            "--hidden-units", "32"]
    first = run_python(args, backend="jax", timeout=900)
    assert (tmp_path / "out" / "digit_3.json").exists()
    again = run_python(args, backend="jax", timeout=900)
    assert "done already" in again.stderr
    auroc = markdown_tables(first.stdout)[0]
    assert auroc[0][0] == "3" and auroc[-1][0] == "**mean**"
    values = [float(cell) for cell in auroc[0][1:7]]
    assert all(0.0 <= v <= 1.0 for v in values) and len(set(values)) > 1
    assert markdown_tables(again.stdout)[0] == auroc


def test_score_command_names_the_files_of_an_image_folder(tmp_path):
    from PIL import Image

    from keras_vae.commands.score import main
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler
    from keras_vae.serving.scoring import onnx_scores

    decoder, encoder = _exported(tmp_path)
    folder = tmp_path / "incoming"
    folder.mkdir()
    names = ["a.png", "b.png", "c.png"]
    for name, image in zip(names, BINARY[:3]):
        Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(folder / name)
    main([str(decoder), "--dataset", str(folder), "--out", str(tmp_path / "s.csv"), "--quiet",
          "--num-samples", "8"])
    rows = _read_csv(tmp_path / "s.csv")
    assert [r["name"] for r in rows] == names
    expected = onnx_scores(Encoder(encoder), Sampler(decoder), BINARY[:3], 8)
    np.testing.assert_allclose([float(r["log_px"]) for r in rows], expected.log_px, rtol=1e-12)


def test_typicality_flags_images_too_likely_as_well_as_too_unlikely():
    from keras_vae.core.anomaly import ImageScores

    rng = np.random.default_rng(3)
    nll = rng.normal(100.0, 5.0, 1000)
    zeros = np.zeros(1000)
    normal = ImageScores(-nll, -nll - 1, zeros, 100, 0)
    threshold = threshold_from_scores(normal, "typicality", 0.05, "normal")
    assert threshold.center == pytest.approx(nll.mean())
    assert np.sum(threshold.is_anomalous(normal)) == 50  # exactly ⌊0.05·1000⌋
    assert decode_threshold(encode_threshold(threshold)) == threshold
    # blank-like images (NLL 40: far *more* likely) and noise (NLL 160): both flagged, while a
    # log_px threshold flags only the unlikely ones
    odd = ImageScores(-np.array([40.0, 160.0, 100.0]), np.zeros(3), np.zeros(3), 100, 0)
    assert threshold.is_anomalous(odd).tolist() == [True, True, False]
    assert threshold_from_scores(normal, "log_px", 0.05, "normal").is_anomalous(odd).tolist() == [
        False, True, False]
    with pytest.raises(ValueError, match="center"):
        decode_threshold('{"score": "typicality", "value": 1, "num_samples": 5, "fpr": 0.1}')


def test_v1_score_without_a_threshold_defaults_k_within_the_servers_limit(tmp_path):
    from fastapi.testclient import TestClient

    from keras_vae.serving.app import create_app
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler
    from keras_vae.serving.scoring import onnx_scores

    decoder, encoder = _exported(tmp_path)
    with TestClient(create_app(str(decoder), encoder=str(encoder), max_score_samples=40)) as client:
        r = client.post("/v1/score", json={"images": BINARY.tolist()})
        assert r.status_code == 200, r.text
        assert r.json()["num_samples"] == 40
        expected = onnx_scores(Encoder(encoder), Sampler(decoder), BINARY, num_samples=40, seed=0)
        np.testing.assert_allclose(r.json()["log_px"], expected.log_px, rtol=1e-9)
