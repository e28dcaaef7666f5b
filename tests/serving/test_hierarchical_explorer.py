"""The explorer with a hierarchical (two-group) export, in headless Chromium: the page's samples,
pad, lower-group toggle, encoding and scores against Python's on the same noise, served by
`keras-vae serve` (scored by /v1/score) and as a static export (scored by log_weight.onnx in
onnxruntime-web)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from helpers.headless_chromium import explorer_app, open_page
from helpers.headless_chromium import free_port, serve_app
from helpers.hierarchical_fixtures import make_hierarchical_onnx
from test_explorer import draw_stroke, run_export

from keras_vae.core import contract, hierarchy
from keras_vae.serving import explorer
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.hierarchical import LogWeightModel

pytestmark = pytest.mark.slow

D = 7
TOL = 1e-5
#: nats between the page's log p(x) (log_weight.onnx in WebAssembly) and Python's on the same noise
SCORE_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_hierarchical_onnx(tmp_path_factory.mktemp("hierarchical_explorer"))


def make_app(fx):
    return explorer_app(str(fx.decoder), str(fx.encoder), provider="cpu")


def test_config_carries_the_groups(fx):
    from fastapi.testclient import TestClient

    with TestClient(make_app(fx)) as client:
        config = client.get("/explorer/config.json").json()
    assert config["hierarchy"]["groups"] == hierarchy.describe_groups(fx.groups)
    assert config["hierarchy"]["log_weight"] == "models/log_weight.onnx"
    assert config["hierarchy"]["log_weight_inputs"] == ["x", "epsilon"]
    assert config["prior"] is None and config["latent_dim"] == D
    # N(0, I) noise: the pad's first two axes are the top group's first two coordinates
    assert np.allclose(config["directions"][0], np.eye(D)[0])
    assert np.allclose(config["directions"][1], np.eye(D)[1])


def test_the_page_samples_moves_encodes_and_scores_like_python(page, fx):
    with serve_app(make_app(fx)) as url:
        open_page(page, url + "/")
        assert page.evaluate("explorer.backend") == "onnxruntime-web"
        assert "hierarchical: group_0 [3] → group_1 [2×2×1]" in page.inner_text("#model-line")
        # samples: the page's noise is draw_latents', its images the decoder's
        z = np.asarray(page.evaluate("explorer.drawLatents(16, 4, 0.6)"), np.float32).reshape(16, D)
        assert z.tobytes() == contract.draw_latents(16, D, None, 4, 0.6).tobytes()
        result = page.evaluate("(z) => explorer.decode(z)", z.tolist())
        np.testing.assert_allclose(np.reshape(result["data"], result["dims"]), fx.decode(z), atol=TOL)

        # interpolation: the strips decode the noise between the first two samples (seed 0, T 1)
        strips = page.evaluate("""(() => { const i = explorer.interpolation;
            return {a: Array.from(i.a), linear: Array.from(i.linear), spherical: Array.from(i.spherical),
                    images: Array.from(i.images)}; })()""")
        np.testing.assert_array_equal(np.float32(strips["a"]), contract.draw_latents(16, D, None, 0)[0])
        paths = np.concatenate([np.reshape(strips["linear"], (-1, D)), np.reshape(strips["spherical"], (-1, D))])
        np.testing.assert_allclose(np.reshape(strips["images"], (len(paths), -1)),
                                   fx.decode(paths).reshape(len(paths), -1), atol=TOL)

        # the pad: dragging moves the top group's first two coordinates; the lower groups follow
        # the toggle: a fixed draw (seed 0), or noise 0
        box = page.locator("#pad").bounding_box()
        page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"])
        page.evaluate("explorer.settled()")
        pad_z = np.asarray(page.evaluate("explorer.getZ()"))
        assert pad_z[0] == pytest.approx(1.5, abs=0.1) and pad_z[1] == pytest.approx(1.5, abs=0.1)
        np.testing.assert_allclose(pad_z[3:], contract.draw_latents(1, D, None, 0)[0, 3:], atol=0)
        page.select_option("#lower-groups-mode", "mean")
        page.wait_for_function("explorer.getZ().slice(3).every((v) => v === 0)")
        page.evaluate("explorer.settled()")
        pad_z = np.asarray(page.evaluate("explorer.getZ()"), np.float32)
        image = np.asarray(page.evaluate("Array.from(explorer.current.image)"))
        np.testing.assert_allclose(image, fx.decode(pad_z[None]).ravel(), atol=TOL)
        page.evaluate("explorer.setLowerGroups('seed')")
        np.testing.assert_allclose(np.asarray(page.evaluate("explorer.getZ()"))[3:],
                                   contract.draw_latents(1, D, None, 0)[0, 3:], atol=0)

        # encoding, and log p(x) in the page with the log-weight graph, on Python's noise
        x = fx.sample_images(2, seed=8)
        encoded = page.evaluate("(x) => explorer.encode(x)", x.tolist())
        ref_mean, ref_log_var = fx.encode(x)
        np.testing.assert_allclose(encoded["z_mean"], ref_mean, atol=1e-4)
        np.testing.assert_allclose(encoded["z_log_var"], ref_log_var, atol=1e-4)
        page_log_px = page.evaluate("(x) => explorer.logLikelihood(x, {numSamples: 50, seed: 3})", x.tolist())
        log_weight = LogWeightModel(fx.log_weight_path, provider="cpu")
        want = hierarchy.log_likelihood(x, log_weight.log_weights, D, num_samples=50, seed=3)
        np.testing.assert_allclose(page_log_px, want, atol=SCORE_TOLERANCE)

        # a drawn image: encoded, reconstructed, placed on the pad, scored by /v1/score
        draw_stroke(page)
        page.wait_for_function("explorer.last !== null && explorer.last.score !== null")
        last = page.evaluate("explorer.last")
        pixels = np.asarray(last["pixels"], np.float32).reshape(1, *fx.image_shape)
        z_mean, _ = Encoder(fx.encoder, provider="cpu").encode(pixels)
        np.testing.assert_allclose(last["z_mean"], z_mean[0], atol=1e-4)
        np.testing.assert_allclose(last["reconstruction"], fx.decode(z_mean).ravel(), atol=1e-4)
        score = last["score"]
        assert score["by"] == "server" and np.isfinite(score["log_px"])
        body = {"images": pixels.tolist(), "num_samples": score["num_samples"], "seed": 0}
        request = urllib.request.Request(url + "/v1/score", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.load(response)["log_px"][0] == pytest.approx(score["log_px"], rel=1e-12)
        assert page.rec.console_errors == [] and page.rec.external_requests() == []


def test_static_export_scores_with_the_log_weight_graph(page, fx, tmp_path):
    site = tmp_path / "site"
    result = run_export(fx.decoder, "--encoder", fx.encoder, "--out", site)
    assert result.returncode == 0, result.stderr
    assert (site / "models" / "log_weight.onnx").read_bytes() == fx.log_weight_path.read_bytes()
    port = free_port()
    http = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(site)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
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
        draw_stroke(page)
        page.wait_for_function("explorer.last !== null && explorer.last.score !== null")
        last = page.evaluate("explorer.last")
        pixels = np.asarray(last["pixels"], np.float32).reshape(1, *fx.image_shape)
        assert last["score"]["by"] == "browser"
        log_weight = LogWeightModel(fx.log_weight_path, provider="cpu")
        want = hierarchy.log_likelihood(pixels, log_weight.log_weights, D,
                                        num_samples=last["score"]["num_samples"], seed=explorer.SCORE_SEED)
        assert abs(last["score"]["log_px"] - want[0]) <= SCORE_TOLERANCE
        assert page.rec.console_errors == [] and page.rec.external_requests() == []
    finally:
        http.terminate()
        http.wait(timeout=10)
