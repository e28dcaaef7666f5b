"""Open Inference Protocol (KServe v2, as spoken by Triton) for the decoder.

The decoder is exposed as one model with input ``z`` (FP32 ``[-1, latent_dim]``)
and output ``x_mean`` (FP32 ``[-1, H, W, C]``). Supported: server and model
health, server and model metadata, and ``infer`` with JSON tensors (flat or
nested ``data``) and the binary tensor data extension
(``Inference-Header-Content-Length``), so ``tritonclient.http`` works with or
without ``binary_data``. Errors are ``{"error": "..."}``, as the protocol says.
The wire format is parsed by ``keras_vae.serving.kserve_protocol``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from keras_vae.serving.batching import encode_off_loop
from keras_vae.serving.errors import APIError
from keras_vae.serving.kserve_protocol import (MODEL_VERSION, PLATFORM, SERVER_NAME, infer_request_schema,
                                               input_tensor, parse_request, split_body, wants_binary)
from keras_vae.serving.state import ServingState, get_state

__all__ = ["kserve_router"]

State = Annotated[ServingState, Depends(get_state)]


def _served(request: Request, state: ServingState, name: str) -> ServingState:
    """``state`` if ``name`` (and the optional version) is the served model, else a 404."""
    version = request.path_params.get("version")
    if name != state.model_name:
        raise APIError(404, f"unknown model {name!r}; this server serves {state.model_name!r}")
    if version not in (None, MODEL_VERSION):
        raise APIError(404, f"unknown version {version!r} of model {name!r}; "
                            f"available: {MODEL_VERSION!r}")
    return state


async def server_metadata(request: Request) -> dict:
    return {"name": SERVER_NAME, "version": request.app.version,
            "extensions": ["binary_tensor_data"]}


async def server_live() -> dict:
    return {"live": True}


async def server_ready(state: State) -> JSONResponse:
    return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)


async def model_metadata(request: Request, name: str, state: State) -> dict:
    state = _served(request, state, name)
    sampler = state.sampler
    return {
        "name": state.model_name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": [{"name": sampler.input_name, "datatype": "FP32",
                    "shape": [-1, sampler.latent_dim]}],
        "outputs": [{"name": sampler.output_name, "datatype": "FP32",
                     "shape": [-1, *sampler.image_shape]}],
    }


async def model_ready(request: Request, name: str, state: State) -> JSONResponse:
    state = _served(request, state, name)
    return JSONResponse({"name": state.model_name, "ready": state.ready},
                        status_code=200 if state.ready else 503)


def _json_response(result: dict[str, Any], x: np.ndarray) -> JSONResponse:
    """The response with ``x`` as the flat ``data`` list of the output."""
    result["outputs"][0]["data"] = x.ravel().tolist()
    return JSONResponse(result)


async def infer(request: Request, name: str, state: State) -> Response:
    """Decode the ``z`` input tensor into ``x_mean``."""
    state = _served(request, state, name)
    sampler = state.sampler
    header, binary = split_body(request, await request.body())
    req = parse_request(header)
    z = input_tensor(req, binary, sampler.input_name, sampler.latent_dim, state.max_batch_size)
    binary_out = wants_binary(req, sampler.output_name)
    try:
        x = await state.decode(z)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    state.metrics.images.inc(len(x))

    out: dict[str, Any] = {"name": sampler.output_name, "datatype": "FP32", "shape": list(x.shape)}
    result: dict[str, Any] = {"model_name": state.model_name, "model_version": MODEL_VERSION}
    if req.id is not None:
        result["id"] = req.id
    result["outputs"] = [out]
    if not binary_out:
        return await encode_off_loop(x.size, _json_response, result, x)
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps(result).encode()
    return Response(head + raw, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})


def kserve_router() -> APIRouter:
    """The protocol's routes, with and without ``/versions/{version}``."""
    router = APIRouter(tags=["Open Inference Protocol (KServe v2)"])
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        ("GET", "/v2", server_metadata),
        ("GET", "/v2/health/live", server_live),
        ("GET", "/v2/health/ready", server_ready),
        ("GET", model, model_metadata),
        ("GET", versioned, model_metadata),
        ("GET", model + "/ready", model_ready),
        ("GET", versioned + "/ready", model_ready),
        ("POST", model + "/infer", infer),
        ("POST", versioned + "/infer", infer),
    ]
    # infer reads its body itself (JSON, or JSON plus binary tensors); the schema
    # documents the JSON form, so that clients and schema-driven tests see it.
    infer_body = infer_request_schema()
    for method, path, endpoint in routes:
        router.add_api_route(path, endpoint, methods=[method],
                             openapi_extra=infer_body if endpoint is infer else None)
    return router
