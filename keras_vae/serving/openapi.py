"""What the OpenAPI document says about answers: the ``Error`` body, each status code's meaning,
the media types of binary answers, and the bounds that every number in a request keeps to.

The routers pass these to FastAPI (``responses=``, ``response_class=``, ``openapi_extra=``),
so ``/openapi.json`` lists every status and content type the server answers with:

* every 4xx, and 503, is ``Error`` (``{"error": "<message>"}``) in place of FastAPI's
  ``HTTPValidationError``;
* routes that answer in several formats list the binary media types first, then
  ``application/json``, so that a generated client that reads the first media type it knows
  (``openapi-python-client``) returns the raw bytes of any answer rather than failing to
  parse a PNG as JSON;
* integers stay within JSON's safe range, ``|n| <= 2**53 - 1``, which JavaScript and other
  clients that read every JSON number as a double hold exactly; real numbers (latents,
  pixels) stay within ``±REAL_LIMIT``, so that the models' float32 arithmetic stays finite.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

__all__ = ["Error", "integer", "MAX_SAFE_INTEGER", "REAL_LIMIT", "BINARY", "error_responses",
           "binary_responses", "path_parameters", "BODY_ERRORS", "MODEL_WORK_ERRORS"]

#: The largest integer that every JSON reader holds exactly (``Number.MAX_SAFE_INTEGER``).
MAX_SAFE_INTEGER = 2**53 - 1
#: The largest magnitude of a latent or pixel value in a request. The models compute in
#: float32, whose arithmetic overflows to inf and NaN for inputs near its largest value
#: (3.4e38); a million is a million standard deviations of the prior, and far from overflow.
REAL_LIMIT = 1e6



def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integer(ge: int = -MAX_SAFE_INTEGER, le: int = MAX_SAFE_INTEGER) -> Any:
    """An integer in ``[ge, le]`` as JSON Schema means it: ``3`` and ``3.0`` alike (JSON does not
    tell them apart, and many encoders write every number with a point), never ``true`` or ``"3"``.
    """
    # The bounds before the validator, so that pydantic checks them and writes them as
    # minimum and maximum, also inside ``integer(...) | None``.
    return Annotated[StrictInt, Field(ge=ge, le=le), BeforeValidator(_integral)]

#: The schema of a binary answer (a PNG, ``.npy`` or ONNX file).
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


class Error(BaseModel):
    """The body of every 4xx and 503 answer (also the Open Inference Protocol's error shape)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": "n: Input should be less than or equal to 256"}]})
    error: str = Field(min_length=1, description="what was wrong with the request, in one line")


_MEANING = {
    400: "Malformed JSON (or, for the Open Inference Protocol, a request that does not fit the "
         "model: a tensor's name, datatype, shape or data count)",
    404: "Unknown model or version",
    413: "The request body is larger than the server's limit (`--max-body-bytes`)",
    415: "The body is not JSON (`Content-Type`), or is compressed (`Content-Encoding`)",
    422: "Well-formed JSON that does not fit the request schema; the message names the field",
    503: "The work queue of this kind of request is full (retry after `Retry-After` seconds), "
         "or the server is shutting down",
}

_RETRY_AFTER = {"Retry-After": {
    "description": "Seconds to wait before retrying; sent when the work queue is full",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SAFE_INTEGER}}}

#: What a POST with a JSON body can be refused with: malformed, too large, not JSON, invalid.
BODY_ERRORS = (400, 413, 415, 422)
#: ``BODY_ERRORS`` and 503, for the routes that queue model work (admission control).
MODEL_WORK_ERRORS = (*BODY_ERRORS, 503)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for ``codes``: each an ``Error`` body; 503 with ``Retry-After``."""
    return {code: {"model": Error, "description": _MEANING[code],
                   **({"headers": _RETRY_AFTER} if code == 503 else {})} for code in codes}


def binary_responses(description: str, *media_types: str,
                     model: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """A 200 answer in ``media_types`` (binary), and ``model`` as ``application/json`` if given.

    For a route with ``response_class=Response``, whose own media type is none, so that the
    binary types come first in the document.
    """
    answer: dict[str, Any] = {"description": description,
                              "content": {media_type: {"schema": BINARY} for media_type in media_types}}
    if model is not None:
        answer["model"] = model
    return {200: answer}


def path_parameters(**descriptions: str) -> dict[str, Any]:
    """``openapi_extra`` declaring string path parameters that a route reads from the request.

    The Open Inference Protocol's routes read ``{name}`` and ``{version}`` from
    ``request.path_params`` (any string: an unknown one is a 404, never a 422), so FastAPI
    would not list them; this lists them, required, as OpenAPI requires of path parameters.
    """
    return {"parameters": [{"name": name, "in": "path", "required": True,
                            "description": description, "schema": {"type": "string"}}
                           for name, description in descriptions.items()]}
