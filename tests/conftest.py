"""Shared fixtures. Keras picks its backend once per process: `make test` runs the
tests marked `backend` once under each KERAS_BACKEND, and the rest once."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")


@pytest.fixture(scope="session")
def digits():
    """(x_train, x_test) of the built-in 8×8 digits, float32 (N, 8, 8, 1) in [0, 1]."""
    from keras_vae.data import load_dataset

    return load_dataset("digits", "train").images, load_dataset("digits", "test").images


@pytest.fixture(scope="session")
def shared_data_dir():
    """Directory with mnist.npz and tfds/ (env KERAS_VAE_TEST_DATA), or skip saying so."""
    path = os.environ.get("KERAS_VAE_TEST_DATA")
    if not path or not os.path.isdir(path):
        pytest.skip(
            "MNIST test data not found: set KERAS_VAE_TEST_DATA to a directory holding "
            "mnist.npz and tfds/mnist (README, section 'Get MNIST', says how to get it)"
        )
    return path


def run_python(args, backend="tensorflow", timeout=600, check=True):
    """Runs `python args...` from the repo root under a backend; returns CompletedProcess."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"python {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def markdown_tables(stdout):
    """Every Markdown table in `stdout`, in order, each as its body rows of stripped cells."""
    tables, current = [], None
    for line in stdout.splitlines() + [""]:
        if line.startswith("|"):
            current = (current or []) + [line]
        elif current is not None:
            tables.append([[cell.strip() for cell in row.split("|")[1:-1]] for row in current[2:]])
            current = None
    return tables


def markdown_rows(stdout):
    """The body rows of the first Markdown table in `stdout`, as lists of stripped cells."""
    return markdown_tables(stdout)[0]
