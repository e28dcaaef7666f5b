"""Open Inference Protocol (KServe v2, as spoken by Triton) for the decoder.

The decoder is exposed as one model with input ``z`` (FP32 ``[-1, latent_dim]``)
and output ``x_mean`` (FP32 ``[-1, H, W, C]``). Supported: server and model
health, server and model metadata, and ``infer`` with JSON tensors (flat or
nested ``data``) and the binary tensor data extension
(``Inference-Header-Content-Length``), so ``tritonclient.http`` works with or
without ``binary_data``. Errors are ``{"error": "..."}``, as the protocol says.
The wire format is parsed by ``keras_vae.serving.kserve_protocol``. The routes read
``{name}`` and ``{version}`` from the path themselves: any string is accepted, an unknown
one is a 404 (never a 422), and the OpenAPI document lists them as path parameters.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from keras_vae.serving import fitted
from keras_vae.serving.batching import encode_off_loop
from keras_vae.serving.errors import APIError
from keras_vae.serving.kserve_protocol import (MODEL_VERSION, PLATFORM, SERVER_NAME, InferRequest,
                                               InferResponse, ModelMetadata, ModelReady, ServerLive,
                                               ServerMetadata, ServerReady, input_tensor,
                                               parse_request, split_body, wants_binary)
from keras_vae.serving.openapi import binary_responses, error_responses, path_parameters
from keras_vae.serving.state import ServingState, get_state

__all__ = ["kserve_router"]

State = Annotated[ServingState, Depends(get_state)]


def _served(request: Request, state: ServingState) -> ServingState:
    """``state`` if the path's ``{name}`` (and ``{version}``) is a served model (the decoder, or
    a fitted prior's ``{model_name}_prior``), else a 404."""
    name, version = request.path_params["name"], request.path_params.get("version")
    if name not in (state.model_name, fitted.kserve_name(state)):
        served = " and ".join(repr(n) for n in (state.model_name, fitted.kserve_name(state)) if n)
        raise APIError(404, f"unknown model {name!r}; this server serves {served}")
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


async def model_metadata(request: Request, state: State) -> dict:
    state = _served(request, state)
    if request.path_params["name"] == fitted.kserve_name(state):
        return fitted.kserve_metadata(state, MODEL_VERSION, PLATFORM)
    sampler = state.sampler
    return {
        "name": state.model_name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": [{"name": sampler.input_name, "datatype": "FP32",
                    "shape": [-1, sampler.latent_dim]}] + (
            [] if sampler.label_name is None else
            [{"name": sampler.label_name, "datatype": "INT64", "shape": [-1]}]),
        "outputs": [{"name": sampler.output_name, "datatype": "FP32",
                     "shape": [-1, *sampler.image_shape]}],
    }


async def model_ready(request: Request, state: State) -> JSONResponse:
    state = _served(request, state)
    return JSONResponse({"name": request.path_params["name"], "ready": state.ready},
                        status_code=200 if state.ready else 503)


def _json_response(result: dict[str, Any], x: np.ndarray) -> JSONResponse:
    """The response with ``x`` as the flat ``data`` list of the output."""
    result["outputs"][0]["data"] = x.ravel().tolist()
    return JSONResponse(result)


async def infer(request: Request, state: State) -> Response:
    """Decode the ``z`` input tensor (and a class-conditional decoder's ``label``) into ``x_mean``.

    The answer is JSON, or with the binary tensor data extension (``binary_data`` asked for)
    the JSON header followed by the raw little-endian float32 values of ``x_mean``;
    ``Inference-Header-Content-Length`` gives the header's length in bytes.
    """
    state = _served(request, state)
    sampler = state.sampler
    header, binary = split_body(request, await request.body())
    req = parse_request(header)
    prior = state.prior if request.path_params["name"] == fitted.kserve_name(state) else None
    if prior is not None:  # the fitted prior's graph: one call, as Triton would run prior.onnx
        values = input_tensor(req, binary, prior.input_names[0], prior.prior.dim,
                              state.max_batch_size, (prior.input_names + (None,))[1])
        output_name = prior.output_name
    else:
        z = input_tensor(req, binary, sampler.input_name, sampler.latent_dim, state.max_batch_size,
                         sampler.label_name)
        z, labels = z if sampler.label_name is not None else (z, None)
        output_name = sampler.output_name
    binary_out = wants_binary(req, output_name)
    try:
        x = await (fitted.run_kserve(state, values) if prior else state.decode(z, labels))
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    if prior is None:
        state.metrics.images.inc(len(x))

    out: dict[str, Any] = {"name": output_name, "datatype": "FP32", "shape": list(x.shape)}
    result: dict[str, Any] = {"model_name": request.path_params["name"], "model_version": MODEL_VERSION}
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


def _inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` references replaced by the definitions."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def infer_request_schema() -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of ``infer``: the JSON form, with its definitions inlined."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_definitions(InferRequest.model_json_schema())}}}}


_NAME = "the model's name (this server serves one)"
_VERSION = f"the model's version (this server has one: {MODEL_VERSION!r})"
_MODEL = error_responses(404)
_READY = {503: {"model": ModelReady, "description": "Not ready: starting or shutting down"}}
_INFER = {**binary_responses("The output tensor: JSON, or a JSON header and binary tensor data",
                             "application/octet-stream", model=InferResponse),
          **error_responses(400, 404, 413, 415, 503)}


def kserve_router() -> APIRouter:
    """The protocol's routes, with and without ``/versions/{version}``."""
    router = APIRouter(tags=["Open Inference Protocol (KServe v2)"])
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    # (method, path, endpoint, answer model, other answers)
    routes = [
        ("GET", "/v2", server_metadata, ServerMetadata, {}),
        ("GET", "/v2/health/live", server_live, ServerLive, {}),
        ("GET", "/v2/health/ready", server_ready, ServerReady,
         {503: {"model": ServerReady, "description": "Not ready: starting or shutting down"}}),
        ("GET", model, model_metadata, ModelMetadata, _MODEL),
        ("GET", versioned, model_metadata, ModelMetadata, _MODEL),
        ("GET", model + "/ready", model_ready, ModelReady, {**_MODEL, **_READY}),
        ("GET", versioned + "/ready", model_ready, ModelReady, {**_MODEL, **_READY}),
        ("POST", model + "/infer", infer, None, _INFER),
        ("POST", versioned + "/infer", infer, None, _INFER),
    ]
    # infer reads its body itself (JSON, or JSON plus binary tensors); the schema
    # documents the JSON form, so that clients and schema-driven tests see it.
    infer_body = infer_request_schema()
    for method, path, endpoint, answer, others in routes:
        extra = path_parameters(**{"name": _NAME, **({"version": _VERSION} if "{version}" in path
                                                      else {})}) if "{name}" in path else {}
        if endpoint is infer:
            extra.update(infer_body)
        responses = others if answer is None else {200: {"model": answer}, **others}
        router.add_api_route(path, endpoint, methods=[method], response_model=None,
                             response_class=Response if endpoint is infer else JSONResponse,
                             responses=responses, openapi_extra=extra or None)
    return router
