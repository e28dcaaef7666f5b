"""``keras-vae serve``: serve an exported decoder over HTTP with uvicorn.

Run ``keras-vae serve decoder.onnx --host 127.0.0.1 --port 8000`` (or
``python -m keras_vae.serving.server``); ``--help`` lists the options, which are
``ServerOptions``. The app is
``keras_vae.serving.app.create_app``.
"""

from __future__ import annotations

import argparse
import sys

from keras_vae.serving.app import create_app
from keras_vae.serving.onnx_model import ModelLoadError, ProviderUnavailableError
from keras_vae.serving.options import ServerOptions, add_arguments, parse_options

__all__ = ["main", "build_parser", "create_app"]

PROG = "keras-vae serve"

EPILOG = """\
examples:
  keras-vae serve decoder.onnx --host 127.0.0.1 --port 8000
  keras-vae serve decoder.onnx --encoder encoder.onnx    # adds encode, reconstruct, score
  keras-vae serve decoder.onnx --max-queue-ms 250        # refuse (503) beyond 250 ms of queued work
  curl -s localhost:8000/v1/generate -H 'Content-Type: application/json' \\
       -d '{"n": 16, "seed": 0}' -o samples.png
  curl -s localhost:8000/v2/models/vae_decoder     # KServe v2 / Triton metadata
  open http://127.0.0.1:8000/ for the latent-space explorer, /docs for the API
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve an exported VAE decoder (decoder.onnx) over HTTP: /v1 JSON "
        "endpoints, the KServe v2 / Triton inference protocol, Prometheus metrics and the "
        "in-browser latent-space explorer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser, ServerOptions)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the model and run uvicorn until interrupted."""
    import uvicorn

    try:
        options = parse_options(build_parser(), ServerOptions, argv)
        app = create_app(**options.app_kwargs(), micro_batching=options.micro_batching)
    except (OSError, ModelLoadError, ProviderUnavailableError, ValueError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    state = app.state.serving
    print(f"serving {state.sampler.model_path}"
          + (f" with encoder {state.encoder.model_path}" if state.encoder is not None else "")
          + f" as {options.model_name!r} on {state.sampler.provider} "
          f"(micro-batching {'on' if options.micro_batching else 'off'}, work queues bounded at "
          f"{options.max_queue_ms:g} ms) "
          f"at http://{options.host}:{options.port}/", flush=True)
    uvicorn.run(app, host=options.host, port=options.port, log_level=options.log_level,
                access_log=options.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
