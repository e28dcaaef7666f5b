"""The Open Inference Protocol's wire format (KServe v2, as spoken by Triton) for the decoder.

Parses an infer request, JSON tensors (flat or nested ``data``) or the binary tensor
data extension (``Inference-Header-Content-Length``), into the decoder's ``z``; every
problem is an ``APIError`` 400 or 415 that says what
was expected. The routes are ``keras_vae.serving.routes.kserve``. A tensor's ``data`` is
documented with a bounded schema (``TENSOR_DATA``): numbers, flat or nested one level, as the
protocol writes the ``[n, d]`` and ``[n]`` tensors served here.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import numpy as np
from fastapi import Request
from pydantic import (BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError,
                      WithJsonSchema)

from keras_vae.serving.errors import APIError, describe_validation_errors, is_json_content_type
from keras_vae.serving.openapi import integer

__all__ = ["InferRequest", "split_body", "parse_request", "input_tensor", "wants_binary",
           "SERVER_NAME", "MODEL_VERSION", "PLATFORM", "ServerMetadata",
           "ServerLive", "ServerReady", "ModelMetadata", "ModelReady", "InferResponse",
           "TENSOR_DATA"]

SERVER_NAME = "keras-vae"
MODEL_VERSION = "1"
PLATFORM = "onnxruntime_onnx"
HEADER_LENGTH = "inference-header-content-length"
_NUMBERS = {"type": "array", "items": {"type": "number"}}
#: A tensor's ``data``: numbers in row-major order, flat or one list per row (nesting bounded,
#: so that generators can draw from it), or null when the tensor is sent as binary data.
TENSOR_DATA = {"anyOf": [_NUMBERS, {"type": "array", "items": _NUMBERS}, {"type": "null"}],
               "default": None, "description": "the values in row-major order, flat or one list "
               "per row; null (or absent) with binary data (binary_data_size)"}


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    shape: list[integer(0)]
    datatype: StrictStr
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Annotated[Any, WithJsonSchema(TENSOR_DATA)] = None


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: StrictStr | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[_Tensor] = Field(min_length=1)
    outputs: list[_Output] | None = None


def split_body(request: Request, body: bytes) -> tuple[bytes, bytes]:
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


def parse_request(header: bytes) -> InferRequest:
    try:
        payload = json.loads(header)
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"malformed JSON in inference request: {exc}") from None
    if not isinstance(payload, dict):
        raise APIError(400, "the inference request must be a JSON object")
    try:
        return InferRequest.model_validate(payload)
    except ValidationError as exc:
        raise APIError(400, f"invalid inference request: "
                            f"{describe_validation_errors(exc.errors())}") from None


def input_tensor(req: InferRequest, binary: bytes, input_name: str, latent_dim: int,
                 max_batch_size: int, label_name: str | None = None) -> Any:
    """Return the ``z`` input as a float32 ``[n, latent_dim]`` array, or raise a 400.

    With ``label_name`` (a class-conditional decoder), the request has a second input,
    INT64 ``[n]`` (``[n, 1]`` too, as Triton clients send it), and the answer is
    ``(z, labels)``; binary tensor data holds the inputs in the request's order.
    """
    specs = {input_name: ("FP32", "<f4", [latent_dim])}
    if label_name is not None:
        specs[label_name] = ("INT64", "<i8", [])
    names = [t.name for t in req.inputs]
    if sorted(names) != sorted(specs):
        wanted = f"exactly one input {input_name!r}" if label_name is None else f"the inputs {list(specs)}"
        raise APIError(400, f"expected {wanted}; got {names}")
    if binary and not any("binary_data_size" in t.parameters for t in req.inputs):
        raise APIError(400, "binary data sent but no input declares binary_data_size")
    values, offset = {}, 0
    for tensor in req.inputs:
        values[tensor.name], offset = _tensor(tensor, binary, offset, *specs[tensor.name],
                                              max_batch_size)
    if offset != len(binary):
        raise APIError(400, f"{len(binary)} bytes of binary data, but the inputs declare {offset}")
    z = values[input_name]
    if label_name is None:
        return z
    labels = values[label_name].reshape(-1)
    if len(labels) != len(z):
        raise APIError(400, f"input {label_name!r} has {len(labels)} labels for {len(z)} rows of "
                            f"{input_name!r}; give one per row")
    return z, labels


def _tensor(tensor: _Tensor, binary: bytes, offset: int, datatype: str, dtype: str, dims: list[int],
            max_batch_size: int) -> tuple[np.ndarray, int]:
    """One input's values (and the offset of the next one's binary data), or a 400."""
    expected, shape = tensor.name, tensor.shape
    if tensor.datatype != datatype:
        raise APIError(400, f"input {expected!r} must have datatype {datatype}; got {tensor.datatype!r}")
    wanted = f"[n, {dims[0]}]" if dims else "[n] (or [n, 1])"
    if (shape[1:] != dims and not (not dims and shape[1:] == [1])) or not shape or shape[0] < 1:
        raise APIError(400, f"input {expected!r} must have shape {wanted} with n >= 1; got {shape}")
    if shape[0] > max_batch_size:
        raise APIError(400, f"input {expected!r} has {shape[0]} rows; at most "
                            f"{max_batch_size} per request")
    count, width = math.prod(shape), np.dtype(dtype).itemsize
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise APIError(400, f"input {expected!r} has both data and binary_data_size")
        if size != count * width or len(binary) - offset < size:
            raise APIError(400, f"input {expected!r}: binary_data_size {size!r} and "
                                f"{len(binary) - offset} bytes of binary data do not match shape "
                                f"{shape} ({count * width} bytes of {datatype})")
        return np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape), offset + size
    if tensor.data is None:
        raise APIError(400, f"input {expected!r} has no data")
    if not _fits_tensor_data(tensor.data):
        raise APIError(400, f"input {expected!r}: data must hold numbers, as a flat list or one "
                            "list per row")
    try:
        data = np.asarray(tensor.data)
    except (ValueError, TypeError):
        raise APIError(400, f"input {expected!r}: data is not a (nested) list of numbers") from None
    if data.dtype == np.bool_ or data.dtype.kind not in ("iu" if dims == [] else "iuf"):
        raise APIError(400, f"input {expected!r}: data must hold {'integers' if not dims else 'numbers'}; "
                            f"got {data.dtype} values")
    if data.size != count:
        raise APIError(400, f"input {expected!r}: data has {data.size} values but shape "
                            f"{shape} needs {count}")
    return data.reshape(shape), offset


def _fits_tensor_data(data: Any) -> bool:
    """Whether ``data`` is a list of numbers or of lists of numbers (``TENSOR_DATA``)."""
    rows = data if isinstance(data, list) and data and isinstance(data[0], list) else [data]
    return all(isinstance(row, list) and all(type(v) in (int, float) for v in row) for row in rows)


def wants_binary(req: InferRequest, output_name: str) -> bool:
    """Whether the (only) output goes back as binary tensor data."""
    default = bool(req.parameters.get("binary_data_output", False))
    if not req.outputs:
        return default
    names = [o.name for o in req.outputs]
    if names != [output_name]:
        raise APIError(400, f"unknown outputs {names}; the model has one output "
                            f"{output_name!r}")
    return bool(req.outputs[0].parameters.get("binary_data", default))


# The answers (documented in the OpenAPI document; the routes build them as dicts).

class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    name: str
    ready: bool


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | None = Field(None, description="the values in row-major order (JSON answer)")
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size: bytes of the tensor after the JSON header (binary answer)")


class InferResponse(BaseModel):
    """The JSON answer of infer, or the JSON header of a binary one."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]
