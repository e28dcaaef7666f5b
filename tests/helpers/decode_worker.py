"""Loads run directories' model.keras under this process's backend and decodes a fixed z.

Usage: python tests/helpers/decode_worker.py OUT.npz RUN_DIR [RUN_DIR ...]
Writes OUT.npz with `z` and one array of pixel means per run directory (by its name),
and checks that a loaded model still trains (and, under torch, is not torch.compile'd).
"""

import os
import sys

import numpy as np

import keras

import keras_vae.models.vae  # noqa: F401  (registers the VAE class for loading)


def main(out_path, *run_dirs):
    outputs = {}
    for run_dir in run_dirs:
        model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
        z = np.random.default_rng(0).standard_normal((9, model.latent_dim)).astype("float32")
        outputs["z"] = z
        outputs[os.path.basename(run_dir)] = model.decode(z)
        if keras.backend.backend() == "torch":
            assert model.jit_compile is False, "a model loaded under torch must not use torch.compile"
        x = model.sample(32, seed=0)
        model.fit(x, epochs=1, batch_size=16, verbose=0)
    np.savez(out_path, **outputs)


if __name__ == "__main__":
    main(*sys.argv[1:])
