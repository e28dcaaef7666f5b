"""Where the explorer's files are, and a small static-file sender (gzip, ETag, isolation headers).

The page's own files ship in ``static/``. onnxruntime-web, Swagger UI and ReDoc come
from npm: ``<repository>/node_modules`` in a checkout (``npm ci``, which ``make setup``
runs), or wherever ``KERAS_VAE_NODE_MODULES`` (a ``node_modules`` folder) and
``KERAS_VAE_ORT_WEB_DIR`` (onnxruntime-web's ``dist`` folder) point, which is how an
install from a wheel finds them.
"""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, Response

__all__ = ["STATIC_DIR", "PAGE_ASSETS", "PAGE_MODULES", "NODE_MODULES_ENV", "ORT_WEB_DIR_ENV", "ORT_FILES",
           "DOCS_FILES", "REDOC_LOGO_URL", "ISOLATION_HEADERS", "MissingAssetsError",
           "node_modules_dir", "ort_web_dir", "require_ort_web_dir", "docs_assets", "StaticSender",
           "gzip_bytes"]

#: The page's own files.
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The page's script: ES modules (no build step), index.html loading main.js, which imports
#: the others. Only the files named here are served (/explorer/{name}) and exported.
PAGE_MODULES = (
    "main.js", "hooks.js", "models.js", "pcg64.js", "normal.js", "latents.js", "likelihood.js",
    "score.js", "grid.js", "pad.js", "sliders.js", "latent.js", "interpolation.js", "drawing.js",
    "pictures.js", "address.js", "dom.js", "hierarchy.js", "fitted.js",
)
PAGE_ASSETS = (*PAGE_MODULES, "style.css")
#: The repository root in a checkout: node_modules/ sits beside keras_vae/.
REPO_ROOT = Path(__file__).resolve().parents[3]
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
    """onnxruntime-web's ``dist`` folder when it holds every file of ``ORT_FILES``, else None."""
    path = _ort_candidate()
    return path if all((path / name).is_file() for name in ORT_FILES) else None


def require_ort_web_dir() -> Path:
    """``ort_web_dir``, or ``MissingAssetsError`` saying how to install it."""
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


class StaticSender:
    """Sends static files: gzip-compressed for clients that accept it, with an ETag.

    The compressed bytes are made once per file (in a worker thread) and kept:
    onnxruntime-web's 14 MB WebAssembly file travels as about 3.7 MB. Every
    response carries ``ISOLATION_HEADERS`` and ``Cache-Control: no-cache``
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
                        gzip_bytes, content if content is not None else path.read_bytes())
            return Response(self._gzipped[key], media_type=media_type,
                            headers={**headers, "Content-Encoding": "gzip"})
        if content is not None:
            return Response(content, media_type=media_type, headers=headers)
        return FileResponse(path, media_type=media_type, headers=headers)


def gzip_bytes(data: bytes) -> bytes:
    """``data`` gzip-compressed, reproducibly (no timestamp)."""
    return gzip.compress(data, compresslevel=6, mtime=0)
