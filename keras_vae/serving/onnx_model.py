"""One onnxruntime session over an exported ONNX file, and the checks both wrappers share.

``OnnxModel`` opens the session (choosing the execution provider), reads the
file's metadata (``keras_vae.core.contract``'s keys) and is the base of
``Sampler`` (the decoder) and
``Encoder``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from keras_vae.core import contract, hierarchy

__all__ = ["OnnxModel", "ModelLoadError", "ProviderUnavailableError", "PROVIDERS", "read_latent_groups",
           "finite_float32_array", "parse_int", "parse_shape", "static_dims"]

PROVIDERS = ("auto", "cpu", "cuda")
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


class ModelLoadError(RuntimeError):
    """The model file is not a usable decoder (invalid ONNX, wrong signature)."""


class ProviderUnavailableError(RuntimeError):
    """The requested execution provider is not available on this machine."""


def _choose_providers(provider: str) -> list[str]:
    """Return the onnxruntime provider list for ``"auto"``, ``"cpu"`` or ``"cuda"``."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}; got {provider!r}")
    available = ort.get_available_providers()
    if provider == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if provider == "cuda":
        raise ProviderUnavailableError(
            "provider 'cuda' requested but onnxruntime offers no CUDAExecutionProvider "
            f"here (available: {', '.join(available)}); install onnxruntime-gpu with "
            "a matching CUDA runtime, or use --provider cpu"
        )
    return [_CPU]


def _open_session(model_path: str | os.PathLike, provider: str,
                  intra_op_threads: int | None) -> tuple[Path, ort.InferenceSession]:
    """One onnxruntime session for ``model_path``; raises the errors ``Sampler`` documents."""
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {str(path)!r}")
    providers = _choose_providers(provider)
    options = ort.SessionOptions()
    # Idle onnxruntime worker threads sleep instead of spinning, so they do
    # not take CPU from the web server's event loop between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if intra_op_threads is not None:
        options.intra_op_num_threads = int(intra_op_threads)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(
            f"cannot load {str(path)!r} as an ONNX model: {str(exc).strip()}"
        ) from exc
    if provider == "cuda" and session.get_providers()[0] != _CUDA:
        raise ProviderUnavailableError(
            "provider 'cuda' requested but onnxruntime could not initialise "
            "CUDAExecutionProvider (check the CUDA and cuDNN libraries)"
        )
    return path, session


def finite_float32_array(values: Any, expected: str, shape_ok: Callable[[tuple], bool],
                          shape_condition: str = "") -> np.ndarray:
    """``values`` as a C-contiguous float32 array, or a ValueError that starts with ``expected``.

    Refuses ragged or non-numeric input (booleans too), a shape ``shape_ok`` rejects,
    and NaN or inf (including values beyond float32's range).
    """
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{expected} of numbers; got a ragged or invalid array ({exc})") from None
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"{expected} of real numbers; got dtype {arr.dtype}")
    if not shape_ok(arr.shape):
        raise ValueError(f"{expected}{shape_condition}; got shape {list(arr.shape)}")
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{expected} of finite values; got NaN or inf (or values beyond float32 range)"
        )
    return arr


def parse_int(value: str | None) -> int | None:
    try:
        result = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return result if result > 0 else None


def parse_shape(value: str | None) -> tuple[int, ...] | None:
    try:
        shape = json.loads(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        return tuple(shape)
    return None


def static_dims(shape: list[Any]) -> tuple[int, ...] | None:
    """Graph dims as ints, or None if any is symbolic/unknown."""
    if all(isinstance(d, int) and d > 0 for d in shape):
        return tuple(shape)
    return None


def read_latent_groups(metadata: dict[str, str], where: str):
    """A hierarchical file's latent groups (``keras_vae.core.hierarchy``), None for one latent.

    Raises ModelLoadError when the ``model``, ``latent_groups`` or ``latent_dim`` entries are
    malformed or disagree, and for a hierarchical file that also holds a ``prior``.
    """
    try:
        if not hierarchy.is_hierarchical(metadata):
            return None
        latent_dim = parse_int(metadata.get(contract.LATENT_DIM))
        if latent_dim is None:
            raise ValueError(f"a hierarchical model needs its {contract.LATENT_DIM!r} metadata entry "
                             "(D, the sum of the group sizes) as a positive integer")
        groups = hierarchy.decode_groups(metadata.get(contract.LATENT_GROUPS), latent_dim)
    except ValueError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
    if metadata.get(contract.PRIOR) is not None:
        raise ModelLoadError(f"{where}: a hierarchical model takes standard-normal noise, so it "
                             f"cannot also hold a {contract.PRIOR!r} entry")
    return groups


class OnnxModel:
    """What both wrappers of an exported graph hold: one session and the file's metadata."""

    def _open(self, model_path: str | os.PathLike, provider: str,
              intra_op_threads: int | None) -> ort.InferenceSession:
        path, session = _open_session(model_path, provider, intra_op_threads)
        self.model_path = path
        self._session = session
        self.provider: str = session.get_providers()[0]
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
        self.likelihood: str = self.metadata.get(contract.LIKELIHOOD, "unknown")
        self.precision: str = self.metadata.get(contract.PRECISION, "fp32")
        # a hierarchical export's latent groups, top-down (None: a single latent)
        self.groups = read_latent_groups(self.metadata, repr(str(path)))
        return session


def input_width(graph_input, metadata: dict[str, str], where: str) -> int:
    """The width of a [batch, width] graph input (``latent_dim``), from the graph's shape or the
    metadata, which must agree; ModelLoadError when neither gives it."""
    graph_dim = graph_input.shape[1] if isinstance(graph_input.shape[1], int) else None
    meta_dim = parse_int(metadata.get(contract.LATENT_DIM))
    if graph_dim and meta_dim and graph_dim != meta_dim:
        raise ModelLoadError(f"{where}: metadata latent_dim={meta_dim} disagrees with the graph "
                             f"input shape {graph_input.shape}")
    if not (graph_dim or meta_dim):
        raise ModelLoadError(f"{where}: latent_dim is neither in the metadata nor in the input shape")
    return graph_dim or meta_dim


def decoded_image_shape(probe: np.ndarray, output, metadata: dict[str, str], where: str) -> tuple:
    """(H, W, C) of a decoded probe [1, H, W, C], checked against the metadata's ``image_shape``
    and the graph output's static shape; ModelLoadError when they disagree."""
    if probe.ndim != 4:
        raise ModelLoadError(f"{where}: output {output.name} must be [batch, H, W, C], "
                             f"got shape {list(probe.shape)}")
    shape = tuple(int(d) for d in probe.shape[1:])
    for declared, source in ((parse_shape(metadata.get(contract.IMAGE_SHAPE)), "metadata image_shape"),
                             (static_dims(output.shape[1:]), "graph output shape")):
        if declared is not None and declared != shape:
            raise ModelLoadError(f"{where}: {source} {list(declared)} disagrees with the decoded "
                                 f"shape {list(shape)}")
    return shape
