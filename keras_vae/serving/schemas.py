"""The request bodies of the /v1 routes, made for one served model's sizes.

Their limits (``n`` up to ``max_batch_size``, rows of ``latent_dim`` numbers, images of
the model's shape, integers within JSON's safe range, reals within ±1e6) are in the
OpenAPI schema, so ``/docs`` and schema-driven clients see them; a request that fits the
schema is accepted. The answers' models are here too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from keras_vae.core import contract
from keras_vae.core.anomaly import SAMPLED_SCORES
from keras_vae.serving.labels import label_fields
from keras_vae.serving.openapi import (MAX_SAFE_INTEGER, MODEL_WORK_ERRORS, REAL_LIMIT, integer,
                                       binary_responses, error_responses)
from keras_vae.serving.sampler import Sampler
from keras_vae.serving.scoring import DEFAULT_SCORE_SAMPLES
from keras_vae.serving.scoring import served_threshold

__all__ = ["ImageFormat", "request_models", "encoder_request_models", "ImagesJSON",
           "EncodeResponse", "ScoreResponse", "ROUTE_DOCS"]

ImageFormat = Literal["png", "npy", "json"]
Seed = integer(0, MAX_SAFE_INTEGER)
#: A latent or pixel value: finite, |x| <= REAL_LIMIT (the models compute in float32).
Real = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-REAL_LIMIT, le=REAL_LIMIT)]


def _ncols() -> Any:
    return Field(None, description="images per PNG grid row (default: about the square root of n)")


def request_models(latent_dim: int, max_batch_size: int,
                   class_names: tuple[str, ...] | None = None) -> tuple[type[BaseModel], type[BaseModel]]:
    """The bodies of ``POST /v1/generate`` and ``POST /v1/decode`` for one served model
    (with ``label`` and ``labels`` for a class-conditional one, ``labels.label_fields``)."""
    Labelled = label_fields(class_names, max_batch_size)

    class GenerateRequest(Labelled):
        """Sample ``n`` images, with z drawn from the model's prior, spread scaled by T."""

        model_config = ConfigDict(extra="forbid")
        n: integer(1, max_batch_size) = Field(16, description="number of images")
        seed: Seed | None = Field(None, description="random seed (none: fresh randomness)")
        temperature: float = Field(1.0, ge=0, le=contract.MAX_TEMPERATURE, allow_inf_nan=False,
                                   strict=True,
                                   description="scale T of the latent spread around the prior")
        format: ImageFormat = "png"
        ncols: integer(1, max_batch_size) | None = _ncols()

    Row = Annotated[list[Real], Field(min_length=latent_dim, max_length=latent_dim)]

    class DecodeRequest(Labelled):
        """Decode the given latents ``z`` ``[n, latent_dim]``."""

        model_config = ConfigDict(extra="forbid")
        z: list[Row] = Field(min_length=1, max_length=max_batch_size,
                             description=f"1 to {max_batch_size} rows of {latent_dim} numbers")
        format: ImageFormat = "json"
        ncols: integer(1, max_batch_size) | None = _ncols()

    return GenerateRequest, DecodeRequest


def score_samples_range(decoder: Sampler, max_score_samples: int) -> tuple[int, int]:
    """The importance samples K that ``/v1/score`` accepts: 1 to ``max_score_samples``, or only
    the K of the decoder's anomaly threshold when it holds one on a sampled score
    (``keras_vae.serving.scoring``), since it holds at that K only."""
    try:
        threshold = served_threshold(decoder)
    except ValueError:  # a malformed threshold: scoring reports it
        threshold = None
    if threshold is not None and threshold.score in SAMPLED_SCORES and threshold.num_samples:
        return threshold.num_samples, threshold.num_samples
    return 1, max_score_samples


def encoder_request_models(image_shape: tuple[int, int, int], max_batch_size: int,
                           max_score_samples: int, unit_interval: bool,
                           class_names: tuple[str, ...] | None = None,
                           score_samples: tuple[int, int] | None = None) -> tuple[type[BaseModel], ...]:
    """The bodies of ``POST /v1/encode``, ``/v1/reconstruct`` and ``/v1/score`` for one model
    (with the images' ``labels`` for a class-conditional one); ``score_samples``: the range of K
    (``score_samples_range``, default 1 to ``max_score_samples``)."""
    Labelled = label_fields(class_names, max_batch_size, required=True)
    PerImageLabels = label_fields(class_names, max_batch_size, required=True, per_image=True)
    h, w, c = image_shape
    pixel = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0, le=1.0)] if (
        unit_interval) else Real
    images_field = Field(min_length=1, max_length=max_batch_size,
                         description=f"1 to {max_batch_size} images, each [{h}][{w}][{c}] nested lists"
                                     + (" of pixel values in [0, 1]" if unit_interval else ""))
    Images = list[Annotated[list[Annotated[list[Annotated[list[pixel], Field(min_length=c, max_length=c)]],
                                           Field(min_length=w, max_length=w)]],
                            Field(min_length=h, max_length=h)]]

    class EncodeRequest(Labelled):
        """Parameters of q(z|x) for each image."""

        model_config = ConfigDict(extra="forbid")
        images: Images = images_field

    class ReconstructRequest(Labelled):
        """Decode the posterior mean of each image."""

        model_config = ConfigDict(extra="forbid")
        images: Images = images_field
        format: ImageFormat = "json"
        ncols: integer(1, max_batch_size) | None = _ncols()

    class ScoreRequest(PerImageLabels):
        """Importance-sampled log p(x) of each image, from the encoder and the decoder."""

        model_config = ConfigDict(extra="forbid")
        images: Images = images_field
        num_samples: integer(*(score_samples or (1, max_score_samples))) | None = Field(
            None,
            description="importance samples K per image (default: the K of the decoder's "
                        f"anomaly threshold, else {min(DEFAULT_SCORE_SAMPLES, max_score_samples)})")
        seed: Seed = Field(0, description="seed of the importance samples' noise")

    return EncodeRequest, ReconstructRequest, ScoreRequest


class ImagesJSON(BaseModel):
    """Images as JSON (``format: json``): pixel means, float32 values."""

    shape: list[int] = Field(min_length=4, max_length=4, description="[n, H, W, C]")
    images: list[list[list[list[float]]]] = Field(description="n images, each [H][W][C] nested lists")


class EncodeResponse(BaseModel):
    """q(z|x) = N(z_mean, exp(z_log_var)) of each image: ``[n, latent_dim]`` each."""

    z_mean: list[list[float]]
    z_log_var: list[list[float]]


class ScoreResponse(BaseModel):
    """Importance-sampled log p(x) of each image, in nats; the images' order kept.

    ``nll`` (= −log p(x)) and ``bits_per_dim`` when ``measure`` is ``"nll"``; ``cross_entropy``
    in their place for grey images under a Bernoulli decoder, whose number is not a likelihood.
    """

    measure: Literal["nll", "cross_entropy"]
    num_samples: int = Field(description="importance samples K per image")
    seed: int
    log_px: list[float] = Field(description="log p(x) per image, nats")
    nll: list[float] | None = Field(None, description="−log p(x) per image, nats")
    cross_entropy: list[float] | None = Field(None, description="per image, nats")
    bits_per_dim: list[float] | None = Field(None, description="nll / (pixels · ln 2) per image")
    elbo: list[float] | None = Field(None, description="the K-sample ELBO per image, nats")
    recon_mse: list[float] | None = Field(
        None, description="per image: mean squared error per pixel of the reconstruction "
                          "from the posterior mean")
    anomalous: list[bool] | None = Field(
        None, description="per image, when the served decoder holds an anomaly threshold")
    anomaly_threshold: dict[str, Any] | None = Field(
        None, description="the threshold that decided `anomalous`: score, value, num_samples, fpr, "
                          "achieved_fpr, data, count, seed (keras_vae.core.anomaly.AnomalyThreshold)")


def _json_route(model: type[BaseModel]) -> dict[str, Any]:
    # response_model=None: the handler's dict goes out as it is; the model documents it.
    return {"response_model": None,
            "responses": {200: {"model": model}, **error_responses(*MODEL_WORK_ERRORS)}}


_IMAGES_ROUTE = {"response_class": Response, "responses": {
    **binary_responses("The images: a PNG grid (`format: png`), float32 `[n, H, W, C]` `.npy` "
                       "bytes (`npy`) or JSON (`json`)", "image/png", "application/octet-stream",
                       model=ImagesJSON),
    **error_responses(*MODEL_WORK_ERRORS)}}

#: The keywords of each /v1 route's registration that document its answers.
ROUTE_DOCS: dict[str, dict[str, Any]] = {
    "/metrics": {"response_class": PlainTextResponse,
                 "description": "Prometheus text exposition format."},
    "/v1/generate": _IMAGES_ROUTE,
    "/v1/decode": _IMAGES_ROUTE,
    "/v1/reconstruct": _IMAGES_ROUTE,
    "/v1/encode": _json_route(EncodeResponse),
    "/v1/score": _json_route(ScoreResponse),
}
