"""Write the latent-space explorer as a static folder: ``keras-vae explore``.

The folder holds the page, its settings, onnxruntime-web and the model files,
and nothing else; any static file host serves it (no Python on the server)::

    site/index.html
    site/explorer/main.js, ... (the page's ES modules), style.css, config.json
    site/explorer/ort/ort.wasm.min.js, ort-wasm-simd-threaded.mjs, ort-wasm-simd-threaded.wasm
    site/models/decoder.onnx
    site/models/encoder.onnx        (with --encoder)
    site/models/prior.onnx          (a prior fitted after training, beside the decoder)

onnxruntime-web must be installed (``npm ci`` in the repository root; ``make
setup`` runs it): a static page has no server to fall back to.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

from keras_vae.serving import explorer
from keras_vae.core.files import write_bytes_atomic

PROG = "keras-vae explore"

EPILOG = """\
examples:
  keras-vae explore runs/mnist/decoder.onnx --encoder runs/mnist/encoder.onnx --out site/
  python -m http.server --directory site 8000 --bind 127.0.0.1   # then open http://127.0.0.1:8000/
  keras-vae explore decoder.onnx --out site/ --overwrite  # replace an earlier export

The page decodes with onnxruntime-web in one WebAssembly thread; for threads
(?threads=2), the host must send Cross-Origin-Opener-Policy: same-origin and
Cross-Origin-Embedder-Policy: require-corp.
"""


class ExportError(Exception):
    """Something the user can fix: a bad path, a missing package, a non-empty --out."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Write the latent-space explorer (the page served at / by "
        "keras-vae serve) as a self-contained static folder: the page, onnxruntime-web and "
        "the model files. Serve it with any static file host.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("decoder", help="path to decoder.onnx (keras-vae export --out)")
    p.add_argument("--encoder", default=None,
                   help="path to encoder.onnx (keras-vae export --encoder-out): adds the "
                        "draw-or-drop panel")
    p.add_argument("--out", required=True, help="folder to write (created if missing)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing, non-empty --out (replacing the explorer's "
                        "files there; other files are left alone)")
    return p


def site_files(decoder: Path, encoder: Path | None) -> dict[str, bytes | Path]:
    """The folder's contents: relative path -> bytes, or a file to copy.

    Loads the models (onnxruntime) to check them and to read the shapes and
    the prior for ``explorer/config.json``. Raises ``ExportError``.
    """
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import ModelLoadError, Sampler

    try:
        ort_dir = explorer.require_ort_web_dir()
    except explorer.MissingAssetsError as exc:
        raise ExportError(str(exc)) from None
    try:
        sampler = Sampler(decoder, provider="cpu", intra_op_threads=1)
        if encoder is not None:
            Encoder(encoder, provider="cpu", intra_op_threads=1).check_pairs_with(sampler)
    except (OSError, ModelLoadError) as exc:
        raise ExportError(str(exc)) from None
    from keras_vae.serving.hierarchical import find_log_weight
    try:  # a hierarchical model's log-weight graph, beside the decoder or the encoder
        log_weight = find_log_weight(sampler, None if encoder is None else Encoder(
            encoder, provider="cpu", intra_op_threads=1), provider="cpu", intra_op_threads=1)
    except (OSError, ModelLoadError) as exc:
        raise ExportError(str(exc)) from None
    from keras_vae.serving.fitted import find_prior
    try:  # a prior fitted after training, beside the decoder
        prior = find_prior(sampler, provider="cpu", intra_op_threads=1)
    except (OSError, ModelLoadError) as exc:
        raise ExportError(str(exc)) from None
    config = explorer.explorer_config(sampler, encoder=encoder is not None, ort=True,
                                      server=False, log_weight=log_weight is not None,
                                      fitted_prior=prior)
    files: dict[str, bytes | Path] = {
        "index.html": explorer.STATIC_DIR / "index.html",
        "explorer/config.json": (json.dumps(config, separators=(",", ":")) + "\n").encode(),
        **{f"explorer/{name}": explorer.STATIC_DIR / name for name in explorer.PAGE_ASSETS},
        **{f"explorer/ort/{name}": ort_dir / name for name in explorer.ORT_FILES},
        "models/decoder.onnx": decoder,
    }
    if encoder is not None:
        files["models/encoder.onnx"] = encoder
    if log_weight is not None:
        files["models/log_weight.onnx"] = log_weight.model_path
    if prior is not None:
        files["models/prior.onnx"] = prior.model_path
    return files


def write_site(decoder: str | os.PathLike, out: str | os.PathLike, encoder: str | os.PathLike | None = None,
               overwrite: bool = False) -> dict[str, int]:
    """Write the static explorer for ``decoder`` (and ``encoder``) into ``out``.

    A new folder appears whole (written beside it, then renamed); into an
    existing one (empty, or with ``overwrite``) every file is written
    atomically, and an ``models/encoder.onnx`` left by an earlier export is
    removed when there is no encoder now. Returns relative path -> bytes
    written. Raises ``ExportError``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"--out {str(out)!r} is not empty; pass --overwrite to write the "
                          f"explorer's files into it, or choose a new folder")
    files = site_files(Path(decoder), Path(encoder) if encoder is not None else None)
    fresh = not out.exists()
    target = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp" if fresh else out
    if fresh and not out.parent.is_dir():
        raise ExportError(f"the folder {str(out.parent)!r} that should hold --out does not exist")
    sizes = {}
    try:
        for relative, content in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            data = content if isinstance(content, bytes) else content.read_bytes()
            write_bytes_atomic(path, data)
            sizes[relative] = len(data)
        if fresh:
            os.replace(target, out)
    except BaseException:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
        raise
    stale = out / "models" / "encoder.onnx"
    if encoder is None and stale.is_file():
        stale.unlink()
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sizes = write_site(args.decoder, args.out, encoder=args.encoder, overwrite=args.overwrite)
    except (ExportError, OSError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    for relative, size in sizes.items():
        print(f"{size:>12,}  {Path(args.out) / relative}")
    print(f"{sum(sizes.values()):>12,}  bytes in {len(sizes)} files")
    print(f"serve it with: python -m http.server --directory {args.out} 8000 --bind 127.0.0.1 "
          f"(then open http://127.0.0.1:8000/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
