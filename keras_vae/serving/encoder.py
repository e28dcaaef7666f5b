"""Parameters of q(z|x) from an exported encoder (``encoder.onnx``) with onnxruntime."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from keras_vae.core import contract
from keras_vae.serving.onnx_model import (ModelLoadError, OnnxModel, finite_float32_array,
                                          parse_shape, static_dims)
from keras_vae.serving.labels import check_model_labels, read_label_input
from keras_vae.serving.sampler import Sampler

__all__ = ["Encoder"]


class Encoder(OnnxModel):
    """Parameters of q(z|x) from an exported encoder (``encoder.onnx``) with onnxruntime.

    The graph maps ``x`` float32 ``[batch, H, W, C]`` to ``z_mean`` and
    ``z_log_var``, float32 ``[batch, latent_dim]`` each (names in
    ``keras_vae.core.contract``). Arguments and errors are those of ``Sampler``.

    Attributes:
        model_path, provider, metadata: as for ``Sampler``.
        image_shape: ``(H, W, C)`` of one input image.
        latent_dim: size of one latent vector.
        likelihood: the decoder's likelihood from the metadata (``"unknown"`` without).
    """

    def __init__(self, model_path: str | os.PathLike, provider: str = "auto",
                 intra_op_threads: int | None = None) -> None:
        session = self._open(model_path, provider, intra_op_threads)
        path = self.model_path
        where = repr(str(path))
        inputs, outputs = session.get_inputs(), session.get_outputs()
        inputs, self.label_name, self.class_names = read_label_input(inputs, self.metadata, where)
        names = [o.name for o in outputs]
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or sorted(names) != sorted(contract.ENCODER_OUTPUTS):
            raise ModelLoadError(
                f"{where} is not an encoder: expected one input x [batch, H, W, C] and outputs "
                f"{list(contract.ENCODER_OUTPUTS)}; got inputs {[(i.name, i.shape) for i in inputs]}, "
                f"outputs {names}")
        self.input_name: str = inputs[0].name
        shape = static_dims(inputs[0].shape[1:]) or parse_shape(self.metadata.get(contract.IMAGE_SHAPE))
        if shape is None:
            raise ModelLoadError(f"{where}: the image shape is neither in the graph nor in the metadata")
        self.image_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        z_mean, _ = self._run(np.zeros((1, *shape), np.float32), np.zeros(1, np.int64))
        self.latent_dim: int = int(z_mean.shape[1])

    def _run(self, x: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        feed = {self.input_name: x}
        if self.label_name is not None:
            feed[self.label_name] = labels
        z_mean, z_log_var = self._session.run(list(contract.ENCODER_OUTPUTS), feed)
        return np.asarray(z_mean, np.float32), np.asarray(z_log_var, np.float32)

    def validate_images(self, x: Any) -> np.ndarray:
        """Check ``x`` and return it as a C-contiguous float32 ``[n, H, W, C]`` array.

        Raises ``ValueError`` saying what was expected when ``x`` is not a
        numeric array of that shape, holds NaN/inf, or (Bernoulli decoder)
        holds values outside [0, 1].
        """
        h, w, c = self.image_shape
        expected = f"images must be an array of shape [n, {h}, {w}, {c}]"
        arr = finite_float32_array(
            x, expected, lambda shape: len(shape) == 4 and shape[1:] == self.image_shape and shape[0] >= 1,
            shape_condition=" with n >= 1")
        if self.likelihood == "bernoulli" and (arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError(f"pixel values must be in [0, 1] for this Bernoulli model; got values in "
                             f"[{arr.min():g}, {arr.max():g}]")
        return arr

    def encode(self, x: Any, labels: Any = None, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(z_mean, z_log_var) of q(z|x), float32 ``[n, latent_dim]`` each, for images ``[n, H, W, C]``.

        A class-conditional encoder q(z|x, y) needs ``labels`` (see ``Sampler.validate_labels``).
        """
        arr = self.validate_images(x)
        classes = check_model_labels(self.class_names, labels, len(arr))
        parts = [self._run(arr[i : i + batch_size],
                           None if classes is None else classes[i : i + batch_size])
                 for i in range(0, len(arr), batch_size)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def check_pairs_with(self, sampler: Sampler) -> None:
        """Raises ModelLoadError unless this encoder and the decoder of ``sampler`` fit together."""
        if self.class_names != sampler.class_names:
            raise ModelLoadError(
                f"encoder {str(self.model_path)!r} (classes {self.class_names}) does not fit decoder "
                f"{str(sampler.model_path)!r} (classes {sampler.class_names})")
        if (self.latent_dim, self.image_shape) != (sampler.latent_dim, sampler.image_shape):
            raise ModelLoadError(
                f"encoder {str(self.model_path)!r} (images {list(self.image_shape)}, latent_dim "
                f"{self.latent_dim}) does not fit decoder {str(sampler.model_path)!r} (images "
                f"{list(sampler.image_shape)}, latent_dim {sampler.latent_dim})")

    def __repr__(self) -> str:
        return (f"Encoder({str(self.model_path)!r}, provider={self.provider!r}, "
                f"image_shape={self.image_shape}, latent_dim={self.latent_dim})")
