"""Helpers for the browser tests: headless Chromium (Debian's package) driven by Playwright,
an app served by uvicorn in a thread, and a small ONNX encoder to pair with the fixture decoder.

Chromium must stay on 127.0.0.1. Besides Playwright's own switches, which turn off most
background traffic, Chromium 156 still asks accounts.google.com (the GAIA cookie manager)
and update.googleapis.com (an on-demand component) at start-up; `LAUNCH_ARGS` points both
at a closed local port. Do not add a `--disable-features=...` of your own: Chromium keeps
only the last one given, which would drop Playwright's (among them the network time
service's queries).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("KERAS_VAE_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--gaia-url=http://127.0.0.1:9",
    "--component-updater=url-source=http://127.0.0.1:9/service/update2/json",
]


def missing_browser_pieces() -> list[str]:
    """What the browser tests lack here: Chromium, Playwright, onnxruntime-web, the docs assets."""
    from serving import explorer

    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -e '.[dev]'; make setup)")
    if explorer.ort_web_dir() is None:
        missing.append("node_modules/onnxruntime-web (npm ci in the repository root; make setup)")
    if explorer.docs_assets() is None:
        missing.append("node_modules/swagger-ui-dist and redoc (npm ci; make setup)")
    return missing


def require_browser() -> None:
    """Skip the calling test module, saying why, when a piece is missing; under CI, fail instead."""
    missing = missing_browser_pieces()
    if not missing:
        return
    message = "browser tests need " + "; ".join(missing)
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI is set, so this is an error rather than a skip)",
                    pytrace=False)
    pytest.skip(message, allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(app):
    """Run an ASGI app with uvicorn in a thread on 127.0.0.1; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@contextlib.contextmanager
def chromium():
    """A headless Chromium browser (Playwright), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Recorder:
    """Keeps a page's console messages, uncaught errors, requests and failed requests."""

    def __init__(self, page):
        self.console, self.errors, self.requests, self.failed = [], [], [], []
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: self.failed.append((request.url, request.failure)))

    @property
    def console_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"] + self.errors

    def external_requests(self) -> list[str]:
        """Every requested URL whose host is not 127.0.0.1 (data:, blob: and about: aside)."""
        return [url for url in self.requests
                if urlparse(url).scheme not in ("data", "blob", "about")
                and urlparse(url).hostname != "127.0.0.1"]


def make_encoder_onnx(path, latent_dim: int = 4, image_shape=(8, 8, 1), seed: int = 1,
                      metadata: dict[str, str] | None = None) -> Path:
    """An encoder ONNX file: x float32 [batch, H, W, C] -> z_mean, z_log_var [batch, D].

    ``z_mean = flat(x) @ Wm + bm`` and ``z_log_var = tanh(flat(x) @ Wv + bv)``, fixed
    pseudo-random weights. :func:`reference_encode` recomputes it in NumPy.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w, c = image_shape
    size = h * w * c
    rng = np.random.default_rng(seed)
    initializers = {
        "Wm": rng.normal(0.0, 1.0 / np.sqrt(size), (size, latent_dim)).astype(np.float32),
        "bm": rng.normal(0.0, 0.1, (latent_dim,)).astype(np.float32),
        "Wv": rng.normal(0.0, 0.5 / np.sqrt(size), (size, latent_dim)).astype(np.float32),
        "bv": rng.normal(-1.0, 0.1, (latent_dim,)).astype(np.float32),
        "flat_shape": np.array([-1, size], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "Wm"], ["xm"]),
        helper.make_node("Add", ["xm", "bm"], ["z_mean"]),
        helper.make_node("MatMul", ["flat", "Wv"], ["xv"]),
        helper.make_node("Add", ["xv", "bv"], ["pre_log_var"]),
        helper.make_node("Tanh", ["pre_log_var"], ["z_log_var"]),
    ]
    graph = helper.make_graph(
        nodes, "vae_encoder",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", h, w, c])],
        outputs=[helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", latent_dim])
                 for name in ("z_mean", "z_log_var")],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="keras-vae-tests")
    model.ir_version = 8
    helper.set_model_props(model, {"latent_dim": str(latent_dim),
                                   "image_shape": json.dumps(list(image_shape)),
                                   "likelihood": "bernoulli", **(metadata or {})})
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def reference_encode(path, x) -> tuple[np.ndarray, np.ndarray]:
    """(z_mean, z_log_var) float64 of :func:`make_encoder_onnx`'s file, in NumPy."""
    import onnx
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t).astype(np.float64)
            for t in onnx.load(str(path)).graph.initializer}
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    return flat @ init["Wm"] + init["bm"], np.tanh(flat @ init["Wv"] + init["bv"])
