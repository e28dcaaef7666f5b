"""The explorer page, in headless Chromium, scoring 8-bit decoders that output p(x|z)'s parameters
(`x_params`): a discretized logistic whose scale depends on z, and the coupled logistic mixture.

The page computes log p(x|z) from `x_params` in JavaScript (likelihood.js) on Python's noise, so
its log p(x) must be `keras_vae.serving.likelihood`'s, which tests/serving/test_likelihood.py
checks against scipy. The decoders are small NumPy-built graphs, and one decoder exported from
a Keras model, whose graph tf2onnx writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from helpers.headless_chromium import explorer_app, free_port, open_page, serve_app
from helpers.onnx_fixtures import make_encoder_onnx, make_params_decoder_onnx
from test_explorer import assert_quiet_and_local, check_scores_match_python, run_export

from keras_vae.serving.sampler import Sampler

pytestmark = pytest.mark.slow

SHAPE = (4, 3, 3)


def eight_bit_images(seed, shape=SHAPE):
    levels = np.random.default_rng(seed).integers(0, 256, (3, *shape))
    levels[0, 0, 0] = (0, 255, 128)[: shape[-1]]  # both edge levels
    return (levels / 255.0).astype(np.float32)


def fixture_files(folder, likelihood, components=None):
    decoder = make_params_decoder_onnx(folder / "decoder.onnx", likelihood, image_shape=SHAPE,
                                       mixture_components=components)
    return decoder, make_encoder_onnx(folder / "encoder.onnx", latent_dim=3, image_shape=SHAPE)


def keras_files(folder):
    """decoder.onnx and encoder.onnx of a small trained Keras VAE with a logistic mixture."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("ONNX export runs under TensorFlow")
    import keras_vae
    from keras_vae.export.onnx import export_decoder, export_encoder

    vae = keras_vae.VAE(input_shape=(4, 4, 3), latent_dim=3, architecture="conv", conv_filters=(4,),
                        likelihood="logistic_mixture", mixture_components=3, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    vae.fit(eight_bit_images(0, (4, 4, 3)).repeat(40, 0), epochs=2, batch_size=40, verbose=0)
    export_decoder(vae, str(folder / "decoder.onnx"))
    export_encoder(vae, str(folder / "encoder.onnx"))
    return folder / "decoder.onnx", folder / "encoder.onnx"


@pytest.mark.parametrize("source", ["logistic", "mixture", "keras-mixture"])
def test_the_page_scores_from_x_params_like_python(page, tmp_path, source):
    if source == "keras-mixture":
        decoder, encoder = keras_files(tmp_path)
    else:
        likelihood = "discretized_logistic" if source == "logistic" else "logistic_mixture"
        decoder, encoder = fixture_files(tmp_path, likelihood, None if source == "logistic" else 3)
    sampler = Sampler(decoder, provider="cpu")
    assert sampler.params_name == "x_params"
    with serve_app(explorer_app(str(decoder), str(encoder), provider="cpu")) as url:
        open_page(page, url + "/")
        assert page.evaluate("explorer.backend") == "onnxruntime-web"
        check_scores_match_python(page, decoder, encoder, eight_bit_images(8, sampler.image_shape))
        assert_quiet_and_local(page)


def test_a_static_export_scores_a_mixture_decoder_in_the_browser(page, tmp_path):
    decoder, encoder = fixture_files(tmp_path, "logistic_mixture", 2)
    site = tmp_path / "site"
    result = run_export(decoder, "--encoder", encoder, "--out", site)
    assert result.returncode == 0, result.stderr
    port = free_port()
    http = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(site)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "/explorer/config.json", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        open_page(page, url + "/")
        assert page.evaluate("explorer.config.server") is False
        check_scores_match_python(page, decoder, encoder, eight_bit_images(9))
        assert_quiet_and_local(page)
    finally:
        http.terminate()
        http.wait(10)
