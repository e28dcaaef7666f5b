"""Ray Serve deployment of the VAE decoder: replicas across cores, GPUs and machines.

Each replica is a Ray actor that loads ``decoder.onnx`` once into a
:class:`~keras_vae.serving.sampler.Sampler` and serves the same HTTP app as
:mod:`keras_vae.serving.server` (``/v1/generate``, ``/v1/decode``, ``/v1/model``,
``/healthz``, ``/metrics`` and the KServe v2 routes under ``/v2``), with the
same request fields, response formats and ``{"error": "..."}`` 4xx errors.
The only difference is who merges concurrent decode work: here it is Ray
Serve's ``@serve.batch`` (``max_batch_size`` latent rows per onnxruntime
call, waiting at most ``batch_wait_timeout_s`` to fill a batch), and Ray's
HTTP proxy spreads requests over the replicas.

Only this module of :mod:`serving` imports ``ray``; install it with
``pip install ".[serving,ray]"`` from a checkout of this repository.

One machine
-----------
Start a local Ray instance, deploy, print the URL and serve until Ctrl-C::

    python -m keras_vae.serving.ray_app runs/digits/decoder.onnx --replicas 2 --num-cpus 1 \\
        --host 127.0.0.1 --port 8000
    curl -s 127.0.0.1:8000/v1/generate -H 'Content-Type: application/json' \\
        -d '{"n": 16, "seed": 0}' -o samples.png

or with Ray's own CLI, through the application builder :func:`build_app`
(``key=value`` arguments, see :class:`AppArgs`)::

    serve run keras_vae.serving.ray_app:build_app model=runs/digits/decoder.onnx num_replicas=2 num_cpus=1

GPU replicas: ``--provider cuda --num-gpus 1`` (``provider=cuda num_gpus=1``)
gives every replica one GPU (fractions such as ``0.5`` share one) and
onnxruntime's CUDA provider; it needs ``onnxruntime-gpu`` on the GPU nodes.

A Ray cluster
-------------
Install keras-vae with the ``serving`` and ``ray`` extras on every node and
put ``decoder.onnx`` at the same path on every node (or on a shared file
system). Then::

    ray start --head --port=6379                # on the head node
    ray start --address=HEAD_IP:6379            # on every other node

    # from the head node (or any machine that reaches it):
    serve run --address ray://HEAD_IP:10001 keras_vae.serving.ray_app:build_app \\
        model=/models/decoder.onnx num_replicas=4 num_cpus=2
    # or, on the head node, without Ray Client:
    python -m keras_vae.serving.ray_app /models/decoder.onnx --address auto --replicas 4 --host 0.0.0.0

    # or declaratively (long-running, survives the shell), see ray_serve_config.yaml:
    serve deploy keras_vae/serving/ray_serve_config.yaml     # talks to the head's dashboard :8265
    serve status

Replicas are placed on whichever nodes have the requested CPUs/GPUs free. A
Serve config file fixes the same settings: the application's ``args`` are
passed to :func:`build_app`, and its ``deployments`` section (deployment
name ``VAEDecoder``) may override ``num_replicas``, ``max_ongoing_requests``
and ``ray_actor_options``; ``keras_vae/serving/ray_serve_config.yaml`` is an example.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np
import ray
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

from keras_vae.serving.errors import describe_validation_errors
from keras_vae.serving.sampler import Encoder, ModelLoadError, ProviderUnavailableError, Sampler
from keras_vae.serving.server import (DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_SCORE_SAMPLES,
                            create_app)

__all__ = ["AppArgs", "VAEDecoder", "build_app", "main", "DEPLOYMENT_NAME", "APP_NAME"]

DEPLOYMENT_NAME = "VAEDecoder"
APP_NAME = "vae"
DEFAULT_BATCH_WAIT_S = 0.002


class AppArgs(BaseModel):
    """Arguments of :func:`build_app` (strings from ``serve run`` are converted).

    ``max_ongoing_requests`` defaults to ``max_batch_size``, so that one
    replica can hold enough requests to fill a batch; ``intra_op_threads``
    defaults to the replica's whole CPUs (at least 1), so replicas on one
    machine do not fight over cores.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(min_length=1, description="path of decoder.onnx on the replica's node")
    encoder: str | None = Field(None, min_length=1,
                                description="path of encoder.onnx: adds encode, reconstruct, score")
    max_score_samples: int = Field(DEFAULT_MAX_SCORE_SAMPLES, ge=1,
                                   description="most importance samples per image in /v1/score")
    model_name: str = Field("vae_decoder", min_length=1, description="name under /v2/models/")
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0, allow_inf_nan=False, description="CPUs per replica")
    num_gpus: float = Field(0.0, ge=0, allow_inf_nan=False, description="GPUs per replica")
    intra_op_threads: int | None = Field(None, ge=1)
    max_batch_size: int = Field(DEFAULT_MAX_BATCH, ge=1,
                                description="most latent rows per request and per onnxruntime call")
    batch_wait_timeout_s: float = Field(DEFAULT_BATCH_WAIT_S, ge=0, allow_inf_nan=False)
    max_ongoing_requests: int | None = Field(None, ge=1, description="requests per replica")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1)

    def threads(self) -> int:
        return self.intra_op_threads or max(1, int(self.num_cpus))


def _rows(latents: list[np.ndarray]) -> int:
    """Size of a ``@serve.batch`` batch: latent rows, not requests."""
    return sum(len(z) for z in latents)


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=DEFAULT_MAX_BATCH)
@serve.ingress()
class VAEDecoder:
    """One replica: a Sampler and the :mod:`keras_vae.serving.server` app around it.

    ``@serve.ingress()`` without an app defers the app to replica start:
    Ray calls ``__serve_build_asgi_app__`` after ``__init__``, so the app is
    built with this replica's settings, and its decode work goes to
    :meth:`decode_batch`.
    """

    def __init__(
        self,
        model: str,
        model_name: str = "vae_decoder",
        provider: str = "auto",
        intra_op_threads: int | None = 1,
        max_batch_size: int = DEFAULT_MAX_BATCH,
        batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        encoder: str | None = None,
        max_score_samples: int = DEFAULT_MAX_SCORE_SAMPLES,
    ) -> None:
        self.sampler = Sampler(model, provider=provider, intra_op_threads=intra_op_threads)
        self.encoder = None if encoder is None else Encoder(
            encoder, provider=provider, intra_op_threads=intra_op_threads)
        self.max_score_samples = int(max_score_samples)
        self.model_name = model_name
        self.max_batch_size = int(max_batch_size)
        self.max_body_bytes = int(max_body_bytes)
        self.decode_batch.set_max_batch_size(self.max_batch_size)
        self.decode_batch.set_batch_wait_timeout_s(float(batch_wait_timeout_s))
        self._metrics = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(self.sampler, model_name=self.model_name, max_batch=self.max_batch_size,
                         max_body_bytes=self.max_body_bytes, decode_fn=self.decode_batch,
                         encoder=self.encoder, max_score_samples=self.max_score_samples)
        self._metrics = app.state.serving.metrics
        return app

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S,
                 batch_size_fn=_rows)
    async def decode_batch(self, latents: list[np.ndarray]) -> list[np.ndarray]:
        """Decode the validated ``z`` of concurrent requests in one onnxruntime call.

        Called with one float32 ``[n, latent_dim]`` array per request (Serve
        collects them); returns each request's ``[n, H, W, C]`` slice.
        """
        z = latents[0] if len(latents) == 1 else np.concatenate(latents)
        x = await asyncio.to_thread(self.sampler.decode, z)
        if self._metrics is not None:
            self._metrics.observe_batch(len(z), len(latents))
        ends = np.cumsum([len(part) for part in latents])[:-1]
        return np.split(x, ends)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Ray Serve application builder: ``serve run keras_vae.serving.ray_app:build_app model=...``.

    ``args`` are the fields of :class:`AppArgs` (values may be strings, as
    ``serve run key=value`` passes them). Raises ``ValueError`` naming every
    invalid or unknown argument.
    """
    try:
        cfg = AppArgs.model_validate(dict(args))
    except ValidationError as exc:
        raise ValueError(f"invalid application arguments: "
                         f"{describe_validation_errors(exc.errors())}") from None
    return VAEDecoder.options(
        num_replicas=cfg.num_replicas,
        max_ongoing_requests=cfg.max_ongoing_requests or cfg.max_batch_size,
        ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
    ).bind(
        cfg.model,
        model_name=cfg.model_name,
        provider=cfg.provider,
        intra_op_threads=cfg.threads(),
        max_batch_size=cfg.max_batch_size,
        batch_wait_timeout_s=cfg.batch_wait_timeout_s,
        max_body_bytes=cfg.max_body_bytes,
        encoder=cfg.encoder,
        max_score_samples=cfg.max_score_samples,
    )


# ------------------------------------------------------------------------- CLI

EPILOG = """\
examples:
  keras-vae serve-ray decoder.onnx --replicas 2 --num-cpus 1 --port 8000
  keras-vae serve-ray decoder.onnx --encoder encoder.onnx    # adds encode, reconstruct, score
  keras-vae serve-ray decoder.onnx --provider cuda --num-gpus 1 --replicas 2
  keras-vae serve-ray /models/decoder.onnx --address auto --host 0.0.0.0  # on a Ray head
  serve run keras_vae.serving.ray_app:build_app model=decoder.onnx num_replicas=2 num_cpus=1
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keras-vae serve-ray",
        description="Serve an exported VAE decoder (decoder.onnx) with Ray Serve: the HTTP API "
        "of keras_vae.serving.server, replicated, with @serve.batch request batching.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="path to decoder.onnx (on every node that runs a replica)")
    p.add_argument("--encoder", metavar="ENCODER.onnx", default=None,
                   help="also serve this encoder.onnx (same path on every node): /v1/encode, "
                        "/v1/reconstruct, /v1/score")
    p.add_argument("--max-score-samples", type=int, default=DEFAULT_MAX_SCORE_SAMPLES,
                   help=f"most importance samples per image in /v1/score "
                        f"(default {DEFAULT_MAX_SCORE_SAMPLES})")
    p.add_argument("--replicas", type=int, default=1, help="number of replicas (default 1)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica (default 1)")
    p.add_argument("--num-gpus", type=float, default=0.0,
                   help="GPUs per replica, fractions allowed (default 0)")
    p.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto",
                   help="onnxruntime execution provider in the replicas (default auto)")
    p.add_argument("--intra-op-threads", type=int, default=None,
                   help="onnxruntime threads per replica (default: the replica's whole CPUs)")
    p.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"most images per request and per onnxruntime call "
                        f"(default {DEFAULT_MAX_BATCH})")
    p.add_argument("--batch-wait-timeout-s", type=float, default=DEFAULT_BATCH_WAIT_S,
                   help=f"how long a batch waits to fill, seconds (default {DEFAULT_BATCH_WAIT_S})")
    p.add_argument("--max-ongoing-requests", type=int, default=None,
                   help="requests one replica holds at once (default: --max-batch-size)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help=f"largest request body in bytes (default {DEFAULT_MAX_BODY_BYTES})")
    p.add_argument("--model-name", default="vae_decoder",
                   help="model name under /v2/models/ (default vae_decoder)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--address", default=None,
                   help="connect to a running Ray cluster ('auto', HOST:6379 or "
                        "ray://HOST:10001) instead of starting a local instance")
    p.add_argument("--name", default=APP_NAME, help=f"Serve application name (default {APP_NAME})")
    p.add_argument("--access-log", action="store_true", help="log every request in the replicas")
    return p


def _fail(message: str) -> int:
    print(f"keras-vae serve-ray: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _check_resources(cfg: AppArgs, local: bool) -> str | None:
    """Say why the replicas cannot all be placed, if they cannot."""
    total = ray.cluster_resources()
    for key, per_replica in (("CPU", cfg.num_cpus), ("GPU", cfg.num_gpus)):
        need = per_replica * cfg.num_replicas
        have = total.get(key, 0.0)
        if need > have + 1e-9:
            return (f"{cfg.num_replicas} replica(s) x {per_replica:g} {key} need {need:g} "
                    f"{key}s; the Ray {'instance' if local else 'cluster'} has {have:g}")
    return None


def main(argv: list[str] | None = None) -> int:
    """Start (or join) Ray, deploy the app, print its URL and serve until Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        cfg = AppArgs(
            model=args.model, encoder=args.encoder, max_score_samples=args.max_score_samples,
            model_name=args.model_name, provider=args.provider,
            num_replicas=args.replicas, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
            intra_op_threads=args.intra_op_threads, max_batch_size=args.max_batch_size,
            batch_wait_timeout_s=args.batch_wait_timeout_s,
            max_ongoing_requests=args.max_ongoing_requests, max_body_bytes=args.max_body_bytes,
        )
    except ValidationError as exc:
        return _fail(describe_validation_errors(exc.errors()))
    local = args.address is None
    model = Path(cfg.model).expanduser()
    encoder = Path(cfg.encoder).expanduser() if cfg.encoder else None
    if model.is_file() and (encoder is None or encoder.is_file()):
        cfg.model = str(model.resolve())
        cfg.encoder = str(encoder.resolve()) if encoder else None
        try:  # fail here, in one line, rather than in every replica
            # Local replicas run here, so the provider can be checked too.
            provider = cfg.provider if local else "cpu"
            sampler = Sampler(cfg.model, provider=provider, intra_op_threads=1)
            if cfg.encoder:
                Encoder(cfg.encoder, provider=provider, intra_op_threads=1).check_pairs_with(sampler)
        except (OSError, ModelLoadError, ProviderUnavailableError, ValueError) as exc:
            return _fail(str(exc))
    elif local:
        missing = model if not model.is_file() else encoder
        return _fail(f"model file not found: {str(missing)!r}")

    # SIGTERM (e.g. from a process manager) shuts down as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        try:
            if local:  # "local" always starts a new instance, never joins a running one
                ray.init(address="local", include_dashboard=False,
                         logging_level=logging.WARNING)
            else:
                ray.init(address=args.address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "start Ray" if local else f"connect to Ray at {args.address}"
            return _fail(f"cannot {where}: {exc}")
        problem = _check_resources(cfg, local)
        if problem and local:
            return _fail(problem)
        if problem:
            print(f"warning: {problem}; replicas wait until the cluster has room", flush=True)
        serve.start(http_options={"host": args.host, "port": args.port})
        try:
            serve.run(build_app(cfg.model_dump()), name=args.name, route_prefix="/",
                      logging_config={"enable_access_log": args.access_log})
        except RuntimeError as exc:
            return _fail(f"deploying {args.name!r} failed: {exc}")
        where = "a local Ray instance" if local else f"the Ray cluster at {args.address}"
        print(f"serving {cfg.model} with {cfg.num_replicas} replica(s) on {where} "
              f"({cfg.num_cpus:g} CPU, {cfg.num_gpus:g} GPU, provider {cfg.provider} each) "
              f"at http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
        return 0
    finally:
        if ray.is_initialized():
            try:
                if local:
                    serve.shutdown()
                else:  # leave the cluster (and its other applications) running
                    serve.delete(args.name)
            except Exception as exc:  # noqa: BLE001 - still disconnect below
                print(f"warning: clean-up failed: {exc}", file=sys.stderr)
            ray.shutdown()


if __name__ == "__main__":
    # Run the copy imported as keras_vae.serving.ray_app, so that Ray finds the deployment
    # class by its module name rather than shipping a copy from __main__.
    from keras_vae.serving.ray_app import main as _main

    sys.exit(_main())
