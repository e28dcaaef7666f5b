"""Command-line sampler: decode random (or given) latents into images.

Run as ``keras-vae generate`` or ``python -m keras_vae.serving.generate``;
``--help`` lists the options with examples. Exit status: 0 on success,
1 when the work fails (model, input or output problem), 2 for bad arguments.
Errors are one line on stderr; output files are written atomically, so a
failure never leaves a partial file.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

from keras_vae.core import contract
from keras_vae.core.files import write_bytes_atomic
from keras_vae.core.images import encode_png, image_grid
from keras_vae.core.fitted_prior import SAMPLERS
from keras_vae.serving.fitted import draw_latents, find_prior
from keras_vae.serving.sampler import PROVIDERS, ModelLoadError, ProviderUnavailableError, Sampler

DEFAULT_N = 64

EPILOG = """\
examples:
  # 64 samples with a fixed seed, as an 8x8 PNG grid
  keras-vae generate decoder.onnx -n 64 --seed 0 --out samples.png

  # cooler samples (closer to the mean), also saved as float32 [n, H, W, C]
  keras-vae generate decoder.onnx -n 16 --temperature 0.7 --out s.png --npy s.npy

  # from the prior fitted after training (prior.onnx beside the decoder: keras-vae fit-prior)
  keras-vae generate decoder.onnx -n 64 --seed 0 --sampler fitted --out fitted.png

  # decode your own latents (a [n, latent_dim] .npy file) on the GPU
  keras-vae generate decoder.onnx --z latents.npy --provider cuda --out z.png

  # a class-conditional decoder: 16 sevens, or the classes 3 and 8 in turn (indices or names)
  keras-vae generate decoder.onnx -n 16 --label 7 --seed 0 --out sevens.png
  keras-vae generate decoder.onnx -n 16 --label 3 8 --out threes_and_eights.png

The same --seed always gives a byte-identical PNG; with a class-conditional decoder the
same --seed gives the same z whatever the labels (the same style in another class).
"""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line on stderr."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class UsageError(Exception):
    """Arguments that parse but do not make sense together (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="keras-vae generate",
        description="Sample images from an exported VAE decoder (decoder.onnx) "
        "with onnxruntime and save them as a PNG grid and/or a .npy array.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="path to decoder.onnx")
    p.add_argument("-n", type=int, default=None, help=f"number of images (default {DEFAULT_N})")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: fresh randomness)")
    p.add_argument("--temperature", type=float, default=None,
                   help="scale of the latent spread, 0 to 10: z ~ N(0, T^2 I), or for a model "
                        "with a mixture prior z ~ N(m_c, T^2 s_c^2) (default 1.0)")
    p.add_argument("--temperatures", type=float, nargs="+", default=None, metavar="T",
                   help="hierarchical models: one temperature per latent group, top-down, each "
                        "multiplying --temperature for its group's noise")
    p.add_argument("--sampler", choices=SAMPLERS, default="prior",
                   help="where z comes from: the model's own prior, or the prior fitted after "
                        "training (prior.onnx beside the decoder, or --prior) (default prior)")
    p.add_argument("--prior", metavar="PRIOR.onnx", default=None,
                   help="--sampler fitted: the fitted prior (default: prior.onnx beside the decoder)")
    p.add_argument("--z", metavar="LATENTS.npy", default=None,
                   help="decode these latents, shape [n, latent_dim], instead of sampling")
    p.add_argument("--label", nargs="+", default=None, metavar="CLASS",
                   help="class-conditional decoders: the class of every image, or several "
                        "taken in turn, each an index or a class name (default: image i gets "
                        "class i mod the number of classes)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="rows per onnxruntime call (default 256)")
    p.add_argument("--out", metavar="PNG", default=None, help="write an image grid to this PNG")
    p.add_argument("--npy", metavar="FILE", default=None,
                   help="write pixel means, float32 [n, H, W, C], to this .npy file")
    p.add_argument("--ncols", type=int, default=None,
                   help="images per grid row (default: ceil(sqrt(n)))")
    p.add_argument("--scale", type=int, default=1,
                   help="enlarge the PNG grid this many times, e.g. 4 for 8x8 digits (default: 1)")
    p.add_argument("--provider", choices=PROVIDERS, default="auto",
                   help="onnxruntime execution provider (default auto: CUDA if available)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Reject argument combinations before any work is done."""
    if args.out is None and args.npy is None:
        raise UsageError("nothing to write: give --out PNG and/or --npy FILE")
    if args.z is not None and (args.n is not None or args.seed is not None
                               or args.temperature is not None or args.temperatures is not None
                               or args.sampler != "prior"):
        raise UsageError("--z decodes given latents; it cannot be combined with -n, --seed, "
                         "--temperature, --temperatures or --sampler")
    if args.prior is not None and args.sampler != "fitted":
        raise UsageError("--prior names the fitted prior of --sampler fitted")
    if args.n is not None and args.n <= 0:
        raise UsageError(f"-n must be a positive integer; got {args.n}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be >= 0; got {args.seed}")
    if args.temperature is not None:
        try:
            contract.check_temperature(args.temperature)
        except ValueError as exc:
            raise UsageError(f"--{exc}") from None
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be a positive integer; got {args.batch_size}")
    if args.scale < 1:
        raise UsageError(f"--scale must be a positive integer; got {args.scale}")
    if args.ncols is not None and args.ncols <= 0:
        raise UsageError(f"--ncols must be a positive integer; got {args.ncols}")
    for path in (args.out, args.npy):
        if path is None:
            continue
        if Path(path).is_dir():
            raise UsageError(f"output path is a directory: {path!r}")
        if not Path(path).resolve().parent.is_dir():
            raise UsageError(f"output directory does not exist: {str(Path(path).parent)!r}")
    if args.out is not None and args.out == args.npy:
        raise UsageError("--out and --npy must be different files")
    if args.out is not None and args.out.lower().endswith(".npy"):
        raise UsageError(f"--out writes a PNG grid; for a .npy array of the images use --npy {args.out}")


def _load_latents(path: str) -> np.ndarray:
    """Read a [n, latent_dim] array from a .npy file (never unpickles)."""
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise ValueError(f"{path!r} is not a .npy file")
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"latents file not found: {path!r}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read latents from {path!r}: {exc}") from None


def _labels(sampler: Sampler, values: list[str] | None, n: int) -> np.ndarray | None:
    """--label's classes for n images (each a class name, else an index), in turn; None when
    the decoder is unconditional and no --label was given. ValueError names the classes."""
    if sampler.class_names is None:
        if values is not None:
            raise ValueError("--label is for class-conditional decoders; this one is unconditional")
        return None
    if values is None:
        return np.arange(n, dtype=np.int64) % len(sampler.class_names)
    names = [v if v in sampler.class_names or not v.lstrip("-").isdigit() else int(v) for v in values]
    return np.resize(contract.check_labels(names, len(names), sampler.class_names), n)


def _npy_bytes(images: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, images.astype(np.float32, copy=False), allow_pickle=False)
    return buf.getvalue()


def run(args: argparse.Namespace) -> None:
    """Do the work described by parsed ``args``; raise on any problem."""
    _check_args(args)
    sampler = Sampler(args.model, provider=args.provider)
    print(f"provider: {sampler.provider}")

    z = _load_latents(args.z) if args.z is not None else None
    start = time.perf_counter()
    if z is not None:
        images = sampler.decode(z, batch_size=args.batch_size,
                                labels=_labels(sampler, args.label, len(z) if z.ndim else 0))
    else:
        n = DEFAULT_N if args.n is None else args.n
        temperature = 1.0 if args.temperature is None else args.temperature
        labels = _labels(sampler, args.label, n)
        prior = (find_prior(sampler, args.prior, provider=args.provider)
                 if args.sampler == "fitted" else None)
        # the model's prior (a hierarchical model's per-group temperatures too), or the fitted one
        z = draw_latents(sampler, prior, args.sampler, n, args.seed, temperature, args.temperatures)
        images = sampler.decode(z, batch_size=args.batch_size, labels=labels)
    seconds = time.perf_counter() - start
    n = images.shape[0]
    if n == 0:
        raise ValueError("the latents file holds no rows; nothing to decode")
    h, w, c = sampler.image_shape
    rate = n / seconds if seconds > 0 else float("inf")
    print(f"decoded {n} images of {h}x{w}x{c} in {seconds * 1e3:.1f} ms ({rate:,.0f} images/s)")

    # Encode everything before writing anything.
    files: list[tuple[str, bytes, str]] = []
    if args.npy is not None:
        files.append((args.npy, _npy_bytes(images), f"float32 array {list(images.shape)}"))
    if args.out is not None:
        grid = image_grid(images, ncols=args.ncols, scale=args.scale)
        files.append((args.out, encode_png(grid), f"{grid.shape[1]}x{grid.shape[0]} px grid"))
    for path, data, what in files:
        write_bytes_atomic(path, data)
        print(f"wrote {path} ({what})")


def _fail(message: object, status: int) -> int:
    text = " ".join(str(message).split())  # always a single line
    print(f"keras-vae generate: error: {text}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except UsageError as exc:
        return _fail(exc, 2)
    except (ModelLoadError, ProviderUnavailableError, ValueError) as exc:
        return _fail(exc, 1)
    except OSError as exc:  # includes FileNotFoundError for the model
        return _fail(exc if exc.filename is None or exc.strerror is None
                     else f"{exc.strerror}: {exc.filename!r}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
