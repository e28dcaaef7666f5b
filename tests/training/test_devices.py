"""Data-parallel training with keras.distribution on 2 virtual CPU devices (JAX)."""

import csv
import json

import numpy as np
import pytest

from helpers.processes import run_python

pytestmark = pytest.mark.slow

TWO_DEVICES = "--xla_force_host_platform_device_count=2"


def history(run_dir):
    with open(run_dir / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def even_dataset(tmp_path_factory):
    """1,280 digits (1,152 train + 128 validation): every batch splits evenly in two."""
    from keras_vae.data.datasets import load_dataset

    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=load_dataset("digits", "train").images[:1280],
             x_test=load_dataset("digits", "test").images)
    return str(path)


def train(dataset, out, *extra, backend="jax"):
    import os

    os.environ["XLA_FLAGS"] = TWO_DEVICES  # inherited by the subprocess only
    try:
        return run_python(["pipelines/train.py", "--dataset", dataset, "--epochs", "3",
                           "--quiet", "--out", str(out), *extra], backend, check=False)
    finally:
        del os.environ["XLA_FLAGS"]


def test_two_devices_match_one_device_on_the_same_global_batch(even_dataset, tmp_path):
    parallel = train(even_dataset, tmp_path / "parallel", "--data-parallel")
    assert parallel.returncode == 0, parallel.stderr
    assert "Data-parallel training on 2 devices" in parallel.stdout
    single = train(even_dataset, tmp_path / "single")
    assert single.returncode == 0, single.stderr

    with open(tmp_path / "parallel" / "config.json") as f:
        assert len(json.load(f)["devices"]) == 2
    parallel_history, single_history = history(tmp_path / "parallel"), history(tmp_path / "single")
    assert parallel_history[-1]["loss"] < parallel_history[0]["loss"] - 3.0
    # Same seed, same global batches: the sharded step computes the same numbers (fresh,
    # independent noise for every example, whichever device holds it), up to reduction order.
    for p, s in zip(parallel_history, single_history):
        for name in ("loss", "kl_loss", "val_loss"):
            assert p[name] == pytest.approx(s[name], rel=1e-5, abs=1e-4), name  # kl_loss ~0.1

    exported = run_python(["pipelines/export.py", str(tmp_path / "parallel"), "--out",
                           str(tmp_path / "decoder.onnx")])
    assert "max |onnxruntime fp32 - keras|" in exported.stdout


def test_data_parallel_on_another_backend_is_a_clear_error(even_dataset, tmp_path):
    result = train(even_dataset, tmp_path / "run", "--data-parallel", backend="torch")
    assert result.returncode != 0
    assert "data-parallel training runs on the JAX backend" in result.stderr


def test_a_batch_that_does_not_split_evenly_is_a_clear_error(even_dataset, tmp_path):
    result = train(even_dataset, tmp_path / "run", "--data-parallel", "--batch-size", "127")
    assert result.returncode != 0
    assert "--batch-size 127 must divide evenly across the 2 devices" in result.stderr
