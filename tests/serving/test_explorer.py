"""The latent-space explorer (keras_vae/serving/explorer): its routes, its static export, and the page
itself in headless Chromium (Debian's package, driven by Playwright), with no network.

The browser tests skip, saying what is missing, without /usr/bin/chromium, Playwright or
node_modules (npm ci); with CI=true set they fail instead, since CI installs all three.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from helpers.processes import markdown_rows
from fastapi.testclient import TestClient
from helpers.headless_chromium import explorer_app, open_page
from helpers.headless_chromium import (
    free_port,
    require_browser,
    serve_app,
)
from helpers.onnx_fixtures import make_decoder_onnx, make_encoder_onnx, reference_decode, reference_encode

from keras_vae.core import contract
from keras_vae.core.likelihood import PROBABILITY_FLOOR
from keras_vae.serving.likelihood import onnx_log_likelihood
from keras_vae.serving import explorer
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.sampler import Sampler

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LATENT, SHAPE = 4, (8, 8, 1)
PRIOR = contract.MixturePrior(
    weights=np.array([0.5, 0.3, 0.2]),
    means=np.array([[2.0, 0.0, 0.0, 1.0], [-2.0, 1.0, 0.0, 0.0], [0.0, -1.5, 1.0, 0.0]]),
    log_vars=np.log(np.array([[0.2, 0.5, 0.3, 0.1], [0.3, 0.2, 0.4, 0.2], [0.1, 0.3, 0.2, 0.5]])),
)
Z = np.array([[0.3, -1.2, 2.5, 0.01], [1.5, 0.5, -0.7, -2.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
DECODE_TOLERANCE = 1e-5
ENCODE_TOLERANCE = 1e-4
#: nats per image between the page's importance-sampled log p(x) and Python's on the same
#: noise (see check_scores_match_python).
SCORE_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(decoder.onnx with a 3-component mixture prior, encoder.onnx) of latent 4, 8×8×1."""
    folder = tmp_path_factory.mktemp("explorer_models")
    decoder = make_decoder_onnx(folder / "decoder.onnx", latent_dim=LATENT, image_shape=SHAPE,
                                metadata={contract.PRIOR: contract.encode_prior(PRIOR)})
    encoder = make_encoder_onnx(folder / "encoder.onnx", latent_dim=LATENT, image_shape=SHAPE)
    return decoder, encoder


def make_app(decoder, encoder=None):
    """The server's app for these models, with the explorer's routes."""
    return explorer_app(decoder, encoder)


@pytest.fixture(scope="module")
def server(models):
    with serve_app(make_app(*models)) as url:
        yield url


def assert_quiet_and_local(page):
    rec = page.rec
    assert rec.console_errors == []
    assert rec.external_requests() == []
    assert rec.failed == []


def decoded(result):
    return np.asarray(result["data"], np.float32).reshape(result["dims"])


def python_decode(decoder, z):
    return Sampler(decoder, provider="cpu").decode(np.asarray(z, np.float32))


def hash_of(z):
    return "#z=" + ",".join(repr(float(v)) for v in z)


# ----------------------------------------------------------------- no browser


@pytest.mark.parametrize("prior", [None, PRIOR])
def test_pad_directions_are_the_principal_axes_of_prior_samples(prior):
    config = explorer.prior_directions(LATENT, prior)
    samples = contract.draw_latents(200_000, LATENT, prior, seed=0).astype(np.float64)
    values, vectors = np.linalg.eigh(np.cov(samples, rowvar=False))
    values, vectors = values[::-1], vectors[:, ::-1].T
    np.testing.assert_allclose(config["center"], samples.mean(0), atol=0.02)
    np.testing.assert_allclose(np.square(config["direction_std"]), values, rtol=0.03)
    directions = np.asarray(config["directions"])
    np.testing.assert_allclose(directions @ directions.T, np.eye(LATENT), atol=1e-12)
    if prior is None:
        np.testing.assert_array_equal(directions, np.eye(LATENT))
    else:  # the mixture's eigenvalues are well apart: each axis is found by PCA of samples
        np.testing.assert_allclose(np.abs(np.sum(directions * vectors, axis=1)), 1.0, atol=0.01)
    assert sum(config["explained"]) == pytest.approx(1.0)


def test_routes_serve_the_page_config_and_local_docs(models):
    decoder, encoder = models
    with TestClient(make_app(decoder, encoder)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        assert '<script type="module" src="explorer/main.js"></script>' in page.text
        config = client.get("/explorer/config.json").json()
        assert config["latent_dim"] == LATENT and config["image_shape"] == list(SHAPE)
        assert config["encoder"] is True and config["server"] is True
        assert config["ort"] is (explorer.ort_web_dir() is not None)
        np.testing.assert_allclose(config["prior"]["means"], PRIOR.means)
        np.testing.assert_allclose(config["prior"]["weights"], PRIOR.weights)
        assert config["models"] == {"decoder": "models/decoder.onnx",
                                    "encoder": "models/encoder.onnx"}
        for name in explorer.PAGE_ASSETS:
            asset = client.get(f"/explorer/{name}")
            assert asset.status_code == 200
            assert asset.content == (explorer.STATIC_DIR / name).read_bytes()
            assert asset.headers["content-type"].startswith(
                "text/css" if name.endswith(".css") else "text/javascript")
        for path, status in (("/explorer/secret.py", 404), ("/explorer/ort/ort.min.js", 404),
                             ("/explorer/index.html", 404), ("/explorer/page.py", 404),
                             ("/explorer/docs/../../pyproject.toml", 404)):
            response = client.get(path)
            assert response.status_code == status and response.json()["error"]
        response = client.post("/", json={})
        assert response.status_code == 405 and response.json()["error"]
        if explorer.ort_web_dir() is not None:
            path = "/explorer/ort/ort-wasm-simd-threaded.wasm"
            wasm = client.get(path)  # gzip: 14 MB travel as about 4
            assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
            assert wasm.headers["content-encoding"] == "gzip"
            assert wasm.content == (explorer.ort_web_dir() / path.rsplit("/", 1)[1]).read_bytes()
            assert client.get(path, headers={"if-none-match": wasm.headers["etag"]}
                              ).status_code == 304
            plain = client.get(path, headers={"accept-encoding": "identity"})
            assert "content-encoding" not in plain.headers and plain.content == wasm.content
        schema_paths = client.get("/openapi.json").json()["paths"]
        assert not [p for p in schema_paths if p == "/" or p.startswith(("/explorer", "/docs"))]
        docs, redoc = client.get("/docs").text, client.get("/redoc").text
        if explorer.docs_assets() is not None:
            assert "/explorer/docs/swagger-ui-bundle.js" in docs and "cdn" not in docs
            assert "/explorer/docs/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc
            bundle = client.get("/explorer/docs/redoc.standalone.js").content
            assert explorer.REDOC_LOGO_URL.encode() not in bundle
        else:
            assert "cdn.jsdelivr.net" in docs  # FastAPI's own pages, from its CDN


IMPORT = re.compile(r"^import [^;]* from '([^']+)';$", re.MULTILINE)


def test_the_page_modules_are_all_allowed_and_import_only_each_other():
    """The allow-list (served and exported) is the static folder; main.js reaches every module."""
    static = explorer.STATIC_DIR
    assert set(explorer.PAGE_ASSETS) == {p.name for p in static.iterdir() if p.is_file()} - {"index.html"}
    assert '<script type="module" src="explorer/main.js"></script>' in (static / "index.html").read_text()
    imports = {}
    for name in explorer.PAGE_MODULES:
        text = (static / name).read_text()
        assert "window.ort" not in text or name == "models.js"  # onnxruntime-web: models.js only
        imports[name] = IMPORT.findall(text)
        for target in imports[name]:
            assert target.startswith("./") and target[2:] in explorer.PAGE_MODULES, (name, target)
    reached, todo = set(), ["main.js"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(target[2:] for target in imports[name])
    assert reached == set(explorer.PAGE_MODULES)


def test_the_config_carries_the_numbers_the_page_computes_with(models):
    """The probability floor and the score's seed come from Python; the prior exactly."""
    sampler = Sampler(models[0], provider="cpu")
    config = json.loads(json.dumps(explorer.explorer_config(sampler, encoder=True, ort=True,
                                                            server=False)))
    assert config["probability_floor"] == PROBABILITY_FLOOR
    assert config["score_seed"] == explorer.SCORE_SEED
    assert config["max_temperature"] == contract.MAX_TEMPERATURE
    for name in ("weights", "means", "log_vars"):  # float64, bit for bit
        assert config["prior"][name] == getattr(sampler.prior, name).tolist()
    for name in explorer.PAGE_MODULES:
        assert "1e-7" not in (explorer.STATIC_DIR / name).read_text()


@pytest.mark.parametrize("variable", [explorer.ORT_WEB_DIR_ENV, explorer.NODE_MODULES_ENV])
def test_without_npm_packages_the_page_still_comes(models, monkeypatch, variable):
    monkeypatch.setenv(variable, "/nonexistent/npm/packages")
    with TestClient(make_app(models[0])) as client:
        assert client.get("/").status_code == 200
        config = client.get("/explorer/config.json").json()
        assert config["ort"] is False and config["encoder"] is False
        assert config["models"]["encoder"] is None
        response = client.get("/explorer/ort/ort.wasm.min.js")
        assert response.status_code == 404 and "npm ci" in response.json()["error"]
        docs = client.get("/docs")
        assert docs.status_code == 200
        if variable == explorer.NODE_MODULES_ENV:  # FastAPI's stock pages, from its CDN
            assert "cdn.jsdelivr.net" in docs.text and "cdn.jsdelivr.net" in client.get("/redoc").text


def run_export(*args, env=None):
    return subprocess.run([sys.executable, "-m", "keras_vae.serving.explorer", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_export_cli_refuses_bad_input_clearly(models, tmp_path):
    decoder, encoder = models
    help_text = run_export("--help")
    assert help_text.returncode == 0 and "examples:" in help_text.stdout
    assert "python -m http.server" in help_text.stdout

    missing = run_export(tmp_path / "nope.onnx", "--out", tmp_path / "a")
    assert missing.returncode != 0 and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "a").exists()

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    full = run_export(decoder, "--out", tmp_path / "full")
    assert full.returncode != 0 and "--overwrite" in full.stderr

    no_ort = run_export(decoder, "--out", tmp_path / "b",
                        env={explorer.ORT_WEB_DIR_ENV: str(tmp_path / "missing")})
    assert no_ort.returncode != 0 and "npm ci" in no_ort.stderr
    assert not (tmp_path / "b").exists()

    mismatched = make_decoder_onnx(tmp_path / "d3.onnx", latent_dim=3, image_shape=SHAPE)
    pair = run_export(mismatched, "--encoder", encoder, "--out", tmp_path / "c")
    assert pair.returncode != 0 and "does not fit" in pair.stderr and not (tmp_path / "c").exists()


def test_export_writes_a_complete_folder(models, tmp_path):
    require_browser()  # needs node_modules/onnxruntime-web
    decoder, encoder = models
    site = tmp_path / "site"
    result = run_export(decoder, "--encoder", encoder, "--out", site)
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert written == sorted(["index.html", "explorer/config.json", "models/decoder.onnx",
                              "models/encoder.onnx",
                              *(f"explorer/{name}" for name in explorer.PAGE_ASSETS),
                              *(f"explorer/ort/{name}" for name in explorer.ORT_FILES)])
    assert (site / "models" / "decoder.onnx").read_bytes() == decoder.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left

    (site / "keep.txt").write_text("mine")
    again = run_export(decoder, "--out", site, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert not (site / "models" / "encoder.onnx").exists()  # stale: no encoder this time
    assert (site / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------- browser


def test_page_loads_offline_and_decodes_like_python(page, server, models):
    decoder = models[0]
    open_page(page, server + "/" + hash_of(Z[0]))
    assert_quiet_and_local(page)
    names = {url.rsplit("/", 1)[-1] for url in page.rec.requests}
    assert {*explorer.ORT_FILES, "decoder.onnx", "encoder.onnx", "config.json"} <= names
    assert page.evaluate("explorer.backend") == "onnxruntime-web"
    assert "onnxruntime-web" in page.inner_text("#status")
    assert page.is_hidden("#notice") and page.is_visible("#draw-panel")

    # the z from the address, decoded on the pad
    np.testing.assert_array_equal(page.evaluate("explorer.getZ()"), Z[0])
    pad_image = np.asarray(page.evaluate("Array.from(explorer.current.image)"), np.float32)
    want = python_decode(decoder, Z)
    assert np.abs(pad_image - want[0].ravel()).max() <= DECODE_TOLERANCE
    # the JS hook, a batch at once
    got = decoded(page.evaluate("z => explorer.decode(z)", Z.tolist()))
    assert got.shape == want.shape == (3, *SHAPE)
    assert np.abs(got - want).max() <= DECODE_TOLERANCE
    assert np.abs(got - reference_decode(decoder, Z)).max() <= DECODE_TOLERANCE
    # a new hash moves the pad
    page.evaluate(f"location.hash = '{hash_of(Z[1])}'")
    page.wait_for_function(f"explorer.current.imageZ && explorer.current.imageZ[3] === {float(Z[1][3])!r}")
    pad_image = np.asarray(page.evaluate("Array.from(explorer.current.image)"), np.float32)
    assert np.abs(pad_image - want[1].ravel()).max() <= DECODE_TOLERANCE
    assert_quiet_and_local(page)


def test_threads_under_cross_origin_isolation_decode_the_same(page, server, models):
    open_page(page, server + "/?threads=2")
    assert page.evaluate("self.crossOriginIsolated") is True
    assert page.evaluate("explorer.threads") == 2
    got = decoded(page.evaluate("z => explorer.decode(z)", Z.tolist()))
    assert np.abs(got - python_decode(models[0], Z)).max() <= DECODE_TOLERANCE
    assert_quiet_and_local(page)


def test_samples_come_from_the_learned_mixture_prior(page, server):
    open_page(page, server + "/")
    n = 20_000
    z = np.asarray(page.evaluate(f"explorer.drawLatents({n}, 5, 1.0)")).reshape(n, LATENT)
    config = explorer.prior_directions(LATENT, PRIOR)
    np.testing.assert_allclose(z.mean(0), config["center"], atol=0.05)
    covariance = (np.asarray(config["directions"]).T * np.square(config["direction_std"])
                  ) @ np.asarray(config["directions"])
    np.testing.assert_allclose(np.cov(z, rowvar=False), covariance, atol=0.08)
    # at temperature 0 every draw is one of the component means, in about their weights
    z0 = np.asarray(page.evaluate(f"explorer.drawLatents({n}, 6, 0)")).reshape(n, LATENT)
    which = [np.flatnonzero(np.all(np.abs(PRIOR.means - row) < 1e-6, axis=1)) for row in z0]
    assert all(len(w) == 1 for w in which)
    np.testing.assert_allclose(np.bincount([w[0] for w in which]) / n, PRIOR.weights, atol=0.02)
    # the grid: 16 draws of the page's seed, each decoded
    seed_z = page.evaluate("explorer.drawLatents(16, 0, 1.0)")
    assert seed_z == page.evaluate("explorer.drawLatents(16, 0, 1.0)")
    assert seed_z != page.evaluate("explorer.drawLatents(16, 1, 1.0)")


NUMPY_STREAM = """async ([seed, n]) => {
  const { PCG64 } = await import('./explorer/pcg64.js');
  const { standardNormals } = await import('./explorer/normal.js');
  const bits = new PCG64(seed);
  const normals = Array.from(standardNormals(bits, n));
  return { normals, doubles: [bits.nextDouble(), bits.nextDouble(), bits.nextDouble()] };
}"""
POSTERIOR_SAMPLES = """async ([zMean, zLogVar, k, seed, index]) => {
  const { posteriorSamples } = await import('./explorer/likelihood.js');
  const { z, logQ } = posteriorSamples(Float32Array.from(zMean), Float32Array.from(zLogVar),
                                       k, seed, index);
  return { z: Array.from(z), logQ: Array.from(logQ) };
}"""


def assert_float32_equal_up_to_rounding(got, want, min_exact=0.999):
    """Equal as float32, but for a few values (at most 1 - min_exact of them) one ulp apart."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape
    differ = got != want
    assert differ.mean() <= 1 - min_exact, f"{differ.sum()} of {differ.size} values differ"
    np.testing.assert_array_max_ulp(got[differ], want[differ], maxulp=1)


def check_draws_match_python(page, latent_dim, prior):
    """The page's z, for these seeds and temperatures, against contract.draw_latents.

    The contract promises the same z for the same seed everywhere: draw_latents takes ε
    from numpy.random.default_rng(seed) (float32 standard normals), then, for a mixture,
    the components from uniform doubles of the same generator. The page runs the same
    generator (PCG64 seeded by SeedSequence, NumPy's float32 ziggurat), so its numbers are
    NumPy's: bit for bit, except that NumPy's float32 log1p in the ziggurat's tail (about 1
    draw in 4,000) and the float64 exp of σ_c = exp(log σ²_c / 2) may round differently in
    the last bit; so values are compared as float32 with at most 1 ulp apart, and at least
    99.9 % of them identical.
    """
    for seed in (0, 1, 2**40 + 5):  # 2**40 + 5: a seed of two 32-bit words
        stream = page.evaluate(NUMPY_STREAM, [seed, 60_000])
        rng = np.random.default_rng(seed)
        assert_float32_equal_up_to_rounding(stream["normals"],
                                            rng.standard_normal(60_000, dtype=np.float32))
        assert stream["doubles"] == rng.random(3).tolist()  # the generator is still in step
    for n, seed, temperature in ((16, 0, 1.0), (3000, 7, 1.0), (500, 2**40 + 5, 0.35),
                                 (200, 3, 0.0), (100, 11, contract.MAX_TEMPERATURE)):
        got = page.evaluate("([n, seed, t]) => explorer.drawLatents(n, seed, t)", [n, seed, temperature])
        want = contract.draw_latents(n, latent_dim, prior, seed=seed, temperature=temperature)
        assert_float32_equal_up_to_rounding(np.reshape(got, (n, latent_dim)), want)


def check_scores_match_python(page, decoder, encoder, images):
    """The page's importance-sampled log p(x) against keras_vae.core.likelihood's, same noise.

    Image i draws its ε from numpy.random.default_rng([seed, i]) in Python, and so does the
    page, so the page's z_k = μ + σ·ε_k are Python's (checked first, from the same μ and
    log σ²: float32, up to the rounding of σ) and both estimates average the same K
    importance weights. What is left is rounding: the page's encoder and decoder run in
    WebAssembly, Python's in native onnxruntime (float32 outputs a few 1e-7 apart), and sums
    are taken in another order, which moves log p(x) by 1e-7 to 2e-5 nats here (K = 256).
    The tolerance, 1e-3 nats per image
    (SCORE_TOLERANCE), is far below the Monte Carlo spread of the estimate between two seeds,
    which the test measures and requires to be at least 20 times larger: an estimator with
    other noise, or another formula, would fail it.
    """
    k = 256
    mean, log_var = Encoder(encoder, provider="cpu").encode(images[:1])
    samples = page.evaluate(POSTERIOR_SAMPLES, [mean[0].tolist(), log_var[0].tolist(), k, 5, 0])
    eps = np.random.default_rng([5, 0]).standard_normal((k, mean.shape[1]), dtype=np.float32)
    # σ = exp(log σ²/2) is float32 on both sides, but NumPy's float32 exp (SIMD) is not
    # always correctly rounded, so σ may be an ulp apart, and with it σ·ε and then z_k
    noise = np.exp(0.5 * log_var) * eps
    z, want = np.asarray(samples["z"], np.float32).reshape(k, -1), mean + noise
    largest = np.maximum(np.maximum(np.abs(mean), np.abs(noise)), np.abs(want))
    assert np.all(np.abs(z - want) <= 2 * np.spacing(largest))
    np.testing.assert_allclose(samples["logQ"], -0.5 * np.sum(
        np.log(2 * np.pi) + log_var.astype(np.float64) + np.square(eps, dtype=np.float64), -1),
        rtol=1e-12)
    python = {seed: onnx_log_likelihood(Encoder(encoder, provider="cpu"),
                                        Sampler(decoder, provider="cpu"), images,
                                        num_samples=k, seed=seed) for seed in (0, 9)}
    for seed, want in python.items():
        got = page.evaluate("([x, k, seed]) => explorer.logLikelihood(x, {numSamples: k, seed})",
                            [images.tolist(), k, seed])
        assert np.all(np.isfinite(got))
        assert np.abs(np.asarray(got) - want).max() <= SCORE_TOLERANCE, (got, want)
    # the seed matters: another seed's estimate differs by far more than the tolerance
    assert np.abs(python[0] - python[9]).max() >= 20 * SCORE_TOLERANCE


def test_the_page_draws_and_scores_like_python_under_a_mixture_prior(page, server, models):
    decoder, encoder = models
    open_page(page, server + "/#seed=5&t=0.7")
    check_draws_match_python(page, LATENT, Sampler(decoder, provider="cpu").prior)
    # the grid is those draws: A and B of the strips are its first two samples, and the pad the first
    grid = contract.draw_latents(16, LATENT, Sampler(decoder, provider="cpu").prior, seed=5,
                                 temperature=0.7)
    strips = page.evaluate("[Array.from(explorer.interpolation.a), Array.from(explorer.interpolation.b)]")
    assert_float32_equal_up_to_rounding(strips, grid[:2], min_exact=0)
    assert_float32_equal_up_to_rounding(page.evaluate("explorer.getZ()"), grid[0], min_exact=0)
    binary = (np.random.default_rng(8).random((3, *SHAPE)) < 0.4).astype(np.float32)
    check_scores_match_python(page, decoder, encoder, binary)
    assert_quiet_and_local(page)


def test_dragging_on_the_pad_changes_the_image(page, server, models):
    open_page(page, server + "/" + hash_of(Z[0]))
    before = page.evaluate("Array.from(explorer.current.image)")
    decodes = page.evaluate("explorer.stats.padDecodes")
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    for step in range(1, 16):
        page.mouse.move(box["x"] + 40 + 12 * step, box["y"] + 40 + 10 * step, steps=2)
    page.mouse.up()
    page.evaluate("explorer.settled()")
    assert page.evaluate("explorer.stats.padDecodes") > decodes + 1
    after = np.asarray(page.evaluate("Array.from(explorer.current.image)"), np.float32)
    assert np.abs(after - np.asarray(before, np.float32)).max() > 0.01
    # the pad moved z along its two axes (PC1, PC2) only, and the image is z's decode
    z = np.asarray(page.evaluate("explorer.getZ()"), np.float64)
    config = explorer.prior_directions(LATENT, PRIOR)
    directions, center = np.asarray(config["directions"]), np.asarray(config["center"])
    moved = directions @ (z - center) - directions @ (Z[0].astype(np.float64) - center)
    assert np.abs(moved[:2]).min() > 0.1 and np.abs(moved[2:]).max() < 1e-5
    imaged = np.asarray(page.evaluate("Array.from(explorer.current.imageZ)"), np.float32)
    assert np.abs(after - python_decode(models[0], imaged[None]).ravel()).max() <= DECODE_TOLERANCE
    # a slider moves z along its direction
    page.locator("#slider-2").fill("1.5")
    page.evaluate("explorer.settled()")
    z = np.asarray(page.evaluate("explorer.getZ()"), np.float64)
    assert directions[2] @ (z - center) / config["direction_std"][2] == pytest.approx(1.5, abs=1e-5)
    assert_quiet_and_local(page)


def test_interpolation_strips_run_from_a_to_b(page, server, models):
    open_page(page, server + "/")
    strips = page.evaluate("""(() => { const i = explorer.interpolation;
        return {a: Array.from(i.a), b: Array.from(i.b), linear: Array.from(i.linear),
                spherical: Array.from(i.spherical), images: Array.from(i.images)}; })()""")
    a, b = np.asarray(strips["a"]), np.asarray(strips["b"])
    linear = np.asarray(strips["linear"]).reshape(-1, LATENT)
    spherical = np.asarray(strips["spherical"]).reshape(-1, LATENT)
    steps = len(linear)
    for path in (linear, spherical):
        np.testing.assert_allclose(path[0], a, atol=1e-6)
        np.testing.assert_allclose(path[-1], b, atol=1e-6)
    np.testing.assert_allclose(linear, a + np.linspace(0, 1, steps)[:, None] * (b - a), atol=1e-5)
    center = np.asarray(explorer.prior_directions(LATENT, PRIOR)["center"])
    def angle(u, v):
        return np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))

    # the spherical path turns about the prior's mean at an even rate, its length linear
    t = np.linspace(0, 1, steps)
    turned = [angle(point - center, a - center) for point in spherical]
    np.testing.assert_allclose(turned, t * angle(a - center, b - center), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(spherical - center, axis=1),
                               (1 - t) * np.linalg.norm(a - center)
                               + t * np.linalg.norm(b - center), atol=1e-4)
    images = np.asarray(strips["images"], np.float32).reshape(2 * steps, *SHAPE)
    want = python_decode(models[0], np.concatenate([linear, spherical]))
    assert np.abs(images - want).max() <= DECODE_TOLERANCE


def test_every_control_works(page, server, models, tmp_path):
    """Each button, choice and input of the page does its part, with no error."""
    from PIL import Image

    open_page(page, server + "/")
    prior = Sampler(models[0], provider="cpu").prior
    decodes = page.evaluate("explorer.stats.decodes")
    page.click("#next-seed")  # the grid: seed 1; a click on its third sample puts it on the pad
    page.wait_for_function(f"explorer.stats.decodes > {decodes}")
    assert "seed=1" in page.evaluate("location.hash")
    page.locator("#grid").scroll_into_view_if_needed()
    box = page.locator("#grid").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 5 / 8, box["y"] + box["height"] / 8)
    page.evaluate("explorer.settled()")
    third = contract.draw_latents(16, LATENT, prior, seed=1)[2]
    assert_float32_equal_up_to_rounding(page.evaluate("explorer.getZ()"), third, min_exact=0)
    decodes = page.evaluate("explorer.stats.decodes")
    page.locator("#temperature").fill("0.5")
    page.wait_for_function(f"explorer.stats.decodes > {decodes}")
    assert page.inner_text("#temperature-value") == "0.50"

    page.select_option("#axes-mode", "dims")  # the pad's axes: latent dimensions
    assert page.locator("#axis-x option").all_inner_texts() == [f"z{k}" for k in range(LATENT)]
    page.select_option("#axis-x", "1")  # the same axis as y: y moves on
    assert page.input_value("#axis-y") == "2"
    page.click("#center")
    page.evaluate("explorer.settled()")
    center = explorer.prior_directions(LATENT, prior)["center"]
    np.testing.assert_allclose(page.evaluate("explorer.getZ()"), center, atol=1e-6)

    decodes = page.evaluate("explorer.stats.decodes")
    page.click("#set-a")  # the strips: from the prior's mean, in 4 steps
    page.fill("#steps", "4")
    page.dispatch_event("#steps", "change")
    page.wait_for_function(f"explorer.stats.decodes >= {decodes + 2}")
    page.wait_for_function("explorer.interpolation.linear.length === 4 * " + str(LATENT))
    np.testing.assert_allclose(page.evaluate("Array.from(explorer.interpolation.a)"), center, atol=1e-6)

    image = np.zeros((40, 40), np.uint8)  # a light bar on black, as a file
    image[8:32, 16:24] = 255
    Image.fromarray(image).save(tmp_path / "bar.png")
    page.set_input_files("#file", str(tmp_path / "bar.png"))
    page.wait_for_function("explorer.last !== null && explorer.last.score !== null")
    assert not page.is_checked("#invert") and page.is_checked("#fit")
    encodes = page.evaluate("explorer.stats.encodes")
    page.check("#invert")
    page.wait_for_function(f"explorer.stats.encodes > {encodes} && explorer.last.score !== null")
    assert np.mean(page.evaluate("explorer.last.pixels")) > 0.5  # mostly white now
    page.click("#clear")
    assert page.inner_text("#score") == ""
    assert_quiet_and_local(page)


def draw_stroke(page):
    page.locator("#draw").scroll_into_view_if_needed()
    box = page.locator("#draw").bounding_box()
    x0, y0 = box["x"] + 0.3 * box["width"], box["y"] + 0.2 * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, 13):
        page.mouse.move(x0 + 0.03 * box["width"] * step, y0 + 0.05 * box["height"] * step, steps=2)
    page.mouse.up()


def test_a_drawn_stroke_is_encoded_like_python(page, server, models):
    decoder, encoder = models
    open_page(page, server + "/")
    draw_stroke(page)
    page.wait_for_function("explorer.last !== null && explorer.last.score !== null")
    last = page.evaluate("explorer.last")
    pixels = np.asarray(last["pixels"], np.float32).reshape(1, *SHAPE)
    assert 0.02 < pixels.mean() < 0.9 and pixels.min() >= 0 and pixels.max() <= 1
    z_mean, z_log_var = Encoder(encoder, provider="cpu").encode(pixels)
    assert np.abs(np.asarray(last["z_mean"]) - z_mean[0]).max() <= ENCODE_TOLERANCE
    assert np.abs(np.asarray(last["z_log_var"]) - z_log_var[0]).max() <= ENCODE_TOLERANCE
    assert np.abs(np.asarray(last["z_mean"]) - reference_encode(encoder, pixels)[0][0]).max() <= 1e-4
    reconstruction = np.asarray(last["reconstruction"], np.float32)
    want = python_decode(decoder, np.asarray(last["z_mean"], np.float32)[None]).ravel()
    assert np.abs(reconstruction - want).max() <= DECODE_TOLERANCE
    # placed on the pad, and scored by the server's /v1/score on the same pixels
    np.testing.assert_allclose(page.evaluate("explorer.getZ()"), last["z_mean"], atol=0)
    score = last["score"]
    assert score["by"] == "server" and np.isfinite(score["value"])
    text = page.inner_text("#score")
    assert "nats" in text and "server" in text
    body = {"images": pixels.tolist(), "num_samples": score["num_samples"], "seed": 0}
    request = urllib.request.Request(server + "/v1/score", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.load(response)
    assert reply["log_px"][0] == pytest.approx(score["log_px"], rel=1e-12)
    assert_quiet_and_local(page)


def test_a_gaussian_colour_decoder_with_the_standard_prior(page, tmp_path):
    """Decodes, draws and scores like Python; its decoder has a per-pixel log σ²."""
    shape = (6, 5, 3)
    log_var = np.random.default_rng(2).uniform(-2.5, -0.5, shape)
    decoder = make_decoder_onnx(tmp_path / "rgb.onnx", latent_dim=3, image_shape=shape,
                                likelihood="gaussian", metadata={
                                    contract.DECODER_LOG_VAR: contract.encode_decoder_log_var(log_var)})
    encoder = make_encoder_onnx(tmp_path / "rgb_encoder.onnx", latent_dim=3, image_shape=shape)
    with serve_app(make_app(decoder, encoder)) as url:
        open_page(page, url + "/")
        assert "N(0, I)" in page.inner_text("#model-line")
        z = np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)
        got = decoded(page.evaluate("z => explorer.decode(z)", z.tolist()))
        assert got.shape == (5, *shape)
        assert np.abs(got - python_decode(decoder, z)).max() <= DECODE_TOLERANCE
        check_draws_match_python(page, 3, None)
        check_scores_match_python(page, decoder, encoder,
                                  np.random.default_rng(6).random((3, *shape)).astype(np.float32))
        assert_quiet_and_local(page)


def test_a_discretized_logistic_colour_decoder_scores_like_python(page, tmp_path):
    """8-bit RGB images under a per-pixel discretized logistic: the page's log p(x) is Python's."""
    shape = (4, 3, 3)
    log_scale = np.random.default_rng(7).uniform(-4.0, -1.0, shape)
    decoder = make_decoder_onnx(tmp_path / "dl.onnx", latent_dim=3, image_shape=shape,
                                likelihood="discretized_logistic", metadata={
                                    contract.DECODER_LOG_SCALE: contract.encode_decoder_log_var(log_scale)})
    encoder = make_encoder_onnx(tmp_path / "dl_encoder.onnx", latent_dim=3, image_shape=shape)
    with serve_app(make_app(decoder, encoder)) as url:
        open_page(page, url + "/")
        levels = np.random.default_rng(8).integers(0, 256, (3, *shape))
        levels[0, 0, 0] = (0, 255, 128)  # both edge levels
        check_scores_match_python(page, decoder, encoder, (levels / 255.0).astype(np.float32))
        assert_quiet_and_local(page)


def test_a_bernoulli_decoder_with_logits_scores_saturated_pixels_like_python(page, tmp_path):
    """Logits far beyond ±17: the page scores from the logits output, as Python does, so a
    confidently wrong pixel costs its full x·l − log(1 + e^l), not the 1e-7 floor's 16 nats."""
    decoder = make_decoder_onnx(tmp_path / "sharp.onnx", latent_dim=LATENT, image_shape=SHAPE,
                                with_logits=True, weight_scale=12.0)
    encoder = make_encoder_onnx(tmp_path / "sharp_encoder.onnx", latent_dim=LATENT, image_shape=SHAPE)
    images = (np.random.default_rng(3).random((3, *SHAPE)) > 0.5).astype(np.float32)
    with serve_app(make_app(decoder, encoder)) as url:
        open_page(page, url + "/")
        assert page.evaluate("explorer.backend") == "onnxruntime-web"
        check_scores_match_python(page, decoder, encoder, images)
        assert_quiet_and_local(page)
    # the same file without its logits output would be scored from the clipped probabilities
    clipped = Sampler(decoder, provider="cpu")
    clipped.logits_name = None
    exact = onnx_log_likelihood(Encoder(encoder, provider="cpu"), Sampler(decoder, provider="cpu"),
                                images, num_samples=64)
    assert np.abs(onnx_log_likelihood(Encoder(encoder, provider="cpu"), clipped, images,
                                      num_samples=64) - exact).max() > 1.0


def test_without_an_encoder_the_page_says_so_and_hides_the_panel(page, models):
    with serve_app(make_app(models[0])) as url:
        open_page(page, url + "/")
        assert page.is_hidden("#draw-panel") and page.is_visible("#no-encoder")
        assert "--encoder" in page.inner_text("#no-encoder")
        assert_quiet_and_local(page)


def test_pip_only_install_decodes_and_encodes_through_the_server(page, models, monkeypatch):
    decoder, encoder = models
    monkeypatch.setenv(explorer.ORT_WEB_DIR_ENV, "/nonexistent/onnxruntime-web/dist")
    with serve_app(make_app(decoder, encoder)) as url:
        open_page(page, url + "/" + hash_of(Z[2]))
        assert page.evaluate("explorer.backend") == "server"
        notice = page.inner_text("#notice")
        assert page.is_visible("#notice") and "/v1/decode" in notice and "npm ci" in notice
        assert not [u for u in page.rec.requests if "/explorer/ort/" in u]
        pad_image = np.asarray(page.evaluate("Array.from(explorer.current.image)"), np.float32)
        assert np.abs(pad_image - python_decode(decoder, Z[2:]).ravel()).max() <= DECODE_TOLERANCE
        got = decoded(page.evaluate("z => explorer.decode(z)", Z.tolist()))
        assert np.abs(got - python_decode(decoder, Z)).max() <= DECODE_TOLERANCE
        x = np.random.default_rng(3).random((2, *SHAPE)).astype(np.float32)
        encoded = page.evaluate("x => explorer.encode(x)", x.tolist())
        z_mean, _ = Encoder(encoder, provider="cpu").encode(x)
        assert np.abs(np.asarray(encoded["z_mean"]) - z_mean).max() <= ENCODE_TOLERANCE
        draw_stroke(page)
        page.wait_for_function("explorer.last !== null && explorer.last.score !== null")
        assert_quiet_and_local(page)


def test_static_export_works_from_python_http_server(page, models, tmp_path):
    decoder, encoder = models
    site = tmp_path / "site"
    result = run_export(decoder, "--encoder", encoder, "--out", site)
    assert result.returncode == 0, result.stderr
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
        open_page(page, url + "/" + hash_of(Z[1]))
        assert page.evaluate("explorer.backend") == "onnxruntime-web"
        assert page.is_hidden("#api-links") and page.is_visible("#draw-panel")
        pad_image = np.asarray(page.evaluate("Array.from(explorer.current.image)"), np.float32)
        assert np.abs(pad_image - python_decode(decoder, Z[1:2]).ravel()).max() <= DECODE_TOLERANCE
        draw_stroke(page)
        page.wait_for_function("explorer.last !== null && explorer.last.score !== null")
        last = page.evaluate("explorer.last")
        pixels = np.asarray(last["pixels"], np.float32).reshape(1, *SHAPE)
        z_mean, _ = Encoder(encoder, provider="cpu").encode(pixels)
        assert np.abs(np.asarray(last["z_mean"]) - z_mean[0]).max() <= ENCODE_TOLERANCE
        assert last["score"]["by"] == "browser" and np.isfinite(last["score"]["log_px"])
        assert "in the browser" in page.inner_text("#score")
        # the score of the page, on the noise of Python's (see check_scores_match_python)
        want = onnx_log_likelihood(Encoder(encoder, provider="cpu"), Sampler(decoder, provider="cpu"),
                                   pixels, num_samples=last["score"]["num_samples"],
                                   seed=explorer.SCORE_SEED)
        assert last["score"]["num_samples"] == explorer.SCORE_SAMPLES
        assert abs(last["score"]["log_px"] - want[0]) <= SCORE_TOLERANCE
        assert_quiet_and_local(page)
    finally:
        http.terminate()
        http.wait(10)


@pytest.mark.parametrize("path, selector", [("/docs", ".swagger-ui .opblock"),
                                            ("/redoc", ".api-content [data-section-id]")])
def test_api_docs_render_with_no_network(page, server, path, selector):
    page.goto(server + path, wait_until="networkidle")
    page.wait_for_selector(selector)
    assert_quiet_and_local(page)


def test_browser_benchmark_prints_its_tables(browser, models):
    decoder, encoder = models
    result = subprocess.run(
        [sys.executable, "benchmarks/browser.py", "--mlp", str(decoder), "--encoder", str(encoder),
         "--conv", str(decoder), "--calls", "20", "--rounds", "1", "--loads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "CPU cores" in result.stdout and "Chromium" in result.stdout
    tables = [block for block in result.stdout.split("\n\n") if block.startswith("|")]
    latency, first_load, accuracy = (markdown_rows(table) for table in tables)
    assert [row[2] for row in latency] == ["1", "2", "1", "2"]
    for row in latency:
        frame_ms, frames_per_s = float(row[3]), float(row[4].replace(",", ""))
        assert frame_ms > 0 and frames_per_s == pytest.approx(1e3 / frame_ms, rel=0.01, abs=1)
    for row in first_load:
        parts = [int(cell.replace(",", "")) for cell in row[1:6]]
        assert parts[0] > 0 and parts[1] > 1_000_000 and parts[3] == sum(parts[:3])
        assert parts[4] >= parts[3]  # unpacked
    for row in accuracy:
        assert all(float(cell) <= DECODE_TOLERANCE for cell in row[1:])


def test_the_page_shows_the_decision_of_the_decoders_anomaly_threshold(page, models, tmp_path):
    import shutil

    from keras_vae.core.anomaly import AnomalyThreshold
    from keras_vae.serving.scoring import write_threshold

    decoder, encoder = models
    flagged = tmp_path / "decoder.onnx"
    shutil.copy(decoder, flagged)
    # every image has an NLL above 0 nats: each one is anomalous, at K = 30
    write_threshold(flagged, AnomalyThreshold("log_px", 0.0, 30, 0.01, 0.01, "fixture", 100))
    with serve_app(make_app(flagged, encoder)) as url:
        open_page(page, url + "/")
        assert page.evaluate("explorer.config.anomaly_threshold.num_samples") == 30
        draw_stroke(page)
        page.wait_for_function("explorer.last !== null && explorer.last.score !== null")
        score = page.evaluate("explorer.last.score")
        assert score["by"] == "server" and score["num_samples"] == 30 and score["anomalous"] is True
        assert "ANOMALOUS" in page.inner_text("#score")
        assert "anomalous" in page.get_attribute("#score", "class")
        assert_quiet_and_local(page)
