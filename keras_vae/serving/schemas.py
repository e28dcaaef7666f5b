"""The request bodies of the /v1 routes, made for one served model's sizes.

Their limits (``n`` up to ``max_batch_size``, rows of ``latent_dim`` numbers, images of
the model's shape) are in the OpenAPI schema, so ``/docs`` and schema-driven clients
see them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from keras_vae.core import contract

__all__ = ["ImageFormat", "request_models", "encoder_request_models"]

ImageFormat = Literal["png", "npy", "json"]
Ncols = Annotated[StrictInt | None, Field(ge=1, description="images per PNG grid row")]


def request_models(latent_dim: int, max_batch_size: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """The bodies of ``POST /v1/generate`` and ``POST /v1/decode`` for one served model."""

    class GenerateRequest(BaseModel):
        """Sample ``n`` images, with z drawn from the model's prior, spread scaled by T."""

        model_config = ConfigDict(extra="forbid")
        n: StrictInt = Field(16, ge=1, le=max_batch_size, description="number of images")
        seed: StrictInt | None = Field(None, ge=0, lt=2**64, description="random seed")
        temperature: float = Field(1.0, ge=0, le=contract.MAX_TEMPERATURE, allow_inf_nan=False,
                                   strict=True,
                                   description="scale T of the latent spread around the prior")
        format: ImageFormat = "png"
        ncols: Ncols = None

    Row = Annotated[list[Annotated[float, Field(strict=True)]],
                    Field(min_length=latent_dim, max_length=latent_dim)]

    class DecodeRequest(BaseModel):
        """Decode the given latents ``z`` ``[n, latent_dim]``."""

        model_config = ConfigDict(extra="forbid")
        z: list[Row] = Field(min_length=1, max_length=max_batch_size,
                             description=f"1 to {max_batch_size} rows of {latent_dim} numbers")
        format: ImageFormat = "json"
        ncols: Ncols = None

    return GenerateRequest, DecodeRequest


def encoder_request_models(image_shape: tuple[int, int, int], max_batch_size: int,
                           max_score_samples: int,
                           unit_interval: bool) -> tuple[type[BaseModel], ...]:
    """The bodies of ``POST /v1/encode``, ``/v1/reconstruct`` and ``/v1/score`` for one model."""
    h, w, c = image_shape
    bounds = {"ge": 0.0, "le": 1.0} if unit_interval else {}
    pixel = Annotated[float, Field(strict=True, **bounds)]
    images_field = Field(min_length=1, max_length=max_batch_size,
                         description=f"1 to {max_batch_size} images, each [{h}][{w}][{c}] nested lists"
                                     + (" of pixel values in [0, 1]" if unit_interval else ""))
    Images = list[Annotated[list[Annotated[list[Annotated[list[pixel], Field(min_length=c, max_length=c)]],
                                           Field(min_length=w, max_length=w)]],
                            Field(min_length=h, max_length=h)]]

    class EncodeRequest(BaseModel):
        """Parameters of q(z|x) for each image."""

        model_config = ConfigDict(extra="forbid")
        images: Images = images_field

    class ReconstructRequest(BaseModel):
        """Decode the posterior mean of each image."""

        model_config = ConfigDict(extra="forbid")
        images: Images = images_field
        format: ImageFormat = "json"
        ncols: Ncols = None

    class ScoreRequest(BaseModel):
        """Importance-sampled log p(x) of each image, from the encoder and the decoder."""

        model_config = ConfigDict(extra="forbid")
        images: Images = images_field
        num_samples: StrictInt | None = Field(
            None, ge=1, le=max_score_samples,
            description="importance samples K per image (default: the K of the decoder's "
                        "anomaly threshold, else 100)")
        seed: StrictInt = Field(0, ge=0, lt=2**63, description="noise seed")

    return EncodeRequest, ReconstructRequest, ScoreRequest
