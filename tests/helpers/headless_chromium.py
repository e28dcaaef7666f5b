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
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
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
    from keras_vae.serving import explorer

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


def explorer_app(decoder, encoder=None, **options):
    """The server's app (`create_app` with ``options``) for these files, with the explorer's routes."""
    from keras_vae.serving import explorer
    from keras_vae.serving.app import create_app

    app = create_app(decoder, encoder=encoder, max_batch_size=256, **options)
    if not any(getattr(route, "path", None) == "/explorer/config.json" for route in app.routes):
        explorer.add_explorer_routes(app)
    return app


def open_page(page, url):
    """Loads the explorer at ``url`` and waits until its first images are drawn."""
    page.goto(url)
    page.wait_for_function("window.explorer !== undefined && window.explorer.ready !== null")
    page.evaluate("explorer.ready")
    page.evaluate("explorer.settled()")
