"""Open Inference Protocol (KServe v2, as spoken by Triton) for the decoder.

The decoder is exposed as one model with input ``z`` (FP32 ``[-1, latent_dim]``)
and output ``x_mean`` (FP32 ``[-1, H, W, C]``). Supported: server and model
health, server and model metadata, and ``infer`` with JSON tensors (flat or
nested ``data``) and the binary tensor data extension
(``Inference-Header-Content-Length``), so ``tritonclient.http`` works with or
without ``binary_data``. Errors are ``{"error": "..."}``, as the protocol says.

Handlers read the serving state from ``request.app.state.serving`` (see
:mod:`keras_vae.serving.server`); this module only translates the protocol.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from keras_vae.serving.batching import encode_off_loop
from keras_vae.serving.errors import APIError, describe_validation_errors, is_json_content_type

if TYPE_CHECKING:
    from keras_vae.serving.server import ServingState

__all__ = ["add_kserve_routes", "SERVER_NAME"]

SERVER_NAME = "keras-vae"
MODEL_VERSION = "1"
PLATFORM = "onnxruntime_onnx"
HEADER_LENGTH = "inference-header-content-length"


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    shape: list[StrictInt]
    datatype: StrictStr
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    parameters: dict[str, Any] = Field(default_factory=dict)


class _InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: StrictStr | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[_Tensor] = Field(min_length=1)
    outputs: list[_Output] | None = None


def _state(request: Request, name: str) -> ServingState:
    """The serving state if ``name`` (and the optional version) is the served model, else a 404."""
    state: ServingState = request.app.state.serving
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


async def server_ready(request: Request) -> JSONResponse:
    ready = request.app.state.serving.ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def model_metadata(request: Request, name: str) -> dict:
    state = _state(request, name)
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


async def model_ready(request: Request, name: str) -> JSONResponse:
    state = _state(request, name)
    return JSONResponse({"name": state.model_name, "ready": state.ready},
                        status_code=200 if state.ready else 503)


def _split_body(request: Request, body: bytes) -> tuple[bytes, bytes]:
    """Split a request into its JSON header and binary tensor data."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise APIError(415, f"unsupported Content-Encoding {encoding!r}; send uncompressed data")
    content_type = request.headers.get("content-type")
    if content_type and not (is_json_content_type(content_type)
                             or content_type.startswith("application/octet-stream")):
        raise APIError(415, "expected Content-Type application/json (or application/"
                            f"octet-stream with binary tensors); got {content_type}")
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        raise APIError(400, f"invalid Inference-Header-Content-Length {header_length!r} for "
                            f"a {len(body)}-byte body")
    return body[:n], body[n:]


def _parse_request(header: bytes) -> _InferRequest:
    try:
        payload = json.loads(header)
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"malformed JSON in inference request: {exc}") from None
    if not isinstance(payload, dict):
        raise APIError(400, "the inference request must be a JSON object")
    try:
        return _InferRequest.model_validate(payload)
    except ValidationError as exc:
        raise APIError(400, f"invalid inference request: "
                            f"{describe_validation_errors(exc.errors())}") from None


def _input_tensor(state: ServingState, req: _InferRequest, binary: bytes) -> np.ndarray:
    """Return the ``z`` input as a float32 ``[n, latent_dim]`` array, or raise a 400."""
    expected = state.sampler.input_name
    names = [t.name for t in req.inputs]
    if names != [expected]:
        raise APIError(400, f"expected exactly one input {expected!r}; got {names}")
    tensor = req.inputs[0]
    if tensor.datatype != "FP32":
        raise APIError(400, f"input {expected!r} must have datatype FP32; got {tensor.datatype!r}")
    dim = state.sampler.latent_dim
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != dim or shape[0] < 1:
        raise APIError(400, f"input {expected!r} must have shape [n, {dim}] with n >= 1; "
                            f"got {shape}")
    if shape[0] > state.max_batch:
        raise APIError(400, f"input {expected!r} has {shape[0]} rows; at most "
                            f"{state.max_batch} per request")
    count = math.prod(shape)

    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise APIError(400, f"input {expected!r} has both data and binary_data_size")
        if size != count * 4 or len(binary) != size:
            raise APIError(400, f"input {expected!r}: binary_data_size {size!r} and "
                                f"{len(binary)} bytes of binary data do not match shape "
                                f"{shape} ({count * 4} bytes of FP32)")
        return np.frombuffer(binary, dtype="<f4").reshape(shape)
    if binary:
        raise APIError(400, "binary data sent but no input declares binary_data_size")
    if tensor.data is None:
        raise APIError(400, f"input {expected!r} has no data")
    try:
        data = np.asarray(tensor.data)
    except (ValueError, TypeError):
        raise APIError(400, f"input {expected!r}: data is not a (nested) list of numbers") from None
    if data.dtype == np.bool_ or data.dtype.kind not in "iuf":
        raise APIError(400, f"input {expected!r}: data must hold numbers; got {data.dtype} values")
    if data.size != count:
        raise APIError(400, f"input {expected!r}: data has {data.size} values but shape "
                            f"{shape} needs {count}")
    return data.reshape(shape)


def _json_response(result: dict[str, Any], x: np.ndarray) -> JSONResponse:
    """The response with ``x`` as the flat ``data`` list of the output."""
    result["outputs"][0]["data"] = x.ravel().tolist()
    return JSONResponse(result)


def _wants_binary(state: ServingState, req: _InferRequest) -> bool:
    """Whether the (only) output goes back as binary tensor data."""
    default = bool(req.parameters.get("binary_data_output", False))
    if not req.outputs:
        return default
    names = [o.name for o in req.outputs]
    if names != [state.sampler.output_name]:
        raise APIError(400, f"unknown outputs {names}; the model has one output "
                            f"{state.sampler.output_name!r}")
    return bool(req.outputs[0].parameters.get("binary_data", default))


async def infer(request: Request, name: str) -> Response:
    """Decode the ``z`` input tensor into ``x_mean``."""
    state = _state(request, name)
    header, binary = _split_body(request, await request.body())
    req = _parse_request(header)
    z = _input_tensor(state, req, binary)
    binary_out = _wants_binary(state, req)
    try:
        x = await state.decode(z)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    state.metrics.images.inc(len(x))

    out: dict[str, Any] = {"name": state.sampler.output_name, "datatype": "FP32",
                           "shape": list(x.shape)}
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


def add_kserve_routes(app: FastAPI) -> None:
    """Register the protocol's routes on ``app`` (with and without ``/versions/{version}``)."""
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
    infer_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_definitions(_InferRequest.model_json_schema())}}}}
    for method, path, endpoint in routes:
        app.add_api_route(path, endpoint, methods=[method],
                          tags=["Open Inference Protocol (KServe v2)"],
                          openapi_extra=infer_body if endpoint is infer else None)
