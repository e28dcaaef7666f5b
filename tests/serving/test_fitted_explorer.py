"""The page's sampling loop for a fitted prior (explorer/static/fitted.js) against Python's
(keras_vae.core.fitted_prior): under Node.js with onnxruntime-web, and in headless Chromium on
the served page and on a static export."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers.fitted_js import js_draws
from helpers.headless_chromium import explorer_app, open_page, serve_app
from helpers.hierarchical_fixtures import GROUPS, make_hierarchical_onnx
from helpers.onnx_fixtures import make_decoder_onnx, reference_decode
from helpers.prior_fixtures import make_prior_onnx

from keras_vae.core import fitted_prior
from keras_vae.serving.fitted import FittedPriorModel, explorer_settings

REPO = Path(__file__).resolve().parents[2]
D = 4
KINDS = ("gmm", "flow", "diffusion")
#: float32 graph outputs of onnxruntime-web (WebAssembly) and Python onnxruntime differ in the
#: last bits; a diffusion sample carries them through its steps
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fitted_explorer")
    return {kind: make_prior_onnx(folder / f"{kind}.onnx", kind, D, D, eta=0.5 if kind == "diffusion"
                                  else 0.0) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_the_pages_loop_draws_pythons_z_under_node(priors, kind):
    """The same loop in JavaScript and NumPy, on the same file and seeds (a diffusion prior with
    η = 0.5, so that the page draws fresh noise at each step as NumPy does): equal but for the
    float32 graph's last bits; a Gaussian mixture's z bit for bit."""
    model = FittedPriorModel(priors[kind].path, provider="cpu")
    config = {"latent_dim": D, "fitted": explorer_settings(model)}
    draws = [[64, 0, 1.0], [33, 7, 0.35], [5, 2**40 + 5, 2.0], [3, 1, 0.0]]
    for got, (n, seed, t) in zip(js_draws(model.model_path, config, draws), draws):
        want = model.latents(n, seed, t)
        np.testing.assert_allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE)
        if kind == "gmm":
            assert got.tobytes() == want.tobytes()
        # against the NumPy reference graph too: the loop, not only onnxruntime
        reference = fitted_prior.draw_fitted(priors[kind].prior, n, D, priors[kind].run, seed, t)
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_a_hierarchical_models_page_loop_fills_the_top_group_under_node(tmp_path):
    fx = make_hierarchical_onnx(tmp_path)
    fixture = make_prior_onnx(tmp_path / "prior.onnx", "diffusion", GROUPS[0].size, fx.latent_dim,
                              groups=GROUPS)
    model = FittedPriorModel(fixture.path, provider="cpu")
    config = {"latent_dim": fx.latent_dim, "fitted": explorer_settings(model)}
    (got,) = js_draws(fixture.path, config, [[20, 3, 0.8]])
    np.testing.assert_allclose(got, model.latents(20, 3, 0.8), rtol=TOLERANCE, atol=TOLERANCE)
    assert got[:, 3:].tobytes() == model.latents(20, 3, 0.8)[:, 3:].tobytes()


@contextlib.contextmanager
def static_site(folder):
    """``python -m http.server`` on the folder, on a free loopback port; yields its URL."""
    from helpers.headless_chromium import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(folder)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fitted_page")
    decoder = make_decoder_onnx(folder / "decoder.onnx", latent_dim=D, image_shape=(8, 8, 1))
    make_prior_onnx(folder / fitted_prior.PRIOR_FILE, "diffusion", D, D, steps=5)
    return decoder, FittedPriorModel(folder / fitted_prior.PRIOR_FILE, provider="cpu")


def test_the_config_carries_what_the_loop_reads(served, tmp_path):
    decoder, model = served
    with TestClient(explorer_app(str(decoder), provider="cpu")) as client:
        config = client.get("/explorer/config.json").json()
        assert client.get("/" + config["fitted"]["path"]).content == model.model_path.read_bytes()
    fitted = config["fitted"]
    assert fitted["kind"] == "diffusion" and fitted["inputs"] == ["x", "t"] and fitted["output"] == "noise"
    schedule = model.prior.schedule
    assert fitted["diffusion"]["alphas_cumprod"] == schedule.alphas_cumprod.tolist()  # float64, exactly
    assert fitted["diffusion"]["timesteps"] == schedule.timesteps().tolist()
    plain = make_decoder_onnx(tmp_path / "decoder.onnx", latent_dim=D)  # no prior beside it
    with TestClient(explorer_app(str(plain), provider="cpu")) as client:
        assert client.get("/explorer/config.json").json()["fitted"] is None


@pytest.mark.slow
def test_the_page_samples_the_fitted_prior_like_python(page, served, tmp_path):
    from helpers.headless_chromium import require_browser

    require_browser()
    decoder, model = served
    with serve_app(explorer_app(str(decoder), provider="cpu")) as url:
        open_page(page, url + "/?sampler=fitted")
        assert page.evaluate("explorer.sampler") == "fitted"
        assert page.is_visible("#sampler-line")
        z = np.asarray(page.evaluate("explorer.drawFitted(16, 4, 0.6)"), np.float32).reshape(16, D)
        np.testing.assert_allclose(z, model.latents(16, 4, 0.6), rtol=TOLERANCE, atol=TOLERANCE)
        # the grid: seed 0, T 1, the fitted prior's z, decoded
        grid = np.asarray(page.evaluate("explorer.interpolation.a ? Array.from(explorer.interpolation.a) : null"),
                          np.float32)
        np.testing.assert_allclose(grid, model.latents(16, 0, 1.0)[0], rtol=TOLERANCE, atol=TOLERANCE)
        result = page.evaluate("(z) => explorer.decode(z)", z.tolist())
        np.testing.assert_allclose(np.reshape(result["data"], result["dims"]),
                                   reference_decode(decoder, z), atol=1e-5)
        page.evaluate("explorer.setSampler('prior')")
        assert page.evaluate("explorer.sampler") == "prior"
        assert page.rec.console_errors == [] and page.rec.external_requests() == []
    # a static export carries prior.onnx and its settings, and samples it with no server behind
    from keras_vae.serving.explorer.cli import write_site

    sizes = write_site(decoder, tmp_path / "site")
    assert sizes["models/prior.onnx"] == model.model_path.stat().st_size
    with static_site(tmp_path / "site") as url:
        open_page(page, url + "/?sampler=fitted")
        z = np.asarray(page.evaluate("explorer.drawFitted(8, 2, 1.0)"), np.float32).reshape(8, D)
        np.testing.assert_allclose(z, model.latents(8, 2, 1.0), rtol=TOLERANCE, atol=TOLERANCE)
