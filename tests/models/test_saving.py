"""Keras' own loading idiom: `import keras, keras_vae` then `keras.models.load_model`, in a
fresh process, on each backend; and `.keras` files saved by keras-vae 0.1.0 before the
library was grouped into subpackages."""

import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from helpers.processes import ROOT

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
#: A VAE (8×8×1, latent 2, one hidden layer of 16) saved by keras-vae 0.1.0 under
#: TensorFlow, with its log p(x) of the first 8 test digits (K = 50, seed 0).
SAVED_BEFORE_THE_MOVE = os.path.join(DATA, "vae_saved_0.1.0.keras")
ITS_LOG_PX = os.path.join(DATA, "vae_saved_0.1.0_log_px.npy")

LOG_PX = ("from keras_vae.data import load_dataset\n"
          "x = load_dataset('digits', 'test').images[:8]\n"
          "print(' '.join(repr(float(v)) for v in vae.log_likelihood(x, num_samples=50, seed=0)))\n")


def load_in_fresh_process(path, first_lines):
    """log p(x) of 8 test digits from a model loaded in a new process that begins with `first_lines`."""
    code = first_lines + f"vae = keras.models.load_model({path!r})\n" + LOG_PX
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.array([float(v) for v in result.stdout.split()[-8:]])


@pytest.mark.backend
@pytest.mark.parametrize("first_lines", ["import keras, keras_vae\n", "import keras_vae\nimport keras\n"],
                         ids=["keras-first", "keras_vae-first"])
def test_import_keras_vae_is_all_load_model_needs(tmp_path, digits, first_lines):
    from keras_vae.models.vae import VAE

    vae = VAE(input_shape=(8, 8, 1), latent_dim=2, hidden_units=(16,), seed=0)
    vae.compile(optimizer="adam")
    vae.fit(digits[0][:128], epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path / "vae.keras")
    vae.save(path)
    expected = vae.log_likelihood(digits[1][:8], num_samples=50, seed=0)
    np.testing.assert_allclose(load_in_fresh_process(path, first_lines), expected, rtol=1e-5)


@pytest.mark.backend
def test_a_model_saved_before_the_move_loads_and_scores_the_same():
    loaded = load_in_fresh_process(SAVED_BEFORE_THE_MOVE, "import keras, keras_vae\n")
    np.testing.assert_allclose(loaded, np.load(ITS_LOG_PX), rtol=1e-4)


def test_the_serving_modules_import_no_keras_in_a_full_install():
    code = ("import sys, keras_vae, keras_vae.serving.server, keras_vae.serving.app, "
            "keras_vae.serving.ray_app, keras_vae.commands.score\n"
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "[]"
