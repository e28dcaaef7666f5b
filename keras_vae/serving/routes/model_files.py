"""The served ONNX files, byte for byte, under stable URLs (for browsers and mirrors)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, Response

from keras_vae.serving.openapi import binary_responses
from keras_vae.serving.state import ServingState, get_state

__all__ = ["model_files_router"]

State = Annotated[ServingState, Depends(get_state)]


def model_files_router(with_encoder: bool, with_log_weight: bool = False,
                       with_prior: bool = False) -> APIRouter:
    """``GET /models/decoder.onnx``, and ``/models/encoder.onnx`` when an encoder is served
    (``/models/log_weight.onnx``: a hierarchical model's log-weight graph, when served;
    ``/models/prior.onnx``: a prior fitted after training, when served)."""
    router = APIRouter(tags=["models"], default_response_class=Response,
                       responses=binary_responses("The ONNX file, byte for byte",
                                                  "application/octet-stream"))

    @router.get("/models/decoder.onnx", summary="The served decoder.onnx")
    async def decoder_file(state: State) -> Response:
        return _send(state.sampler.model_path)

    if with_encoder:
        @router.get("/models/encoder.onnx", summary="The served encoder.onnx")
        async def encoder_file(state: State) -> Response:
            return _send(state.encoder.model_path)

    if with_log_weight:
        @router.get("/models/log_weight.onnx", summary="The served log_weight.onnx (hierarchical models)")
        async def log_weight_file(state: State) -> Response:
            return _send(state.log_weight.model_path)

    if with_prior:
        @router.get("/models/prior.onnx", summary="The served prior.onnx (a prior fitted after training)")
        async def prior_file(state: State) -> Response:
            return _send(state.prior.model_path)

    return router


def _send(path) -> Response:
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)
