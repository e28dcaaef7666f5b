"""The page's sampling loop for a fitted prior (explorer/static/fitted.js) under Node.js with
onnxruntime-web, for tests that check it against Python's (keras_vae.core.fitted_prior)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from keras_vae.serving import explorer

LOOP = Path(__file__).resolve().parent / "fitted_loop.mjs"


def node_and_ort():
    """(node, onnxruntime-web's WebAssembly ES module), or skip (fail under CI) saying what lacks."""
    node, ort = shutil.which("node"), explorer.ort_web_dir()
    module = ort / "ort.wasm.bundle.min.mjs" if ort else None
    if node and module and module.is_file():
        return node, module
    message = "the page's loop runs under Node.js with onnxruntime-web: need node and npm ci"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def js_draws(prior_path, config, draws):
    """The page's drawFitted for each (n, seed, temperature), under Node.js: float32 (n, D) each."""
    node, module = node_and_ort()
    done = subprocess.run([node, str(LOOP), str(module), str(prior_path)], capture_output=True,
                          text=True, timeout=600, input=json.dumps({"config": config, "draws": draws}))
    assert done.returncode == 0, done.stderr
    return [np.asarray(z, np.float32).reshape(n, config["latent_dim"])
            for z, (n, _, _) in zip(json.loads(done.stdout)["z"], draws)]
