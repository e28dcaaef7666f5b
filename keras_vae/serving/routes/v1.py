"""``/healthz``, ``/metrics`` and the ``/v1`` JSON API: generate, decode, and with an encoder
encode, reconstruct and score.

Images come back as a PNG grid, a ``.npy`` float32 ``[n, H, W, C]`` array, or JSON.
"""

from __future__ import annotations

import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from keras_vae.core.images import encode_png, image_grid
from keras_vae.core.likelihood import is_likelihood
from keras_vae.serving import fitted, hierarchical
from keras_vae.serving.batching import encode_off_loop
from keras_vae.serving.errors import APIError
from keras_vae.serving.labels import fill_labels
from keras_vae.serving.schemas import ROUTE_DOCS, encoder_request_models, request_models
from keras_vae.serving.scoring import onnx_scores, resolve_score_request, threshold_summary
from keras_vae.serving.state import ServingState, get_state

__all__ = ["v1_router", "encoder_router"]

State = Annotated[ServingState, Depends(get_state)]


def render_images(x: np.ndarray, fmt: str, ncols: int | None) -> Response:
    """Encode float32 images ``[n, H, W, C]`` as a PNG grid, ``.npy`` bytes or JSON."""
    if fmt == "png":
        return Response(encode_png(image_grid(x, ncols=ncols)), media_type="image/png")
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, np.asarray(x, dtype=np.float32), allow_pickle=False)
        return Response(buf.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="images.npy"'})
    return JSONResponse({"shape": list(x.shape), "images": x.tolist()})


async def images_response(state: ServingState, x: np.ndarray, fmt: str,
                          ncols: int | None) -> Response:
    """Counts the decoded images ``[n, H, W, C]`` and renders them (off the event loop when large)."""
    state.metrics.images.inc(len(x))
    return await encode_off_loop(x.size, render_images, x, fmt, ncols)


def _scores(state: ServingState, images: list, num_samples: int, seed: int, labels=None):
    """(images float32 [N, H, W, C], their ``ImageScores``); blocking, run in the score threads."""
    images = state.encoder.validate_images(images)
    if state.sampler.groups is not None:  # a hierarchical model: its log-weight graph scores
        return images, hierarchical.served_scores(state, images, num_samples, seed)
    return images, onnx_scores(state.encoder, state.sampler, images, num_samples, 100, seed,
                               labels=labels)


def _labels(state: ServingState, body, n: int, per_image: bool = False):
    """The body's labels for n rows (a class-conditional model's; None otherwise); see ``fill_labels``."""
    return fill_labels(state.sampler.class_names, getattr(body, "label", None),
                       getattr(body, "labels", None), n, per_image)


def v1_router(latent_dim: int, max_batch_size: int, class_names: tuple[str, ...] | None = None,
              groups=None, fitted_prior: bool = False) -> APIRouter:
    """Health, metrics, model information, ``/v1/generate`` and ``/v1/decode`` (with per-group
    ``temperatures`` for a hierarchical model's latent ``groups``, and ``sampler``, which takes
    ``"fitted"`` when a ``fitted_prior`` is served)."""
    GenerateRequest, DecodeRequest = request_models(latent_dim, max_batch_size, class_names)
    if groups is not None:
        GenerateRequest = hierarchical.with_group_temperatures(GenerateRequest, groups)
    if class_names is None:  # a fitted prior is for unconditional models
        GenerateRequest = fitted.with_sampler(GenerateRequest, fitted_prior)
    router = APIRouter()

    @router.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/v1/model", tags=["v1"])
    async def model_info(state: State) -> dict:
        info = {"model_name": state.model_name, **state.sampler.describe(),
                **hierarchical.describe(state.sampler)}
        info["max_batch"] = state.max_batch_size
        info["micro_batching"] = state.micro_batching
        info["encoder"] = None if state.encoder is None else {
            "path": state.encoder.model_path.name, "provider": state.encoder.provider,
            "max_score_samples": state.max_score_samples,
            "anomaly_threshold": threshold_summary(state.sampler)}
        if state.sampler.groups is not None:
            info["log_weight"] = None if state.log_weight is None else {
                "path": state.log_weight.model_path.name, "provider": state.log_weight.provider}
        info["fitted_prior"] = None if state.prior is None else state.prior.describe()
        return info

    @router.get("/metrics", tags=["health"], **ROUTE_DOCS["/metrics"])
    async def metrics(state: State) -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    async def generate(body, state: State) -> Response:
        try:
            z = await fitted.served_latents(state, body)
            x = await state.decode(z, _labels(state, body, body.n))
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        return await images_response(state, x, body.format, body.ncols)

    async def decode(body, state: State) -> Response:
        try:
            x = await state.decode(body.z, _labels(state, body, len(body.z)))
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        return await images_response(state, x, body.format, body.ncols)

    # The body models are made for this model's sizes, so they are set here, not in the
    # (string, postponed) annotations that FastAPI would look up among the module's names.
    generate.__annotations__["body"] = GenerateRequest
    decode.__annotations__["body"] = DecodeRequest
    router.post("/v1/generate", tags=["v1"], **ROUTE_DOCS["/v1/generate"])(generate)
    router.post("/v1/decode", tags=["v1"], **ROUTE_DOCS["/v1/decode"])(decode)
    return router


def encoder_router(image_shape: tuple[int, int, int], max_batch_size: int, max_score_samples: int,
                   unit_interval: bool, class_names: tuple[str, ...] | None = None,
                   score_samples: tuple[int, int] | None = None) -> APIRouter:
    """``/v1/encode``, ``/v1/reconstruct`` and ``/v1/score``, for an app that serves an encoder."""
    EncodeRequest, ReconstructRequest, ScoreRequest = encoder_request_models(
        image_shape, max_batch_size, max_score_samples, unit_interval=unit_interval,
        class_names=class_names, score_samples=score_samples)
    router = APIRouter(tags=["v1"])

    async def encode(body, state: State) -> dict:
        try:
            z_mean, z_log_var = await state.admission.run_scoring(
                "encode", len(body.images), state.encoder.encode, body.images,
                _labels(state, body, len(body.images)))
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        return {"z_mean": z_mean.tolist(), "z_log_var": z_log_var.tolist()}

    async def reconstruct(body, state: State) -> Response:
        try:
            labels = _labels(state, body, len(body.images))
            z_mean, _ = await state.admission.run_scoring(
                "encode", len(body.images), state.encoder.encode, body.images, labels)
            x = await state.decode(z_mean, labels)
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        return await images_response(state, x, body.format, body.ncols)

    async def score(body, state: State) -> dict:
        """log p(x) and the ELBO in nats per image (NLL = −log p(x)), bits per dimension, the
        reconstruction error, and ``anomalous`` when the decoder holds an anomaly threshold.

        For grey images under a Bernoulli decoder the same number is a
        cross-entropy, not a log-likelihood; ``measure`` says which.
        """
        try:
            threshold, num_samples = resolve_score_request(state.sampler, body.num_samples,
                                                           state.max_score_samples)
            images, scores = await state.admission.run_scoring(
                "score", len(body.images) * num_samples, _scores, state, body.images,
                num_samples, body.seed, _labels(state, body, len(body.images), per_image=True))
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        log_px = scores.log_px
        measure = "nll" if is_likelihood(state.sampler.likelihood, images) else "cross_entropy"
        result = {"measure": measure, "num_samples": num_samples, "seed": body.seed,
                  "log_px": log_px.tolist(), measure: (-log_px).tolist(),
                  "elbo": scores.elbo.tolist(), "recon_mse": scores.recon.tolist()}
        if threshold is not None:
            result["anomalous"] = threshold.is_anomalous(scores).tolist()
            result["anomaly_threshold"] = threshold_summary(state.sampler)
        if measure == "nll":
            result["bits_per_dim"] = (-log_px / (images[0].size * np.log(2.0))).tolist()
        return result

    for function, model in ((encode, EncodeRequest), (reconstruct, ReconstructRequest),
                            (score, ScoreRequest)):
        function.__annotations__["body"] = model
    router.post("/v1/encode", **ROUTE_DOCS["/v1/encode"])(encode)
    router.post("/v1/reconstruct", **ROUTE_DOCS["/v1/reconstruct"])(reconstruct)
    router.post("/v1/score", **ROUTE_DOCS["/v1/score"])(score)
    return router
