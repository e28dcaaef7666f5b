"""What the request handlers share: the models, limits, metrics and decode path of one app.

``create_app <keras_vae.serving.app.create_app>`` builds one ``ServingState``
and keeps it in ``app.state.serving``; every router reads it through
``Depends(get_state)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
from fastapi import Request

from keras_vae.serving.admission import Admission
from keras_vae.serving.batching import MicroBatcher, ShuttingDown
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.errors import APIError
from keras_vae.serving.metrics import Metrics
from keras_vae.serving.sampler import Sampler

__all__ = ["ServingState", "DecodeFn", "get_state", "version"]

#: ``async (z float32 [n, latent_dim], already validated) -> float32 [n, H, W, C]``
DecodeFn = Callable[[np.ndarray], Awaitable[np.ndarray]]


def version() -> str:
    """The installed keras-vae version, or ``"0+unknown"`` when not installed."""
    try:
        return importlib_metadata.version("keras-vae")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class ServingState:
    """The served decoder (and encoder), the request limits, the metrics and the batcher.

    Attributes:
        sampler: the decoder.
        model_name: the model's name under ``/v2/models/``.
        max_batch_size: most images (latent rows) per request and per onnxruntime call.
        metrics: the Prometheus metrics of this app.
        batcher: the built-in micro-batcher, or None (switched off, or ``decode_fn`` set).
        ready: True between the app's start-up and shut-down.
        decode_fn: a host's own batching of decode work (Ray Serve's ``@serve.batch``).
        encoder: the encoder, when one is served.
        max_score_samples: most importance samples per image in ``/v1/score``.
        admission: the bounded work queues (``keras_vae.serving.admission``).
        log_weight: a hierarchical model's ``log_weight.onnx`` (``keras_vae.serving.hierarchical``),
            which ``/v1/score`` needs; None otherwise.
        prior: the prior fitted after training (``keras_vae.serving.fitted``), which
            ``/v1/generate`` draws from with ``sampler: "fitted"``; None without one.
    """

    sampler: Sampler
    model_name: str
    max_batch_size: int
    metrics: Metrics
    batcher: MicroBatcher | None
    ready: bool = False
    decode_fn: DecodeFn | None = None
    encoder: Encoder | None = None
    max_score_samples: int = 1000
    admission: Admission | None = None
    log_weight: Any = None
    prior: Any = None

    @property
    def micro_batching(self) -> bool:
        """True when concurrent decode work is merged (built-in or external batching)."""
        return self.batcher is not None or self.decode_fn is not None

    async def decode(self, z: Any, labels: Any = None) -> np.ndarray:
        """Validate ``z`` ``[n, latent_dim]`` (and a conditional decoder's ``labels``, see
        ``Sampler.validate_labels``) and decode it to float32 ``[n, H, W, C]``.

        Raises ``ValueError`` for invalid ``z`` (before any queueing, so one
        bad request never spoils a batch), ``Overloaded`` (503) when the sample
        queue is full, and a 503 while shutting down. Also ``ValueError`` when the
        decoder's output is not finite (latents so large that its float32 arithmetic
        overflows), which no answer format but ``.npy`` could carry.
        """
        z = self.sampler.rows(self.sampler.validate_latents(z), labels)
        async with self.admission.admit("sample", "decode", len(z)):
            x = await self._decode(z)
        if not np.isfinite(x).all():
            raise ValueError("the decoder's output is not finite (NaN or inf) for these latents: "
                             "they are too large for this model's float32 arithmetic")
        return x

    async def _decode(self, z: np.ndarray) -> np.ndarray:
        if self.decode_fn is not None:
            return await self.decode_fn(z)
        if self.batcher is not None and self.batcher.running:
            try:
                return await self.batcher.decode(z)
            except ShuttingDown as exc:
                raise APIError(503, str(exc)) from None
        x = await asyncio.to_thread(self.admission.timed("decode", self.sampler.decode_rows), z)
        self.metrics.observe_batch(len(z), 1)
        return x


def get_state(request: Request) -> ServingState:
    """The app's ``ServingState``, for ``Depends(get_state)``."""
    return request.app.state.serving
