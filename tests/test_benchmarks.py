"""The benchmark commands run from a checkout and print tables whose ratios follow from
their own measured columns (tiny sizes here: these check behaviour, not speed)."""

import numpy as np
import pytest

from conftest import markdown_rows
from conftest import run_python
from onnx_fixtures import make_decoder_onnx

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


def test_inference_benchmark_times_onnxruntime_against_keras():
    result = run_python(["benchmarks/inference.py", "--backends", "jax"])
    rows = markdown_rows(result.stdout)
    assert [row[0] for row in rows] == ["1", "16", "256"]
    for batch, ort_ms, ort_images_per_s, keras_ms, speed_up in rows:
        assert number(ort_images_per_s) == pytest.approx(int(batch) / number(ort_ms) * 1e3,
                                                         rel=0.02)
        assert number(speed_up) == pytest.approx(number(keras_ms) / number(ort_ms),
                                                 rel=0.03, abs=0.06)


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
