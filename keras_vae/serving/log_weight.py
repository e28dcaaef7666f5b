"""``log_weight.onnx``, the third graph of a hierarchical export, in onnxruntime.

``LogWeightModel`` runs it (``x``, ``epsilon`` -> ``log_weight``: the importance log weight of
one noise draw per row, ``keras_vae.core.hierarchy``); ``find_log_weight`` finds it beside
the decoder (or the encoder) and checks that it fits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from keras_vae.core import contract
from keras_vae.serving.onnx_model import (ModelLoadError, OnnxModel, finite_float32_array, parse_shape,
                                          static_dims)

__all__ = ["LogWeightModel", "find_log_weight", "check_groups_match"]


def check_groups_match(sampler, other: OnnxModel, what: str) -> None:
    """ModelLoadError when ``other`` (an encoder or log-weight file) names other latent groups
    than the decoder (a file without a ``latent_groups`` entry is not checked)."""
    if other.groups is not None and other.groups != sampler.groups:
        raise ModelLoadError(f"{what} {str(other.model_path)!r} has latent groups {other.groups} but "
                             f"the decoder {str(sampler.model_path)!r} has {sampler.groups}")


class LogWeightModel(OnnxModel):
    """``log_weight.onnx`` of a hierarchical export, in onnxruntime.

    Inputs ``x`` float32 ``[batch, H, W, C]`` and ``epsilon`` float32 ``[batch, D]``; output
    ``log_weight`` float32 ``[batch]`` (names in ``keras_vae.core.contract``). Arguments and
    errors as ``Sampler``'s.

    Attributes:
        model_path, provider, metadata: as for ``Sampler``.
        image_shape: ``(H, W, C)``; latent_dim: D.
    """

    def __init__(self, model_path: str | os.PathLike, provider: str = "auto",
                 intra_op_threads: int | None = None) -> None:
        session = self._open(model_path, provider, intra_op_threads)
        where = repr(str(self.model_path))
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        x_name, eps_name = contract.LOG_WEIGHT_INPUTS
        if (sorted(inputs) != sorted(contract.LOG_WEIGHT_INPUTS) or len(inputs[x_name].shape) != 4
                or len(inputs[eps_name].shape) != 2 or contract.LOG_WEIGHT_OUTPUT not in outputs):
            raise ModelLoadError(
                f"{where} is not a log-weight graph: expected inputs {x_name} [batch, H, W, C] and "
                f"{eps_name} [batch, D], and an output {contract.LOG_WEIGHT_OUTPUT} [batch]; got "
                f"inputs {[(i.name, i.shape) for i in inputs.values()]}, outputs {outputs}")
        for name in contract.LOG_WEIGHT_INPUTS:
            if inputs[name].type != "tensor(float)":
                raise ModelLoadError(f"{where}: input {name} must be float32, got {inputs[name].type}")
        shape = (static_dims(inputs[x_name].shape[1:])
                 or parse_shape(self.metadata.get(contract.IMAGE_SHAPE)))
        dim = inputs[eps_name].shape[1]
        if not isinstance(dim, int):
            try:
                dim = int(self.metadata.get(contract.LATENT_DIM, ""))
            except ValueError:
                dim = None
        if shape is None or not dim:
            raise ModelLoadError(f"{where}: the image shape or the noise size is neither in the "
                                 "graph nor in the metadata")
        self.image_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.latent_dim: int = int(dim)
        probe = self._run(np.zeros((1, *shape), np.float32), np.zeros((1, self.latent_dim), np.float32))
        if probe.shape != (1,):
            raise ModelLoadError(f"{where}: output {contract.LOG_WEIGHT_OUTPUT} must be [batch]; "
                                 f"got shape {list(probe.shape)} for one row")

    def _run(self, x: np.ndarray, epsilon: np.ndarray) -> np.ndarray:
        x_name, eps_name = contract.LOG_WEIGHT_INPUTS
        (out,) = self._session.run([contract.LOG_WEIGHT_OUTPUT], {x_name: x, eps_name: epsilon})
        return np.asarray(out, np.float32).reshape(-1)

    def log_weights(self, x: Any, epsilon: Any, batch_size: int = 4096) -> np.ndarray:
        """float64 ``[M]`` log weights of images ``x`` ``[M, H, W, C]`` with noise ``[M, D]``.

        Raises ValueError naming the expected shape for a wrong shape, count or dtype.
        """
        h, w, c = self.image_shape
        images = finite_float32_array(x, f"images must be an array of shape [n, {h}, {w}, {c}]",
                                      lambda s: len(s) == 4 and tuple(s[1:]) == self.image_shape)
        noise = finite_float32_array(epsilon, f"epsilon must be a 2-D array of shape "
                                     f"[{len(images)}, {self.latent_dim}]",
                                     lambda s: len(s) == 2 and s == (len(images), self.latent_dim))
        parts = [self._run(images[i : i + batch_size], noise[i : i + batch_size])
                 for i in range(0, len(images), batch_size)]
        return (np.concatenate(parts) if parts else np.zeros((0,), np.float32)).astype(np.float64)

    def check_pairs_with(self, sampler) -> None:
        """ModelLoadError unless this graph fits the decoder of ``sampler`` (shapes and groups)."""
        if (self.latent_dim, self.image_shape) != (sampler.latent_dim, sampler.image_shape):
            raise ModelLoadError(
                f"log-weight graph {str(self.model_path)!r} (images {list(self.image_shape)}, noise "
                f"{self.latent_dim}) does not fit decoder {str(sampler.model_path)!r} (images "
                f"{list(sampler.image_shape)}, latent_dim {sampler.latent_dim})")
        check_groups_match(sampler, self, "log-weight graph")

    def __repr__(self) -> str:
        return (f"LogWeightModel({str(self.model_path)!r}, provider={self.provider!r}, "
                f"image_shape={self.image_shape}, latent_dim={self.latent_dim})")


def find_log_weight(sampler, encoder=None, path: str | os.PathLike | None = None,
                    provider: str = "auto", intra_op_threads: int | None = None
                    ) -> LogWeightModel | None:
    """The log-weight graph of a hierarchical decoder, checked against it, or None.

    ``path`` when given (FileNotFoundError if missing), else ``log_weight.onnx`` beside the
    decoder, else beside the encoder. None for a single-latent decoder or when no file is there.
    """
    if getattr(sampler, "groups", None) is None:
        return None
    if path is None:
        folders = [Path(sampler.model_path).parent]
        if encoder is not None:
            folders.append(Path(encoder.model_path).parent)
        found = [f / contract.LOG_WEIGHT_FILE for f in folders if (f / contract.LOG_WEIGHT_FILE).is_file()]
        if not found:
            return None
        path = found[0]
    model = LogWeightModel(path, provider=provider, intra_op_threads=intra_op_threads)
    model.check_pairs_with(sampler)
    return model
