"""The latent-space explorer: a page that runs the exported ONNX models in the browser.

The page (``static/index.html``, ``app.js``, ``style.css``) loads ``decoder.onnx``
(and ``encoder.onnx``, when there is one) into onnxruntime-web (WebAssembly)
and offers a grid of samples from the model's prior, a 2-D pad over two
directions of the latent space with the decoded image beside it, sliders
along the first principal directions, linear and spherical interpolation
strips, and a canvas to draw on or drop an image onto, which is encoded,
reconstructed, placed on the pad and scored.

Everything the page needs comes from the origin that serves it: no CDN and no
other network access. Two ways to serve it:

* :func:`add_explorer_routes` adds it to the FastAPI app of
  :mod:`keras_vae.serving.server` (and so to the Ray Serve app): the page at ``/``,
  its settings at ``/explorer/config.json``, onnxruntime-web under
  ``/explorer/ort/``, and self-hosted ``/docs`` and ``/redoc``;
* ``python -m keras_vae.serving.explorer decoder.onnx --out site/`` writes the same
  page as a static folder that any static file host serves
  (see :mod:`keras_vae.serving.explorer.__main__`).

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

    index.html                      the page (at / when served)
    explorer/app.js, style.css      its script and style
    explorer/config.json            explorer_config(): shapes, prior, directions
    explorer/ort/...                onnxruntime-web (ORT_FILES)
    models/decoder.onnx             the model files (the server's /models/ routes)
    models/encoder.onnx
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, Response

from keras_vae.core import contract
from keras_vae.serving.errors import APIError

__all__ = [
    "add_explorer_routes", "explorer_config", "prior_directions", "ort_web_dir",
    "node_modules_dir", "docs_assets", "STATIC_DIR", "ORT_FILES", "PAGE_ASSETS",
    "ORT_WEB_DIR_ENV", "NODE_MODULES_ENV", "MissingAssetsError",
]

#: The page's own files.
STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_ASSETS = ("app.js", "style.css")
#: The repository root: node_modules/ sits beside keras_vae/serving/ in a checkout.
REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES_ENV = "KERAS_VAE_NODE_MODULES"
ORT_WEB_DIR_ENV = "KERAS_VAE_ORT_WEB_DIR"
#: The smallest set of onnxruntime-web files for a classic <script>: the
#: WebAssembly-only API (ort.wasm.min.js), the module that loads the runtime
#: and the runtime itself (SIMD, threads when the page is cross-origin isolated).
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
#: Swagger UI and ReDoc files in node_modules, by the name they are served under.
DOCS_FILES = {
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "favicon-32x32.png": "swagger-ui-dist/favicon-32x32.png",
    "redoc.standalone.js": "redoc/bundles/redoc.standalone.js",
}
#: ReDoc 2.5.4 renders an "API docs by Redocly" link whose image is fixed to this
#: URL, with no option to turn it off. It is served with the URL replaced by an
#: empty data: URL, so that nothing is fetched (the broken image removes itself).
REDOC_LOGO_URL = "https://cdn.redoc.ly/redoc/logo-mini.svg"
#: How many directions get a slider on the page.
SLIDERS = 5
#: Importance samples for the score of a drawn or dropped image.
SCORE_SAMPLES = 200
#: Cross-origin isolation: lets the page use WebAssembly threads (?threads=N).
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
               ".wasm": "application/wasm", ".html": "text/html", ".png": "image/png"}


class MissingAssetsError(RuntimeError):
    """onnxruntime-web (or another npm package) is not installed where it is looked for."""


# ----------------------------------------------------------------- locating files


def node_modules_dir() -> Path:
    """``$KERAS_VAE_NODE_MODULES``, else ``<repository>/node_modules`` (may not exist)."""
    return Path(os.environ.get(NODE_MODULES_ENV) or REPO_ROOT / "node_modules")


def _ort_candidate() -> Path:
    override = os.environ.get(ORT_WEB_DIR_ENV)
    return Path(override) if override else node_modules_dir() / "onnxruntime-web" / "dist"


def ort_web_dir() -> Path | None:
    """onnxruntime-web's ``dist`` folder when it holds every file of :data:`ORT_FILES`, else None."""
    path = _ort_candidate()
    return path if all((path / name).is_file() for name in ORT_FILES) else None


def require_ort_web_dir() -> Path:
    """:func:`ort_web_dir`, or :class:`MissingAssetsError` saying how to install it."""
    path = ort_web_dir()
    if path is None:
        raise MissingAssetsError(
            f"onnxruntime-web not found in {str(_ort_candidate())!r} (it needs "
            f"{', '.join(ORT_FILES)}): run `npm ci` in the repository root (`make setup` "
            f"does), or point {ORT_WEB_DIR_ENV} at onnxruntime-web's dist folder")
    return path


def docs_assets() -> dict[str, Path] | None:
    """Swagger UI and ReDoc files by served name, or None when any is missing."""
    root = node_modules_dir()
    files = {name: root / relative for name, relative in DOCS_FILES.items()}
    return files if all(path.is_file() for path in files.values()) else None


# --------------------------------------------------------------- the page's data


def prior_directions(latent_dim: int, prior: contract.MixturePrior | None) -> dict[str, list]:
    """The prior's mean and principal axes, as plain lists for JSON.

    The axes are the eigenvectors of the prior's covariance, largest variance
    first: what principal component analysis of many samples of z converges
    to, computed exactly from the prior's parameters. For a mixture,
    ``Cov = Σ_c w_c (diag σ_c² + μ_c μ_cᵀ) − μ̄ μ̄ᵀ``; for N(0, I) every direction
    has variance 1 and the axes are the latent dimensions in order. Each axis
    is signed so that its largest entry is positive.

    Returns ``{"center": (D,), "directions": (D, D) rows, "direction_std": (D,),
    "explained": (D,) fraction of the total variance, "dim_std": (D,)}``.
    """
    if prior is None:
        center = np.zeros(latent_dim)
        covariance = np.eye(latent_dim)
    else:
        weights = prior.weights[:, None]
        center = (weights * prior.means).sum(0)
        second = np.einsum("c,ci,cj->ij", prior.weights, prior.means, prior.means)
        second += np.diag((weights * np.exp(prior.log_vars)).sum(0))
        covariance = second - np.outer(center, center)
        covariance = 0.5 * (covariance + covariance.T)
    values, vectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(-values, kind="stable")
    values = np.clip(values[order], 0.0, None)
    vectors = vectors[:, order].T  # rows
    signs = np.sign(vectors[np.arange(latent_dim), np.argmax(np.abs(vectors), axis=1)])
    vectors = vectors * np.where(signs == 0, 1.0, signs)[:, None]
    total = float(values.sum()) or 1.0
    return {
        "center": center.tolist(),
        "directions": vectors.tolist(),
        "direction_std": np.sqrt(values).tolist(),
        "explained": (values / total).tolist(),
        "dim_std": np.sqrt(np.clip(np.diag(covariance), 0.0, None)).tolist(),
    }


def _decoder_log_var(sampler) -> Any:
    """log σ² of a Gaussian decoder from its metadata, as JSON (a number or nested lists)."""
    value = getattr(sampler, "decoder_log_var", None)
    decode = getattr(contract, "decode_decoder_log_var", None)
    if value is None and decode is not None and sampler.likelihood == "gaussian":
        try:
            value = decode(sampler.metadata.get(getattr(contract, "DECODER_LOG_VAR", "")),
                           sampler.image_shape)
        except ValueError:
            value = None
    if value is None:
        return None
    return float(value) if np.ndim(value) == 0 else np.asarray(value, np.float64).tolist()


def _compact(values) -> list:
    """Nested lists of floats rounded to 9 significant digits (float32 values survive exactly)."""
    array = np.asarray(values, np.float64)
    return np.reshape([float(f"{v:.9g}") for v in array.ravel().tolist()], array.shape).tolist()


def explorer_config(sampler, *, encoder: bool, ort: bool, server: bool,
                    max_batch: int | None = None,
                    score_samples: int = SCORE_SAMPLES) -> dict[str, Any]:
    """What the page needs to know about the model, as JSON-ready data.

    Args:
        sampler: the decoder's :class:`keras_vae.serving.sampler.Sampler` (its shapes,
            likelihood, metadata and prior are read).
        encoder: whether ``models/encoder.onnx`` is there.
        ort: whether onnxruntime-web is served (``explorer/ort/``); when
            False the page decodes through the server.
        server: True when served by :mod:`keras_vae.serving.server` (the page may then
            call ``/v1/...``), False in a static export.
        max_batch: most rows the server decodes per request.
        score_samples: importance samples K for the score of a drawn image.
    """
    prior = sampler.prior
    metadata = sampler.metadata
    return {
        "latent_dim": int(sampler.latent_dim),
        "image_shape": [int(d) for d in sampler.image_shape],
        "likelihood": sampler.likelihood,
        "decoder_log_var": _decoder_log_var(sampler),
        "prior": None if prior is None else {
            "components": int(prior.components),
            "weights": _compact(prior.weights),
            "means": _compact(prior.means),
            "log_vars": _compact(prior.log_vars),
        },
        **{key: _compact(value)
           for key, value in prior_directions(sampler.latent_dim, prior).items()},
        "sliders": min(SLIDERS, int(sampler.latent_dim)),
        "max_temperature": contract.MAX_TEMPERATURE,
        "score_samples": int(score_samples),
        "encoder": bool(encoder),
        "ort": bool(ort),
        "server": bool(server),
        "max_batch": max_batch,
        "models": {"decoder": "models/decoder.onnx",
                   "encoder": "models/encoder.onnx" if encoder else None},
        "tensors": {"decoder_input": contract.DECODER_INPUT,
                    "decoder_output": contract.DECODER_OUTPUT,
                    "encoder_input": contract.ENCODER_INPUT,
                    "encoder_outputs": list(contract.ENCODER_OUTPUTS)},
        "model": {key: metadata[key] for key in (
            contract.DATASET, contract.SOURCE_BACKEND, contract.VERSION, contract.CREATED,
            contract.PRECISION) if key in metadata},
    }


# ------------------------------------------------------------------------ routes


class _Assets:
    """Sends static files: gzip-compressed for clients that accept it, with an ETag.

    The compressed bytes are made once per file (in a worker thread) and kept:
    onnxruntime-web's 14 MB WebAssembly file travels as about 3.7 MB. Every
    response carries :data:`ISOLATION_HEADERS` and ``Cache-Control: no-cache``
    (browsers revalidate, and get ``304 Not Modified`` while the file is the same).
    """

    MIN_GZIP_BYTES = 1024

    def __init__(self) -> None:
        self._gzipped: dict[tuple, bytes] = {}
        self._lock = asyncio.Lock()

    async def send(self, request: Request, path: Path, content: bytes | None = None) -> Response:
        """``path``'s file, or ``content`` (bytes standing for that file, e.g. patched)."""
        stat = path.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        headers = {**ISOLATION_HEADERS, "Cache-Control": "no-cache", "ETag": etag,
                   "Vary": "Accept-Encoding"}
        media_type = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        accepts_gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
        if accepts_gzip and (content is not None or stat.st_size >= self.MIN_GZIP_BYTES):
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            async with self._lock:
                if key not in self._gzipped:
                    self._gzipped[key] = await asyncio.to_thread(
                        _gzip, content if content is not None else path.read_bytes())
            return Response(self._gzipped[key], media_type=media_type,
                            headers={**headers, "Content-Encoding": "gzip"})
        if content is not None:
            return Response(content, media_type=media_type, headers=headers)
        return FileResponse(path, media_type=media_type, headers=headers)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _not_found(what: str) -> APIError:
    return APIError(404, f"not found: {what}")


def add_explorer_routes(app: FastAPI) -> None:
    """Serve the explorer page at ``/`` and self-hosted ``/docs`` and ``/redoc`` on ``app``.

    ``app`` is a :func:`keras_vae.serving.server.create_app` app: requests read
    ``app.state.serving`` (its ``sampler``, and ``encoder`` when there is one).
    Where the npm packages are is decided here, once. The routes stay out of
    the OpenAPI schema; their errors are the server's JSON ``{"error": ...}``.
    Any ``/docs`` and ``/redoc`` routes the app already has are replaced.
    """
    ort_dir = ort_web_dir()
    docs = docs_assets()
    assets = _Assets()
    cache: dict[int, tuple[bytes, bytes]] = {}

    def config_for(request: Request) -> tuple[bytes, bytes]:
        """explorer/config.json's bytes, plain and gzip-compressed."""
        state = request.app.state.serving
        key = id(state)
        if key not in cache:  # the models never change while the app runs
            config = explorer_config(
                state.sampler, encoder=getattr(state, "encoder", None) is not None,
                ort=ort_dir is not None, server=True, max_batch=getattr(state, "max_batch", None),
                score_samples=min(SCORE_SAMPLES, getattr(state, "max_score_samples", SCORE_SAMPLES)))
            body = json.dumps(config, separators=(",", ":")).encode()
            cache[key] = body, _gzip(body)
        return cache[key]

    get = dict(methods=["GET", "HEAD"], include_in_schema=False)

    @app.api_route("/", **get)
    async def explorer_page(request: Request) -> Response:
        return await assets.send(request, STATIC_DIR / "index.html")

    @app.api_route("/explorer/config.json", **get)
    async def explorer_settings(request: Request) -> Response:
        body, gzipped = await asyncio.to_thread(config_for, request)
        headers = {**ISOLATION_HEADERS, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            return Response(gzipped, media_type="application/json",
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(body, media_type="application/json", headers=headers)

    @app.api_route("/explorer/ort/{name}", **get)
    async def explorer_ort(name: str, request: Request) -> Response:
        if name not in ORT_FILES:
            raise _not_found(f"/explorer/ort/{name}")
        if ort_dir is None:
            raise APIError(404, "onnxruntime-web is not installed on this server "
                                "(run `npm ci` in the repository root)")
        return await assets.send(request, ort_dir / name)

    @app.api_route("/explorer/{name}", **get)
    async def explorer_asset(name: str, request: Request) -> Response:
        if name not in PAGE_ASSETS:
            raise _not_found(f"/explorer/{name}")
        return await assets.send(request, STATIC_DIR / name)

    _add_docs_routes(app, docs, assets)


def _add_docs_routes(app: FastAPI, docs: dict[str, Path] | None, assets: _Assets) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from local files, in place of FastAPI's CDN ones."""
    oauth2_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    replaced = {"/docs", "/redoc", oauth2_url, app.docs_url, app.redoc_url}
    app.router.routes[:] = [route for route in app.router.routes
                            if getattr(route, "path", None) not in replaced]
    if app.openapi_url is None:
        return
    redoc_js: bytes | None = None
    if docs is not None:
        redoc_js = docs["redoc.standalone.js"].read_bytes().replace(
            REDOC_LOGO_URL.encode(), b"data:,")
    get = dict(methods=["GET", "HEAD"], include_in_schema=False)

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return root + app.openapi_url, root + "/explorer/docs/"

    @app.api_route("/explorer/docs/{name}", **get)
    async def docs_asset(name: str, request: Request) -> Response:
        if docs is None or name not in docs:
            raise _not_found(f"/explorer/docs/{name}")
        return await assets.send(request, docs[name],
                                 redoc_js if name == "redoc.standalone.js" else None)

    @app.api_route("/docs", **get)
    async def swagger_ui(request: Request) -> Response:
        openapi, assets = urls(request)
        if docs is None:  # a pip-only install: FastAPI's page, scripts from its CDN
            return get_swagger_ui_html(openapi_url=openapi, title=f"{app.title} - Swagger UI",
                                       oauth2_redirect_url=oauth2_url)
        return get_swagger_ui_html(
            openapi_url=openapi, title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_url,
            swagger_js_url=assets + "swagger-ui-bundle.js",
            swagger_css_url=assets + "swagger-ui.css",
            swagger_favicon_url=assets + "favicon-32x32.png")

    @app.api_route(oauth2_url, **get)
    async def swagger_ui_redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    @app.api_route("/redoc", **get)
    async def redoc(request: Request) -> Response:
        openapi, assets = urls(request)
        if docs is None:
            return get_redoc_html(openapi_url=openapi, title=f"{app.title} - ReDoc")
        return get_redoc_html(
            openapi_url=openapi, title=f"{app.title} - ReDoc",
            redoc_js_url=assets + "redoc.standalone.js",
            redoc_favicon_url=assets + "favicon-32x32.png", with_google_fonts=False)
