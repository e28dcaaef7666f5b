"""HTTP server for an exported VAE decoder (FastAPI + uvicorn).

Run ``python -m keras_vae.serving.server decoder.onnx --host 127.0.0.1 --port 8000``
(``--help`` lists the options). Endpoints:

* ``GET  /healthz``, ``GET /v1/model``, ``GET /metrics`` (Prometheus text),
* ``POST /v1/generate`` ``{"n", "seed", "temperature", "format", "ncols"}`` ->
  a PNG grid, a ``.npy`` float32 ``[n, H, W, C]`` array, or JSON,
* ``POST /v1/decode`` ``{"z": [[...], ...], "format"}`` -> the same formats,
* with ``--encoder encoder.onnx``: ``POST /v1/encode`` (q(z|x) of images),
  ``POST /v1/reconstruct`` and ``POST /v1/score`` (importance-sampled log p(x)
  in nats, from the two ONNX files),
* ``GET /models/decoder.onnx`` (and ``/models/encoder.onnx``): the served files,
* ``GET /``: the latent-space explorer (:mod:`keras_vae.serving.explorer`), and the API
  docs at ``/docs`` and ``/redoc``, with every asset served locally,
* the Open Inference Protocol (KServe v2 / Triton) under ``/v2``, see
  :mod:`keras_vae.serving.kserve`.

All errors are JSON ``{"error": "..."}`` with a 4xx status. Decode work from
concurrent requests is merged by :class:`keras_vae.serving.batching.MicroBatcher`
unless micro-batching is switched off, in which case every request runs
``Sampler.decode`` in a worker thread of its own. A host may also hand the
decode work to its own batching (``create_app(..., decode_fn=...)``), as the
Ray Serve deployment in :mod:`keras_vae.serving.ray_app` does with ``@serve.batch``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Annotated, Any, Literal

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from keras_vae.core import contract
from keras_vae.serving import explorer
from keras_vae.serving import kserve
from keras_vae.serving.batching import MicroBatcher, ShuttingDown, encode_off_loop
from keras_vae.serving.errors import APIError, install_error_handlers
from keras_vae.core.images import encode_png, image_grid
from keras_vae.core.likelihood import is_likelihood, onnx_log_likelihood
from keras_vae.serving.limits import BodyLimitMiddleware
from keras_vae.serving.metrics import Metrics, MetricsMiddleware
from keras_vae.serving.sampler import PROVIDERS, Encoder, ModelLoadError, ProviderUnavailableError, Sampler

__all__ = ["create_app", "main", "ServingState"]

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # 8 MiB
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_MAX_SCORE_SAMPLES = 1000

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
    """What the request handlers share: the sampler, limits, metrics, batcher."""

    sampler: Sampler
    model_name: str
    max_batch: int
    metrics: Metrics
    batcher: MicroBatcher | None
    ready: bool = False
    decode_fn: DecodeFn | None = None
    encoder: Encoder | None = None
    max_score_samples: int = 1000

    @property
    def micro_batching(self) -> bool:
        """True when concurrent decode work is merged (built-in or external batching)."""
        return self.batcher is not None or self.decode_fn is not None

    async def decode(self, z: Any) -> np.ndarray:
        """Validate ``z`` ``[n, latent_dim]`` and decode it to float32 ``[n, H, W, C]``.

        Raises ``ValueError`` for invalid ``z`` (before any queueing, so one
        bad request never spoils a batch) and a 503 while shutting down.
        """
        z = self.sampler.validate_latents(z)
        if self.decode_fn is not None:
            return await self.decode_fn(z)
        if self.batcher is not None and self.batcher.running:
            try:
                return await self.batcher.decode(z)
            except ShuttingDown as exc:
                raise APIError(503, str(exc)) from None
        x = await asyncio.to_thread(self.sampler.decode, z)
        self.metrics.observe_batch(len(z), 1)
        return x


# ----------------------------------------------------------------- /v1 schemas

ImageFormat = Literal["png", "npy", "json"]
Ncols = Annotated[StrictInt | None, Field(ge=1, description="images per PNG grid row")]


def request_models(latent_dim: int, max_batch: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """The bodies of ``POST /v1/generate`` and ``POST /v1/decode`` for one served model.

    Their limits (``n`` up to ``max_batch``, rows of ``latent_dim`` numbers) are in
    the OpenAPI schema, so ``/docs`` and schema-driven clients see them.
    """

    class GenerateRequest(BaseModel):
        """Sample ``n`` images, with z drawn from the model's prior, spread scaled by T."""

        model_config = ConfigDict(extra="forbid")
        n: StrictInt = Field(16, ge=1, le=max_batch, description="number of images")
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
        z: list[Row] = Field(min_length=1, max_length=max_batch,
                             description=f"1 to {max_batch} rows of {latent_dim} numbers")
        format: ImageFormat = "json"
        ncols: Ncols = None

    return GenerateRequest, DecodeRequest


def encoder_request_models(image_shape: tuple[int, int, int], max_batch: int, max_score_samples: int,
                           unit_interval: bool) -> tuple[type[BaseModel], ...]:
    """The bodies of ``POST /v1/encode``, ``/v1/reconstruct`` and ``/v1/score`` for one model."""
    h, w, c = image_shape
    bounds = {"ge": 0.0, "le": 1.0} if unit_interval else {}
    pixel = Annotated[float, Field(strict=True, **bounds)]
    images_field = Field(min_length=1, max_length=max_batch,
                         description=f"1 to {max_batch} images, each [{h}][{w}][{c}] nested lists"
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
        num_samples: StrictInt = Field(100, ge=1, le=max_score_samples,
                                       description="importance samples K per image")
        seed: StrictInt = Field(0, ge=0, lt=2**63, description="noise seed")

    return EncodeRequest, ReconstructRequest, ScoreRequest


def _render(x: np.ndarray, fmt: str, ncols: int | None) -> Response:
    """Encode float32 images ``[n, H, W, C]`` as a PNG grid, ``.npy`` bytes or JSON."""
    if fmt == "png":
        return Response(encode_png(image_grid(x, ncols=ncols)), media_type="image/png")
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, np.asarray(x, dtype=np.float32), allow_pickle=False)
        return Response(buf.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="images.npy"'})
    return JSONResponse({"shape": list(x.shape), "images": x.tolist()})


async def _images_response(state: ServingState, x: np.ndarray, fmt: str,
                           ncols: int | None) -> Response:
    """Counts the decoded images ``[n, H, W, C]`` and renders them (off the event loop when large)."""
    state.metrics.images.inc(len(x))
    return await encode_off_loop(x.size, _render, x, fmt, ncols)


def _serving(request: Request) -> ServingState:
    return request.app.state.serving


def _add_v1_routes(app: FastAPI, latent_dim: int, max_batch: int) -> None:
    GenerateRequest, DecodeRequest = request_models(latent_dim, max_batch)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model", tags=["v1"])
    async def model_info(request: Request) -> dict:
        state = _serving(request)
        info = {"model_name": state.model_name, **state.sampler.describe()}
        info["max_batch"] = state.max_batch
        info["micro_batching"] = state.micro_batching
        info["encoder"] = None if state.encoder is None else {
            "path": state.encoder.model_path.name, "provider": state.encoder.provider,
            "max_score_samples": state.max_score_samples}
        return info

    @app.get("/metrics", tags=["health"])
    async def metrics(request: Request) -> Response:
        body, content_type = _serving(request).metrics.render()
        return Response(body, media_type=content_type)

    async def generate(body, request: Request) -> Response:
        state = _serving(request)
        try:
            z = state.sampler.latents(body.n, seed=body.seed, temperature=body.temperature)
            x = await state.decode(z)
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        return await _images_response(state, x, body.format, body.ncols)

    async def decode(body, request: Request) -> Response:
        state = _serving(request)
        try:
            x = await state.decode(body.z)
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        return await _images_response(state, x, body.format, body.ncols)

    # The body models are made for this model's sizes, so they are set here, not in the
    # (string, postponed) annotations that FastAPI would look up among the module's names.
    generate.__annotations__["body"] = GenerateRequest
    decode.__annotations__["body"] = DecodeRequest
    app.post("/v1/generate", tags=["v1"])(generate)
    app.post("/v1/decode", tags=["v1"])(decode)


def _add_encoder_routes(app: FastAPI, state: ServingState) -> None:
    """``/v1/encode``, ``/v1/reconstruct``, ``/v1/score`` and ``/models/encoder.onnx``."""
    encoder = state.encoder
    EncodeRequest, ReconstructRequest, ScoreRequest = encoder_request_models(
        encoder.image_shape, state.max_batch, state.max_score_samples,
        unit_interval=state.sampler.likelihood == "bernoulli")

    async def encode(body, request: Request) -> dict:
        try:
            z_mean, z_log_var = await asyncio.to_thread(encoder.encode, body.images)
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        return {"z_mean": z_mean.tolist(), "z_log_var": z_log_var.tolist()}

    async def reconstruct(body, request: Request) -> Response:
        try:
            z_mean, _ = await asyncio.to_thread(encoder.encode, body.images)
            x = await state.decode(z_mean)
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        return await _images_response(state, x, body.format, body.ncols)

    async def score(body, request: Request) -> dict:
        """log p(x) in nats per image (NLL = −log p(x)), and bits per dimension.

        For grey images under a Bernoulli decoder the same number is a
        cross-entropy, not a log-likelihood; ``measure`` says which.
        """
        try:
            images = encoder.validate_images(body.images)
            log_px = await asyncio.to_thread(onnx_log_likelihood, encoder, state.sampler, images,
                                             body.num_samples, 100, None, body.seed)
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
        measure = "nll" if is_likelihood(state.sampler.likelihood, images) else "cross_entropy"
        result = {"measure": measure, "num_samples": body.num_samples, "seed": body.seed,
                  "log_px": log_px.tolist(), measure: (-log_px).tolist()}
        if measure == "nll":
            result["bits_per_dim"] = (-log_px / (images[0].size * np.log(2.0))).tolist()
        return result

    for function, model in ((encode, EncodeRequest), (reconstruct, ReconstructRequest),
                            (score, ScoreRequest)):
        function.__annotations__["body"] = model
    app.post("/v1/encode", tags=["v1"])(encode)
    app.post("/v1/reconstruct", tags=["v1"])(reconstruct)
    app.post("/v1/score", tags=["v1"])(score)


def _add_model_file_routes(app: FastAPI, state: ServingState) -> None:
    """The served ONNX files, byte for byte, under stable URLs (for browsers and mirrors)."""
    files = {"decoder.onnx": state.sampler.model_path}
    if state.encoder is not None:
        files["encoder.onnx"] = state.encoder.model_path
    for name, path in files.items():
        app.add_api_route(f"/models/{name}", _file_response(path), methods=["GET"], tags=["models"],
                          summary=f"The served {name}", response_class=Response)


def _file_response(path: Path) -> Callable[[], Awaitable[Response]]:
    async def send_file() -> Response:
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)
    return send_file


def create_app(
    model: str | os.PathLike | Sampler,
    model_name: str = "vae_decoder",
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    micro_batching: bool = True,
    provider: str = "auto",
    intra_op_threads: int | None = None,
    decode_fn: DecodeFn | None = None,
    encoder: str | os.PathLike | Encoder | None = None,
    max_score_samples: int = DEFAULT_MAX_SCORE_SAMPLES,
) -> FastAPI:
    """Build the FastAPI app serving one decoder.

    Args:
        model: a :class:`Sampler`, or the path of ``decoder.onnx`` to load
            (with ``provider`` and ``intra_op_threads``).
        model_name: the model's name in ``/v2/models/{name}``.
        max_batch: most images per request, and most rows per onnxruntime
            call made by the micro-batcher.
        max_body_bytes: largest accepted request body, in bytes.
        batch_wait_ms: how long the micro-batcher waits to fill a batch.
        micro_batching: merge concurrent decode work (True) or run every
            request on its own (False).
        encoder: an :class:`Encoder`, or the path of ``encoder.onnx``: adds
            ``/v1/encode``, ``/v1/reconstruct`` and ``/v1/score``.
        max_score_samples: most importance samples per image in ``/v1/score``.
        decode_fn: an async function that takes over all decode work: it gets
            validated float32 ``z`` ``[n, latent_dim]`` (n <= ``max_batch``)
            and returns float32 ``[n, H, W, C]``. It replaces the built-in
            micro-batcher (``micro_batching`` is then ignored) and should
            report its onnxruntime calls with
            ``app.state.serving.metrics.observe_batch(rows, requests)``.

    The micro-batcher starts and stops with the app's lifespan, so use the
    app under a server (uvicorn) or ``with TestClient(app)``.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1; got {max_batch}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1; got {max_body_bytes}")
    if max_score_samples < 1:
        raise ValueError(f"max_score_samples must be >= 1; got {max_score_samples}")
    sampler = model if isinstance(model, Sampler) else Sampler(
        model, provider=provider, intra_op_threads=intra_op_threads)
    if encoder is not None and not isinstance(encoder, Encoder):
        encoder = Encoder(encoder, provider=provider, intra_op_threads=intra_op_threads)
    if encoder is not None:
        encoder.check_pairs_with(sampler)
    metrics = Metrics()
    batcher = MicroBatcher(sampler.decode, max_batch=max_batch, wait_ms=batch_wait_ms,
                           on_batch=metrics.observe_batch) if (
        micro_batching and decode_fn is None) else None
    state = ServingState(sampler, model_name, max_batch, metrics, batcher, decode_fn=decode_fn,
                         encoder=encoder, max_score_samples=max_score_samples)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if batcher is not None:
            await batcher.start()
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            if batcher is not None:
                await batcher.stop()

    app = FastAPI(
        title="keras-vae decoder server",
        version=version(),
        description="Sample and decode images with an exported VAE decoder.",
        lifespan=lifespan,
        docs_url=None,  # self-hosted by keras_vae.serving.explorer: no CDN
        redoc_url=None,
    )
    app.state.serving = state
    install_error_handlers(app)
    _add_v1_routes(app, sampler.latent_dim, max_batch)
    if encoder is not None:
        _add_encoder_routes(app, state)
    _add_model_file_routes(app, state)
    kserve.add_kserve_routes(app)
    explorer.add_explorer_routes(app)  # the page at /, /docs and /redoc, all served locally
    # The last middleware added runs first: metrics see every request,
    # including those refused for their size.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


# ------------------------------------------------------------------------- CLI

EPILOG = """\
examples:
  keras-vae serve decoder.onnx --host 127.0.0.1 --port 8000
  keras-vae serve decoder.onnx --encoder encoder.onnx    # adds encode, reconstruct, score
  curl -s localhost:8000/v1/generate -H 'Content-Type: application/json' \\
       -d '{"n": 16, "seed": 0}' -o samples.png
  curl -s localhost:8000/v2/models/vae_decoder     # KServe v2 / Triton metadata
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keras-vae serve",
        description="Serve an exported VAE decoder (decoder.onnx) over HTTP: /v1 JSON "
        "endpoints, the KServe v2 / Triton inference protocol, and Prometheus metrics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="path to decoder.onnx")
    p.add_argument("--encoder", metavar="ENCODER.onnx", default=None,
                   help="also serve this encoder.onnx: /v1/encode, /v1/reconstruct, /v1/score")
    p.add_argument("--max-score-samples", type=int, default=DEFAULT_MAX_SCORE_SAMPLES,
                   help="most importance samples per image in /v1/score "
                        f"(default {DEFAULT_MAX_SCORE_SAMPLES})")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model-name", default="vae_decoder",
                   help="model name under /v2/models/ (default vae_decoder)")
    p.add_argument("--provider", choices=PROVIDERS, default="auto",
                   help="onnxruntime execution provider (default auto)")
    p.add_argument("--intra-op-threads", type=int, default=None,
                   help="onnxruntime intra-op threads (default: onnxruntime's choice)")
    p.add_argument("--max-n", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"most images per request and per batch (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help=f"largest request body in bytes (default {DEFAULT_MAX_BODY_BYTES})")
    p.add_argument("--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS,
                   help=f"micro-batch collection window in ms (default {DEFAULT_BATCH_WAIT_MS})")
    p.add_argument("--no-micro-batching", action="store_true",
                   help="decode every request on its own")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the model and run uvicorn until interrupted."""
    import uvicorn

    args = build_parser().parse_args(argv)
    try:
        app = create_app(
            args.model, model_name=args.model_name, max_batch=args.max_n,
            max_body_bytes=args.max_body_bytes, batch_wait_ms=args.batch_wait_ms,
            micro_batching=not args.no_micro_batching, provider=args.provider,
            intra_op_threads=args.intra_op_threads, encoder=args.encoder,
            max_score_samples=args.max_score_samples,
        )
    except (OSError, ModelLoadError, ProviderUnavailableError, ValueError) as exc:
        print(f"keras-vae serve: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    sampler = app.state.serving.sampler
    encoder = app.state.serving.encoder
    print(f"serving {sampler.model_path}"
          + (f" with encoder {encoder.model_path}" if encoder is not None else "")
          + f" as {args.model_name!r} on {sampler.provider} "
          f"(micro-batching {'off' if args.no_micro_batching else 'on'}) "
          f"at http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
