"""HTTP error handling: every error response is JSON ``{"error": "<message>"}``.

That is also the error shape of the Open Inference Protocol (KServe v2), so
one set of handlers serves both APIs. Status codes used:

* 400 malformed JSON or (KServe) invalid inference request,
* 404 unknown route or model, 405 wrong method,
* 413 request body too large, 415 unsupported content type or encoding,
* 422 well-formed JSON that fails validation (/v1 endpoints),
* 503 shutting down; 500 only for bugs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["APIError", "error_response", "describe_validation_errors", "install_error_handlers"]


class APIError(Exception):
    """An error to report to the client with a given HTTP status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def error_response(status_code: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def describe_validation_errors(errors: Iterable[dict[str, Any]]) -> str:
    """Turn pydantic error dicts into one readable line, e.g. ``"n: Input should be..."``."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) if loc else "body"
        parts.append(f"{where}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


def is_json_content_type(value: str | None) -> bool:
    """True for ``application/json`` and ``application/*+json`` (parameters ignored)."""
    if not value:
        return False
    mime = value.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status_code, exc.message)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "invalid JSON")
        return error_response(400, f"malformed JSON body: {reason}")
    body_sent = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in (
        request.headers
    )
    content_type = request.headers.get("content-type")
    if request.method == "POST" and body_sent and not is_json_content_type(content_type):
        return error_response(
            415, f"expected Content-Type: application/json; got {content_type or 'none'}"
        )
    return error_response(422, describe_validation_errors(errors))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response of ``app`` the JSON ``{"error": ...}`` shape."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
