"""Ray Serve deployment of the VAE decoder: replicas across cores, GPUs and machines.

Each replica is a Ray actor that loads ``decoder.onnx`` once into a
``Sampler`` and serves the app of
``create_app``: the same routes, request fields,
response formats and ``{"error": "..."}`` 4xx errors as ``keras-vae serve``. Only
the batching differs: Ray Serve's ``@serve.batch`` merges concurrent decode work
(``max_batch_size`` latent rows per onnxruntime call, waiting at most
``batch_wait_ms``), and Ray's HTTP proxy spreads requests over the replicas.
The options are ``keras_vae.serving.options``', named as ``keras-vae serve``'s.

Three ways to run it (the docs site's "Scaling out" page has the cluster set-up)::

    keras-vae serve-ray decoder.onnx --num-replicas 2 --num-cpus 1 --port 8000
    serve run keras_vae.serving.ray_app:build_app model=decoder.onnx num_replicas=2
    serve deploy keras_vae/serving/ray_serve_config.yaml    # args: RayAppOptions' fields

Only this module of ``keras_vae.serving`` imports ``ray`` (``pip install "keras-vae[ray]"``).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI
from pydantic import ValidationError
from ray import serve

from keras_vae.serving.app import create_app
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.errors import describe_validation_errors
from keras_vae.serving.fitted import find_prior
from keras_vae.serving.onnx_model import ModelLoadError, ProviderUnavailableError
from keras_vae.serving.options import RayAppOptions, RayOptions, ServingOptions, add_arguments, parse_options
from keras_vae.serving.sampler import Sampler

__all__ = ["VAEDecoder", "build_app", "main", "DEPLOYMENT_NAME", "APP_NAME"]

DEPLOYMENT_NAME = "VAEDecoder"
APP_NAME = RayOptions.model_fields["name"].default
_MAX_BATCH = ServingOptions.model_fields["max_batch_size"].default
_BATCH_WAIT_S = ServingOptions.model_fields["batch_wait_ms"].default / 1000


def _rows(latents: list[np.ndarray]) -> int:
    """Size of a ``@serve.batch`` batch: latent rows, not requests."""
    return sum(len(z) for z in latents)


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=_MAX_BATCH)
@serve.ingress()
class VAEDecoder:
    """One replica: a Sampler and the ``create_app`` app around it.

    ``@serve.ingress()`` without an app defers the app to replica start:
    Ray calls ``__serve_build_asgi_app__`` after ``__init__``, so the app is
    built with this replica's settings (``create_app``'s keywords), and its
    decode work goes to ``decode_batch``.
    """

    def __init__(self, **app_kwargs: Any) -> None:
        options = ServingOptions.model_validate(app_kwargs)
        self.sampler = Sampler(options.model, provider=options.provider,
                               intra_op_threads=options.intra_op_threads)
        self.encoder = None if options.encoder is None else Encoder(
            options.encoder, provider=options.provider, intra_op_threads=options.intra_op_threads)
        self.options = options
        self.decode_batch.set_max_batch_size(options.max_batch_size)
        self.decode_batch.set_batch_wait_timeout_s(options.batch_wait_ms / 1000)
        self._metrics, self._decode = None, self.sampler.decode_rows

    def __serve_build_asgi_app__(self) -> FastAPI:
        kwargs = {**self.options.app_kwargs(), "model": self.sampler, "encoder": self.encoder}
        app = create_app(**kwargs, decode_fn=self.decode_batch)
        self._metrics = app.state.serving.metrics
        self._decode = app.state.serving.admission.timed("decode", self.sampler.decode_rows)
        return app

    @serve.batch(max_batch_size=_MAX_BATCH, batch_wait_timeout_s=_BATCH_WAIT_S, batch_size_fn=_rows)
    async def decode_batch(self, latents: list[np.ndarray]) -> list[np.ndarray]:
        """Decode the validated ``z`` of concurrent requests in one onnxruntime call.

        Called with one float32 ``[n, latent_dim]`` array per request (a conditional
        decoder's label as a last column, ``Sampler.rows``) (Serve
        collects them); returns each request's ``[n, H, W, C]`` slice.
        """
        z = latents[0] if len(latents) == 1 else np.concatenate(latents)
        x = await asyncio.to_thread(self._decode, z)
        if self._metrics is not None:
            self._metrics.observe_batch(len(z), len(latents))
        ends = np.cumsum([len(part) for part in latents])[:-1]
        return np.split(x, ends)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Ray Serve application builder: ``serve run keras_vae.serving.ray_app:build_app model=...``.

    ``args`` are the fields of ``RayAppOptions``
    (values may be strings, as ``serve run key=value`` passes them). Raises
    ``ValueError`` naming every invalid or unknown argument.
    """
    try:
        options = RayAppOptions.model_validate(dict(args))
    except ValidationError as exc:
        raise ValueError(f"invalid application arguments: "
                         f"{describe_validation_errors(exc.errors())}") from None
    app_kwargs = {**options.app_kwargs(), "intra_op_threads": options.threads()}
    return VAEDecoder.options(
        num_replicas=options.num_replicas,
        max_ongoing_requests=options.max_ongoing_requests or options.max_batch_size,
        # Beyond max_queued_requests Ray's proxy answers 503 itself: plain text, not {"error"}.
        max_queued_requests=options.max_queued_requests, backpressure_config={"retry_after_s": 1},
        ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
    ).bind(**app_kwargs)


# ------------------------------------------------------------------------- CLI

PROG = "keras-vae serve-ray"

EPILOG = """\
examples:
  keras-vae serve-ray decoder.onnx --num-replicas 2 --num-cpus 1 --port 8000
  keras-vae serve-ray decoder.onnx --encoder encoder.onnx    # adds encode, reconstruct, score
  keras-vae serve-ray decoder.onnx --provider cuda --num-gpus 1 --num-replicas 2
  keras-vae serve-ray /models/decoder.onnx --address auto --host 0.0.0.0  # on a Ray head
  serve run keras_vae.serving.ray_app:build_app model=decoder.onnx num_replicas=2 num_cpus=1
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve an exported VAE decoder (decoder.onnx) with Ray Serve: the HTTP API "
        "of `keras-vae serve`, replicated, with @serve.batch request batching. Paths must be "
        "the same on every node that runs a replica.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser, RayOptions)
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _check_resources(options: RayOptions, local: bool) -> str | None:
    """Say why the replicas cannot all be placed, if they cannot."""
    total = ray.cluster_resources()
    for key, per_replica in (("CPU", options.num_cpus), ("GPU", options.num_gpus)):
        need = per_replica * options.num_replicas
        have = total.get(key, 0.0)
        if need > have + 1e-9:
            return (f"{options.num_replicas} replica(s) x {per_replica:g} {key} need {need:g} "
                    f"{key}s; the Ray {'instance' if local else 'cluster'} has {have:g}")
    return None


def _check_models(options: RayOptions, local: bool) -> str | None:
    """Load the models here once, so that a bad file fails in one line, not in every replica."""
    model = Path(options.model).expanduser()
    encoder = Path(options.encoder).expanduser() if options.encoder else None
    if not (model.is_file() and (encoder is None or encoder.is_file())):
        missing = model if not model.is_file() else encoder
        return f"model file not found: {str(missing)!r}" if local else None
    options.model = str(model.resolve())
    options.encoder = str(encoder.resolve()) if encoder else None
    options.prior = options.prior and str(Path(options.prior).expanduser().resolve())
    try:  # local replicas run here, so the provider can be checked too
        provider = options.provider if local else "cpu"
        sampler = Sampler(options.model, provider=provider, intra_op_threads=1)
        if options.encoder:
            Encoder(options.encoder, provider=provider, intra_op_threads=1).check_pairs_with(sampler)
        find_prior(sampler, options.prior, provider, 1)  # prior.onnx beside the decoder, or --prior
    except (OSError, ModelLoadError, ProviderUnavailableError, ValueError) as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    """Start (or join) Ray, deploy the app, print its URL and serve until Ctrl-C."""
    try:
        options = parse_options(build_parser(), RayOptions, argv)
    except ValueError as exc:
        return _fail(str(exc))
    local = options.address is None
    problem = _check_models(options, local)
    if problem:
        return _fail(problem)

    # SIGTERM (e.g. from a process manager) shuts down as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        try:
            if local:  # "local" always starts a new instance, never joins a running one
                ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=options.address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "start Ray" if local else f"connect to Ray at {options.address}"
            return _fail(f"cannot {where}: {exc}")
        problem = _check_resources(options, local)
        if problem and local:
            return _fail(problem)
        if problem:
            print(f"warning: {problem}; replicas wait until the cluster has room", flush=True)
        serve.start(http_options={"host": options.host, "port": options.port})
        try:
            serve.run(build_app(options.app_args()), name=options.name, route_prefix="/",
                      logging_config={"enable_access_log": options.access_log})
        except RuntimeError as exc:
            return _fail(f"deploying {options.name!r} failed: {exc}")
        where = "a local Ray instance" if local else f"the Ray cluster at {options.address}"
        print(f"serving {options.model} with {options.num_replicas} replica(s) on {where} "
              f"({options.num_cpus:g} CPU, {options.num_gpus:g} GPU, provider {options.provider} "
              f"each) at http://{options.host}:{options.port}  (Ctrl-C to stop)", flush=True)
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
                    serve.delete(options.name)
            except Exception as exc:  # noqa: BLE001 - still disconnect below
                print(f"warning: clean-up failed: {exc}", file=sys.stderr)
            ray.shutdown()


if __name__ == "__main__":
    # Run the copy imported as keras_vae.serving.ray_app, so that Ray finds the deployment
    # class by its module name rather than shipping a copy from __main__.
    from keras_vae.serving.ray_app import main as _main

    sys.exit(_main())
