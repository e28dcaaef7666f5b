"""The latent-space explorer: a page that runs the exported ONNX models in the browser.

The page (``static/index.html``, its ES modules ``main.js`` and the rest of
``PAGE_MODULES``, ``style.css``) loads ``decoder.onnx``
(and ``encoder.onnx``, when there is one) into onnxruntime-web (WebAssembly)
and offers a grid of samples from the model's prior, a 2-D pad over two
directions of the latent space with the decoded image beside it, sliders
along the first principal directions, linear and spherical interpolation
strips, and a canvas to draw on or drop an image onto, which is encoded,
reconstructed, placed on the pad and scored.

Everything the page needs comes from the origin that serves it: no CDN and no
other network access. Two ways to serve it:

* ``explorer_router`` and ``docs_router`` are included in the FastAPI app of
  ``keras_vae.serving.app.create_app`` (and so in the Ray Serve app): the page at ``/``,
  its settings at ``/explorer/config.json``, onnxruntime-web under
  ``/explorer/ort/``, and self-hosted ``/docs`` and ``/redoc``;
* ``keras-vae explore decoder.onnx --out site/`` writes the same
  page as a static folder that any static file host serves
  (see ``keras_vae.serving.explorer.cli``).

onnxruntime-web, Swagger UI and ReDoc come from npm (``package.json`` at the
repository root, installed by ``npm ci``, which ``make setup`` runs) and are
looked for in ``<repository>/node_modules``, or wherever the environment
variables ``KERAS_VAE_NODE_MODULES`` (a ``node_modules`` folder) and
``KERAS_VAE_ORT_WEB_DIR`` (onnxruntime-web's ``dist`` folder) point. Without
them (a pip-only install) the served page decodes and encodes through the
server's ``/v1/decode`` and ``/v1/encode`` and says so on screen, and
``/docs`` and ``/redoc`` are FastAPI's stock pages, which load their scripts
from a CDN.

The URLs are the same in both forms, relative to the page::

    index.html                       the page (at / when served)
    explorer/main.js, ..., style.css its script (ES modules, PAGE_MODULES) and style
    explorer/config.json             explorer_config(): shapes, prior, directions, scoring
    explorer/ort/...                 onnxruntime-web (ORT_FILES)
    models/decoder.onnx              the model files (the server's /models/ routes)
    models/encoder.onnx
"""

from __future__ import annotations

from fastapi import FastAPI

from keras_vae.serving.explorer.assets import (NODE_MODULES_ENV, ORT_FILES, ORT_WEB_DIR_ENV, PAGE_ASSETS,
                                               PAGE_MODULES, REDOC_LOGO_URL, STATIC_DIR, MissingAssetsError,
                                               StaticSender, docs_assets, node_modules_dir, ort_web_dir,
                                               require_ort_web_dir)
from keras_vae.serving.explorer.docs import docs_router
from keras_vae.serving.explorer.page import (SCORE_SAMPLES, SCORE_SEED, SLIDERS, explorer_config,
                                             prior_directions)
from keras_vae.serving.explorer.routes import explorer_router

__all__ = [
    "explorer_router", "docs_router", "add_explorer_routes", "explorer_config", "prior_directions",
    "ort_web_dir", "require_ort_web_dir", "node_modules_dir", "docs_assets", "STATIC_DIR",
    "ORT_FILES", "PAGE_ASSETS", "PAGE_MODULES", "ORT_WEB_DIR_ENV", "NODE_MODULES_ENV",
    "REDOC_LOGO_URL", "MissingAssetsError", "SCORE_SAMPLES", "SCORE_SEED", "SLIDERS",
]


def add_explorer_routes(app: FastAPI) -> None:
    """Include the explorer page and the self-hosted ``/docs`` and ``/redoc`` in ``app``.

    ``app`` is a ``keras_vae.serving.app.create_app`` app (it reads ``app.state.serving``).
    """
    sender = StaticSender()
    app.include_router(explorer_router(sender))
    app.include_router(docs_router(sender))
