"""The explorer's router: the page at ``/``, its settings, its script and onnxruntime-web."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from keras_vae.serving.errors import APIError
from keras_vae.serving.explorer.assets import (ISOLATION_HEADERS, ORT_FILES, PAGE_ASSETS, STATIC_DIR,
                                               StaticSender, gzip_bytes, ort_web_dir)
from keras_vae.serving.explorer.page import SCORE_SAMPLES, explorer_config
from keras_vae.serving.state import ServingState, get_state

__all__ = ["explorer_router", "not_found"]

State = Annotated[ServingState, Depends(get_state)]


def not_found(what: str) -> APIError:
    return APIError(404, f"not found: {what}")


def explorer_router(sender: StaticSender | None = None) -> APIRouter:
    """Routes for the explorer page, kept out of the OpenAPI schema.

    Where onnxruntime-web is (``ort_web_dir``)
    is decided here, once. Errors are the server's JSON ``{"error": ...}``.
    """
    router = APIRouter(include_in_schema=False)
    ort_dir = ort_web_dir()
    sender = sender or StaticSender()
    cache: dict[int, tuple[bytes, bytes]] = {}

    def config_bytes(state: ServingState) -> tuple[bytes, bytes]:
        """explorer/config.json's bytes, plain and gzip-compressed."""
        key = id(state)
        if key not in cache:  # the models never change while the app runs
            config = explorer_config(
                state.sampler, encoder=state.encoder is not None, ort=ort_dir is not None,
                server=True, max_batch=state.max_batch_size,
                score_samples=min(SCORE_SAMPLES, state.max_score_samples),
                log_weight=getattr(state, "log_weight", None) is not None,
                fitted_prior=getattr(state, "prior", None))
            body = json.dumps(config, separators=(",", ":")).encode()
            cache[key] = body, gzip_bytes(body)
        return cache[key]

    get = dict(methods=["GET", "HEAD"])

    @router.api_route("/", **get)
    async def explorer_page(request: Request) -> Response:
        return await sender.send(request, STATIC_DIR / "index.html")

    @router.api_route("/explorer/config.json", **get)
    async def explorer_settings(request: Request, state: State) -> Response:
        body, gzipped = await asyncio.to_thread(config_bytes, state)
        headers = {**ISOLATION_HEADERS, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            return Response(gzipped, media_type="application/json",
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(body, media_type="application/json", headers=headers)

    @router.api_route("/explorer/ort/{name}", **get)
    async def explorer_ort(name: str, request: Request) -> Response:
        if name not in ORT_FILES:
            raise not_found(f"/explorer/ort/{name}")
        if ort_dir is None:
            raise APIError(404, "onnxruntime-web is not installed on this server "
                                "(run `npm ci` in the repository root, or set KERAS_VAE_ORT_WEB_DIR)")
        return await sender.send(request, ort_dir / name)

    @router.api_route("/explorer/{name}", **get)
    async def explorer_asset(name: str, request: Request) -> Response:
        if name not in PAGE_ASSETS:
            raise not_found(f"/explorer/{name}")
        return await sender.send(request, STATIC_DIR / name)

    return router
