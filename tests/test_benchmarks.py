"""The benchmark commands run from a checkout and print tables whose ratios follow from
their own measured columns (tiny sizes here: these check behaviour, not speed)."""

import csv
import os
import re

import numpy as np
import pytest

from helpers.processes import markdown_rows
from helpers.processes import markdown_tables
from helpers.processes import run_python
from helpers.onnx_fixtures import make_decoder_onnx

pytestmark = pytest.mark.slow


def number(cell):
    return float(cell.replace(",", "").rstrip("×"))


def test_training_benchmark_compares_fit_with_built_in_and_a_plain_torch_loop(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=(rng.random((256, 28, 28)) < 0.3).astype(np.uint8) * 255)
    result = run_python(["benchmarks/training.py", "--data", str(data), "--images", "128",
                         "--repeats", "1", "--architectures", "mlp"])
    assert "CPU cores" in result.stdout
    rows = markdown_rows(result.stdout)
    assert [row[1] for row in rows] == ["tensorflow", "jax", "torch"]
    for arch, _, ours, builtin, time_ratio, loop, loop_ratio, rss in rows:
        assert arch == "mlp" and min(number(ours), number(builtin), number(loop)) > 0
        assert number(time_ratio) == pytest.approx(number(builtin) / number(ours),
                                                     rel=0.01, abs=0.011)
        assert number(loop_ratio) == pytest.approx(number(ours) / number(loop),
                                                     rel=0.01, abs=0.011)
        assert number(rss) > 100


def test_inference_benchmark_times_onnxruntime_against_keras_and_int8_against_fp32():
    result = run_python(["benchmarks/inference.py", "--backends", "jax"])
    keras_table, int8_table, recipe_table, hierarchical_table = markdown_tables(result.stdout)
    for batch, single_ms, deep_ms, ratio, keras_ms, speed_up in hierarchical_table:
        rounding = 0.5e-4 / min(number(single_ms), number(deep_ms))  # printed to 4 decimals
        assert number(ratio) == pytest.approx(number(deep_ms) / number(single_ms),
                                              rel=0.01 + 2 * rounding, abs=0.006)
        assert number(speed_up) == pytest.approx(number(keras_ms) / number(deep_ms),
                                                 rel=0.03 + rounding, abs=0.06)
    assert [row[0] for row in keras_table] == ["1", "16", "256"]
    for batch, ort_ms, ort_images_per_s, keras_ms, speed_up in keras_table:
        # The printed milliseconds are rounded: allow for that beside 2 % of timing noise.
        rounding = 0.5 * 10.0 ** -len(ort_ms.split(".")[1]) / number(ort_ms)
        assert number(ort_images_per_s) == pytest.approx(int(batch) / number(ort_ms) * 1e3,
                                                         rel=0.02 + rounding)
        assert number(speed_up) == pytest.approx(number(keras_ms) / number(ort_ms),
                                                 rel=0.03 + rounding, abs=0.06)
    # MLP 512-512, latent 16, 28×28: 2 × (16·512 + 512·512 + 512·784) FLOP per image.
    flops = 2 * (16 * 512 + 512 * 512 + 512 * 784)
    assert f"({flops / 1e6:.2f} MFLOP per image)" in result.stdout
    found = re.search(r"fp32 ([\d.]+) GFLOP/s, int8 ([\d.]+) GOP/s", result.stdout)
    peaks = {"fp32": float(found[1]), "int8": float(found[2])}
    assert [(row[0], row[1]) for row in int8_table] == [
        (b, p) for b in ("1", "16", "256") for p in ("fp32", "int8 u8s7", "int8 u8s8", "int8 u8u8")]
    fp32_ms = {row[0]: number(row[2]) for row in int8_table if row[1] == "fp32"}
    for batch, precision, ms, images_per_s, achieved, of_peak, ratio in int8_table:
        rounding = 0.01 + 0.00005 / number(ms)  # ms is printed to 4 decimals
        assert number(images_per_s) == pytest.approx(int(batch) / number(ms) * 1e3, rel=rounding)
        assert number(achieved) == pytest.approx(int(batch) * flops / number(ms) / 1e6,
                                                 rel=rounding, abs=1)
        assert number(of_peak.rstrip(" %")) == pytest.approx(
            100 * number(achieved) / peaks[precision.split()[0]], rel=0.05, abs=1)
        assert number(ratio) == pytest.approx(fp32_ms[batch] / number(ms), rel=0.03 + 2 * rounding,
                                              abs=0.02)
    assert [row[0] for row in recipe_table] == ["u8s7", "u8s8", "u8u8"]
    for recipe, _, here, without_vnni, from_exact in recipe_table:
        if recipe != "u8s8":  # sums that cannot saturate: the same numbers on every CPU
            assert number(from_exact) <= 1e-2  # at most a rounding tie (tests/export/test_int8.py)
            assert number(without_vnni) == pytest.approx(number(here), rel=0.01, abs=1e-4)


def test_serving_benchmark_loads_the_server_with_and_without_micro_batching(tmp_path):
    model = make_decoder_onnx(tmp_path / "decoder.onnx")
    result = run_python(["benchmarks/serving_load.py", str(model), "--requests", "40",
                         "--rounds", "2", "--concurrency", "4"], timeout=300)
    rows = markdown_rows(result.stdout)
    assert [(row[0], row[1]) for row in rows] == [("1", "on"), ("1", "off"), ("16", "on"),
                                                 ("16", "off")]
    for row in rows:
        images_per_s, p50, p99, rss = map(number, row[4:8])
        assert images_per_s > 0 and 0 < p50 <= p99 and rss > 10
    assert "micro-batching on/off throughput ratio" in result.stdout


def test_serving_benchmark_compares_an_int8_decoder_with_fp32(tmp_path):
    from keras_vae.export.quantization import quantize_decoder

    model = make_decoder_onnx(tmp_path / "decoder.onnx")
    (tmp_path / "decoder.int8.onnx").write_bytes(quantize_decoder(model.read_bytes(), latent_dim=4))
    result = run_python(["benchmarks/serving_load.py", str(model), "--int8",
                         str(tmp_path / "decoder.int8.onnx"), "--requests", "40", "--rounds", "2",
                         "--concurrency", "4", "--batch-sizes", "1,16"], timeout=300)
    rows = markdown_rows(result.stdout)
    assert [(row[0], row[1]) for row in rows] == [("1", "fp32"), ("1", "int8"), ("16", "fp32"),
                                                 ("16", "int8")]
    for batch in ("1", "16"):
        fp32, int8 = (number(row[4]) for row in rows if row[0] == batch)
        ratio = re.search(rf"- batch {batch}: int8/fp32 throughput ratio ([\d.]+)x", result.stdout)
        assert float(ratio[1]) == pytest.approx(int8 / fp32, rel=0.01, abs=0.01)


def test_screen_trains_each_variant_and_reports_what_evaluate_and_history_say(tmp_path):
    import json

    base = "--backend jax --epochs 2 --latent-dim 4 --hidden-units 32 --dynamic-binarization"
    command = ["benchmarks/screen.py", "--out", str(tmp_path), "--parallel", "2", "--base", base,
               "--variant", "relu=", "--variant", "gated=--gated --seed 1",
               "--num-samples", "20", "--max-images", "50"]
    rows = markdown_rows(run_python(command, timeout=300).stdout)
    assert [row[:3] for row in rows] == [["relu", "(base)", "2"], ["gated", "--gated --seed 1", "2"]]
    for name, _, _, _, cpu_minutes, _, best_val, nll in rows:
        run = tmp_path / name
        assert json.loads((run / "config.json").read_text())["gated"] == (name == "gated")
        with open(run / "history.csv") as f:
            assert float(best_val) == pytest.approx(min(float(r["val_loss"]) for r in csv.DictReader(f)),
                                                    abs=0.006)
        metrics = json.loads((run / "screen_eval" / "metrics.json").read_text())
        assert metrics["num_images"] == 50 and metrics["num_samples"] == 20
        assert nll == f"{metrics['nll']:.2f} ± {metrics['nll_standard_error']:.2f}"
        with open(run / "history.csv") as f:
            assert float(cpu_minutes) == pytest.approx(
                float(list(csv.DictReader(f))[-1]["cpu_seconds"]) / 60, abs=0.06)

    # Finished variants are not trained again; one still training at the deadline is stopped
    # and its last completed epoch measured.
    command[command.index("relu=")] = "long=--epochs 1000"
    result = run_python(command + ["--deadline-minutes", "0.4"], timeout=300)
    assert "[gated] already trained" in result.stdout
    rows = {row[0]: row for row in markdown_rows(result.stdout)}
    assert rows["long"][2].endswith("(stopped)") and 0 < int(rows["long"][2].split()[0]) < 1000
    assert rows["long"][7] != "n/a"


def test_screen_gives_every_variant_the_same_cpu_time(tmp_path):
    """--cpu-minutes sets each variant's epochs from its calibrated CPU seconds per epoch."""

    base = "--backend jax --latent-dim 4 --hidden-units 32 --val-fraction 0"
    budget = 0.25
    command = ["benchmarks/screen.py", "--out", str(tmp_path), "--cpu-minutes", str(budget),
               "--base", base, "--variant", "small=", "--variant", "wide=--hidden-units 512 512",
               "--num-samples", "5", "--max-images", "20"]
    result = run_python(command, timeout=600)
    rows = {row[0]: row for row in markdown_rows(result.stdout)}
    for name in ("small", "wide"):
        with open(tmp_path / f"{name}.calibration" / "history.csv") as f:
            cpu = [float(row["cpu_seconds"]) for row in csv.DictReader(f)]
        assert len(cpu) == 3
        planned = int(budget * 60 / (cpu[2] - cpu[1]))
        assert f"[{name}] {cpu[2] - cpu[1]:.1f} CPU-s per epoch: {planned} epochs" in result.stdout
        assert int(rows[name][2]) == max(1, planned)
    assert int(rows["small"][2]) > int(rows["wide"][2]), "the cheaper variant trains more epochs"


def test_quality_benchmark_puts_runs_side_by_side_with_their_memory_and_size(tmp_path):
    run = str(tmp_path / "run")
    run_python(["-m", "keras_vae", "train", "--epochs", "2", "--checkpoint-every", "1",
                "--latent-dim", "4", "--hidden-units", "32", "--dynamic-binarization", "--quiet",
                "--out", run])
    result = run_python(["benchmarks/quality.py", run, run, "--num-samples", "20", "--images", "40"])
    rows = markdown_rows(result.stdout)
    assert len(rows) == 2 * 3  # epochs 1 and 2, then the best model, for each run
    # 8x8x1 input, 32 hidden, latent 4: encoder 64*32+32 + 32*8+8, decoder 4*32+32 + 32*64+64.
    parameters = 64 * 32 + 32 + 32 * 8 + 8 + 4 * 32 + 32 + 32 * 64 + 64
    with open(os.path.join(run, "history.csv")) as f:
        cpu_minutes = [float(r["cpu_seconds"]) / 60 for r in csv.DictReader(f)]
    for name, model, params, epoch, minutes, cpu, peak, elbo, nll, bits in rows:
        assert (name, model, number(params)) == ("run", "VAE", parameters)
        assert number(peak) > 100 and number(minutes) >= 0
        assert number(cpu) == pytest.approx(cpu_minutes[int(epoch.split()[0]) - 1], abs=0.06)
        assert -number(elbo) >= number(nll.split(" ± ")[0]) - 1.0  # NLL <= -ELBO, up to noise
        assert number(bits) == pytest.approx(number(nll.split(" ± ")[0]) / (64 * np.log(2)),
                                             abs=2e-3)


def test_sample_quality_reports_the_library_s_metrics_for_each_temperature(tmp_path):
    """The table's numbers are `sample_metrics` of the model's own samples (same seed)."""
    import json

    run = tmp_path / "run"
    run_python(["-m", "keras_vae", "train", "--backend", "tensorflow", "--epochs", "2",
                "--latent-dim", "4", "--hidden-units", "32", "--quiet", "--out", str(run)],
               timeout=300)
    out = tmp_path / "metrics.json"
    result = run_python(["benchmarks/sample_quality.py", "--data", "digits", str(run),
                         "--samples", "200", "--temperatures", "1", "0.5", "--classifier",
                         str(tmp_path / "classifier.keras"), "--json", str(out)],
                        timeout=600)
    rows = markdown_rows(result.stdout)
    assert [r[0] for r in rows] == ["training images (the floor)", "run", "run"]
    assert [r[2] for r in rows] == ["", "1", "0.5"]
    saved = json.loads(out.read_text())["rows"]
    for shown, measured in zip(rows, saved):
        assert shown[3] == f"{measured['frechet_distance']:.2f}"
        assert shown[4] == f"{measured['precision']:.3f}"
        assert shown[8] == f"{100 * measured['confident_share']:.1f} %"
        assert sum(measured["class_shares"]) == pytest.approx(1.0)

    # Recompute one row in this test: the same samples through the same classifier.
    check = run_python(["-c", f"""
import json, numpy as np, keras
from keras_vae.data.datasets import load_dataset
from keras_vae.evaluation.sample_metrics import FeatureClassifier, Reference, sample_metrics
from keras_vae.training.run_directory import load_vae
train, test = load_dataset('digits', 'train'), load_dataset('digits', 'test')
c = FeatureClassifier.train_or_load(train, test, path={str(tmp_path / 'classifier.keras')!r})
m = sample_metrics(load_vae({str(run)!r}).sample(200, seed=0, temperature=0.5), Reference.of(c, test.images))
print(json.dumps(m))
"""])
    again = json.loads(check.stdout.strip().splitlines()[-1])
    assert again["frechet_distance"] == pytest.approx(saved[2]["frechet_distance"], rel=1e-4)
    assert again["recall"] == saved[2]["recall"]


def test_sample_quality_measures_exported_files_with_their_fitted_prior(tmp_path):
    """Rows from decoder.onnx as served: its own prior, the fitted prior.onnx beside it (once
    more in another folder: the decoder's own rows are not repeated), its reconstructions through
    encoder.onnx, and the time of each sampler; the fitted row is the metrics of the loop's
    images, recomputed here."""
    import json
    import shutil

    from helpers.onnx_fixtures import make_encoder_onnx
    from helpers.prior_fixtures import make_prior_onnx

    folders = []
    for kind in ("gmm", "diffusion"):
        folder = tmp_path / kind
        folder.mkdir()
        make_decoder_onnx(folder / "decoder.onnx", latent_dim=4, image_shape=(8, 8, 1))
        make_encoder_onnx(folder / "encoder.onnx", latent_dim=4, image_shape=(8, 8, 1))
        make_prior_onnx(folder / "prior.onnx", kind, 4, 4, metadata={
            "fitted_prior_fit": json.dumps({"cpu_seconds": 90.0})})
        folders.append(folder)
    classifier = tmp_path / "classifier.keras"
    out = tmp_path / "metrics.json"
    result = run_python(["benchmarks/sample_quality.py", "--data", "digits", "--samples", "200",
                         "--classifier", str(classifier), "--reconstructions", "--timing-repeats", "2",
                         "--json", str(out), *(str(f / "decoder.onnx") for f in folders)], timeout=900)
    tables = markdown_tables(result.stdout)
    rows = tables[0]
    assert [(r[0], r[1]) for r in rows] == [
        ("training images (the floor)", ""), ("gmm/decoder.onnx", "ONNX, own prior"),
        ("gmm/decoder.onnx", "ONNX, fitted gmm"), ("gmm/decoder.onnx", "reconstructions of the test images"),
        ("diffusion/decoder.onnx", "ONNX, fitted diffusion")]
    assert rows[2][-1] == "1.50" and rows[1][-1] == ""  # the fit's CPU-minutes, from prior.onnx
    timing = tables[1]
    assert [r[:2] for r in timing] == [["gmm/decoder.onnx", "gmm"], ["diffusion/decoder.onnx", "diffusion"]]
    for r in timing:  # the ratio of the unrounded times, the times printed to 0.1 ms
        alone, fitted, ratio = number(r[2]), number(r[3]), number(r[4])
        assert (fitted - 0.05) / (alone + 0.05) - 0.01 <= ratio <= (fitted + 0.05) / max(
            alone - 0.05, 1e-9) + 0.01
    saved = [r for r in json.loads(out.read_text())["rows"] if r.get("sampler") == "fitted"]
    check = run_python(["-c", f"""
import json, numpy as np
from keras_vae.data.datasets import load_dataset
from keras_vae.evaluation.sample_metrics import FeatureClassifier, Reference, sample_metrics
from keras_vae.serving.fitted import FittedPriorModel
from keras_vae.serving.sampler import Sampler
train, test = load_dataset('digits', 'train'), load_dataset('digits', 'test')
c = FeatureClassifier.train_or_load(train, test, path={str(classifier)!r})
folder = {str(folders[1])!r}
z = FittedPriorModel(folder + '/prior.onnx').latents(200, 0, 1.0)
print(json.dumps(sample_metrics(Sampler(folder + '/decoder.onnx').decode(z), Reference.of(c, test.images))))
"""])
    again = json.loads(check.stdout.strip().splitlines()[-1])
    assert again["frechet_distance"] == pytest.approx(saved[1]["frechet_distance"], rel=1e-4)
    assert again["precision"] == saved[1]["precision"]
    shutil.rmtree(tmp_path / "gmm")
