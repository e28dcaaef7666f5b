"""``keras-vae``: one command-line tool, with a subcommand per job.

Each subcommand is a module with ``main(argv) -> int | None``, imported only when
it runs, so ``keras-vae serve`` works in an install that has the serving extra and
no Keras, and ``keras-vae --help`` imports nothing heavy.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from keras_vae import __version__

#: subcommand -> (module with main(argv), the extra it needs, one-line summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("keras_vae.commands.train", "tensorflow",
              "train a VAE with model.fit and write a run directory"),
    "evaluate": ("keras_vae.commands.evaluate", "tensorflow",
                 "test ELBO and importance-sampled NLL (nats, bits/dim), pictures"),
    "fit-prior": ("keras_vae.commands.fit_prior", "tensorflow",
                  "fit a prior to a trained model's latents: a Gaussian mixture, a flow, diffusion"),
    "export": ("keras_vae.commands.export", "export",
               "write the decoder (fp32 or int8) and encoder as ONNX, with a parity check"),
    "score": ("keras_vae.commands.score", "serving",
              "anomaly scores per image (log p(x), ELBO, reconstruction error) to CSV; thresholds"),
    "generate": ("keras_vae.serving.generate", "serving",
                 "sample images from decoder.onnx with onnxruntime (no Keras)"),
    "serve": ("keras_vae.serving.server", "serving",
              "HTTP server: /v1 JSON, KServe v2, Prometheus, the explorer (no Keras)"),
    "serve-ray": ("keras_vae.serving.ray_app", "ray",
                  "the same HTTP API on Ray Serve replicas, across cores, GPUs and machines"),
    "explore": ("keras_vae.serving.explorer.cli", "serving",
                "write the in-browser latent-space explorer as a static folder"),
}

EPILOG = """\
examples:
  keras-vae train --out runs/digits --epochs 60 --dynamic-binarization
  keras-vae evaluate runs/digits
  keras-vae fit-prior runs/digits --kind gmm
  keras-vae export runs/digits --out runs/digits/decoder.onnx
  keras-vae generate runs/digits/decoder.onnx -n 64 --out samples.png
  keras-vae score runs/digits/decoder.onnx --dataset digits --out scores.csv
  keras-vae serve runs/digits/decoder.onnx --port 8000
  keras-vae explore runs/digits/decoder.onnx --out site/

`keras-vae COMMAND --help` shows each command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-vae",
        description="Train a Keras 3 VAE, export its decoder to ONNX, and serve it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"keras-vae {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``keras-vae COMMAND ARGS...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        if not argv:
            parser.print_help()
            return 2
        parser.parse_args(argv[:1])  # --help, --version, or an error naming the commands
        return 2
    name, rest = argv[0], argv[1:]
    module_name, extra, _ = COMMANDS[name]
    try:  # the library commands import Keras when they start, the others on import
        status = importlib.import_module(module_name).main(rest)
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.startswith("keras_vae"):
            raise
        print(f"keras-vae {name}: error: it needs the package {exc.name!r}, which is not "
              f"installed; install the {extra!r} extra: pip install 'keras-vae[{extra}]'",
              file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0

if __name__ == "__main__":
    sys.exit(main())
