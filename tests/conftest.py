"""Shared fixtures (helpers for the tests are in the `helpers` package). Keras picks its backend once per process: `make test` runs the
tests marked `backend` once under each KERAS_BACKEND, and the rest once."""

import os

import pytest

@pytest.fixture(scope="session")
def digits():
    """(x_train, x_test) of the built-in 8×8 digits, float32 (N, 8, 8, 1) in [0, 1]."""
    from keras_vae.data.datasets import load_dataset

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
