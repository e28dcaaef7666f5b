"""``create_app``: the FastAPI app that serves one exported decoder (and, optionally, its encoder).

Endpoints, one router each (``keras_vae.serving.routes``, ``keras_vae.serving.explorer``):

* ``GET /healthz``, ``GET /v1/model``, ``GET /metrics`` (Prometheus text),
* ``POST /v1/generate`` ``{"n", "seed", "temperature", "format", "ncols", "sampler"}`` ->
  a PNG grid, a ``.npy`` float32 ``[n, H, W, C]`` array, or JSON (``sampler``: the model's
  prior, or a prior fitted after training, ``prior.onnx``: ``keras_vae.serving.fitted``),
* ``POST /v1/decode`` ``{"z": [[...], ...], "format"}`` -> the same formats,
* with an encoder: ``POST /v1/encode`` (q(z|x) of images), ``POST /v1/reconstruct``
  and ``POST /v1/score`` (importance-sampled log p(x) in nats, from the two ONNX files),
* ``GET /models/decoder.onnx`` (and ``/models/encoder.onnx``): the served files,
* ``GET /``: the latent-space explorer, and the API docs at ``/docs`` and ``/redoc``,
  with every asset served locally,
* the Open Inference Protocol (KServe v2 / Triton) under ``/v2``.

All errors are JSON ``{"error": "..."}`` with a 4xx status, or 503 with ``Retry-After``
when a work queue is full (``keras_vae.serving.admission``). Decode work from
concurrent requests is merged by ``MicroBatcher``
unless micro-batching is switched off, in which case every request runs
``Sampler.decode`` in a worker thread of its own. A host may also hand the decode
work to its own batching (``create_app(..., decode_fn=...)``), as the Ray Serve
deployment in ``keras_vae.serving.ray_app`` does with ``@serve.batch``.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

from keras_vae.serving import explorer, fitted, hierarchical
from keras_vae.serving.admission import Admission, AdmissionMiddleware, install_overload_handler
from keras_vae.serving.batching import MicroBatcher
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.errors import install_error_handlers
from keras_vae.serving.limits import BodyLimitMiddleware
from keras_vae.serving.metrics import Metrics, MetricsMiddleware
from keras_vae.serving.options import ServingOptions
from keras_vae.serving.routes.kserve import kserve_router
from keras_vae.serving.routes.model_files import model_files_router
from keras_vae.serving.routes.v1 import encoder_router, v1_router
from keras_vae.serving.sampler import Sampler
from keras_vae.serving.schemas import score_samples_range
from keras_vae.serving.scoring import check_threshold_servable
from keras_vae.serving.state import DecodeFn, ServingState, version

__all__ = ["create_app"]

_DEFAULTS = ServingOptions.model_fields


def create_app(
    model: str | os.PathLike | Sampler,
    model_name: str = _DEFAULTS["model_name"].default,
    max_batch_size: int = _DEFAULTS["max_batch_size"].default,
    max_body_bytes: int = _DEFAULTS["max_body_bytes"].default,
    batch_wait_ms: float = _DEFAULTS["batch_wait_ms"].default,
    micro_batching: bool = True,
    provider: str = _DEFAULTS["provider"].default,
    intra_op_threads: int | None = None,
    decode_fn: DecodeFn | None = None,
    encoder: str | os.PathLike | Encoder | None = None,
    max_score_samples: int = _DEFAULTS["max_score_samples"].default,
    max_queue_ms: float = _DEFAULTS["max_queue_ms"].default,
    score_concurrency: int = _DEFAULTS["score_concurrency"].default,
    prior: str | os.PathLike | fitted.FittedPriorModel | None = None,
) -> FastAPI:
    """Build the FastAPI app serving one decoder.

    The keywords are the options of ``ServingOptions``,
    with the same names and defaults.

    Args:
        model: a ``Sampler``, or the path of ``decoder.onnx`` to load
            (with ``provider`` and ``intra_op_threads``).
        model_name: the model's name in ``/v2/models/{name}``.
        max_batch_size: most images per request, and most rows per onnxruntime
            call made by the micro-batcher.
        max_body_bytes: largest accepted request body, in bytes.
        batch_wait_ms: how long the micro-batcher waits to fill a batch.
        micro_batching: merge concurrent decode work (True) or run every
            request on its own (False).
        encoder: an ``Encoder``, or the path of ``encoder.onnx``: adds
            ``/v1/encode``, ``/v1/reconstruct`` and ``/v1/score``.
        max_score_samples: most importance samples per image in ``/v1/score``.
        max_queue_ms: bound of each work class's queue, in expected milliseconds
            (``inf``: none); beyond it requests get 503 with ``Retry-After``.
        score_concurrency: threads for score, encode and reconstruct work.
        prior: a ``FittedPriorModel``, or the path of a fitted prior's ``prior.onnx`` (default:
            ``prior.onnx`` beside the decoder, when there is one): ``/v1/generate``'s
            ``sampler: "fitted"`` and the KServe model ``{model_name}_prior``.
        decode_fn: an async function that takes over all decode work: it gets
            validated float32 ``z`` ``[n, latent_dim]`` (n <= ``max_batch_size``)
            and returns float32 ``[n, H, W, C]``. It replaces the built-in
            micro-batcher (``micro_batching`` is then ignored) and should
            report its onnxruntime calls with
            ``app.state.serving.metrics.observe_batch(rows, requests)``.

    The micro-batcher starts and stops with the app's lifespan, so use the
    app under a server (uvicorn) or ``with TestClient(app)``.
    """
    for name, value in (("max_batch_size", max_batch_size), ("max_body_bytes", max_body_bytes),
                        ("max_score_samples", max_score_samples),
                        ("score_concurrency", score_concurrency)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    if not max_queue_ms >= 0:
        raise ValueError(f"max_queue_ms must be >= 0; got {max_queue_ms}")
    sampler = model if isinstance(model, Sampler) else Sampler(
        model, provider=provider, intra_op_threads=intra_op_threads)
    if encoder is not None and not isinstance(encoder, Encoder):
        encoder = Encoder(encoder, provider=provider, intra_op_threads=intra_op_threads)
    if encoder is not None:
        encoder.check_pairs_with(sampler)
        check_threshold_servable(sampler, max_score_samples)
    log_weight = hierarchical.attach(sampler, encoder, provider, intra_op_threads)
    if not isinstance(prior, fitted.FittedPriorModel):
        prior = fitted.find_prior(sampler, prior, provider, intra_op_threads)
    else:
        prior.check_pairs_with(sampler)
    metrics = Metrics()
    admission = Admission(max_queue_ms, score_concurrency, metrics)
    batcher = MicroBatcher(admission.timed("decode", sampler.decode_rows), max_batch=max_batch_size, wait_ms=batch_wait_ms,
                           on_batch=metrics.observe_batch) if (
        micro_batching and decode_fn is None) else None
    state = ServingState(sampler, model_name, max_batch_size, metrics, batcher, decode_fn=decode_fn,
                         encoder=encoder, max_score_samples=max_score_samples,
                         admission=admission, log_weight=log_weight, prior=prior)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(admission.warm_up, sampler, encoder, max_batch_size)
        if batcher is not None:
            await batcher.start()
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            if batcher is not None:
                await batcher.stop()
            admission.close()

    app = FastAPI(
        title="keras-vae decoder server",
        version=version(),
        description="Sample and decode images with an exported VAE decoder.",
        lifespan=lifespan,
        docs_url=None,  # self-hosted by the explorer's docs router: no CDN
        redoc_url=None,
    )
    app.state.serving = state
    install_error_handlers(app)
    install_overload_handler(app, metrics)
    app.include_router(v1_router(sampler.latent_dim, max_batch_size, sampler.class_names,
                                 groups=sampler.groups, fitted_prior=prior is not None))
    if encoder is not None:
        app.include_router(encoder_router(encoder.image_shape, max_batch_size, max_score_samples,
                                          unit_interval=sampler.likelihood == "bernoulli",
                                          class_names=sampler.class_names,
                                          score_samples=score_samples_range(sampler, max_score_samples)))
    app.include_router(model_files_router(with_encoder=encoder is not None,
                                          with_log_weight=log_weight is not None,
                                          with_prior=prior is not None))
    app.include_router(kserve_router())
    explorer.add_explorer_routes(app)  # the page at /, /docs and /redoc, all served locally
    # The last middleware added runs first: metrics see every request,
    # including those refused for their size; a full work queue refuses before parsing.
    app.add_middleware(AdmissionMiddleware, admission=admission)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
