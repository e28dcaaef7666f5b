"""Sampling from an exported VAE decoder with onnxruntime.

The decoder file (``decoder.onnx``, written by ``keras-vae export`` or ``pipelines/export.py``) maps
latents ``z`` (float32 ``[batch, latent_dim]``) to pixel means ``x_mean``
(float32 ``[batch, H, W, C]``). Its metadata (all strings) carries
``latent_dim``, ``image_shape`` (JSON list), ``likelihood`` and provenance
fields; when metadata is missing the graph's shapes are used instead. A model
trained with a learned mixture prior also carries ``prior``, and latents are
then drawn from that mixture. Names, keys and the prior's encoding are
``keras_vae.core.contract``'s, which the exporter in ``keras_vae`` shares.

``Sampler`` wraps one ``onnxruntime.InferenceSession``. The session is
created once; afterwards the object holds no mutable state, and
onnxruntime's ``run`` is thread-safe, so one Sampler may be shared by many
threads.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from keras_vae.core import contract
from keras_vae.serving.labels import check_model_labels, read_label_input
from keras_vae.serving.onnx_model import (PROVIDERS, ModelLoadError, OnnxModel, ProviderUnavailableError,
                                          decoded_image_shape, finite_float32_array, input_width)

__all__ = ["Sampler", "ModelLoadError", "ProviderUnavailableError", "PROVIDERS"]


class Sampler(OnnxModel):
    """Decode latents and sample images with an ONNX VAE decoder.

    Args:
        model_path: path to ``decoder.onnx``.
        provider: ``"auto"`` (CUDA when onnxruntime offers it, else CPU),
            ``"cpu"``, or ``"cuda"`` (raises ``ProviderUnavailableError``
            when CUDA is not available).
        intra_op_threads: onnxruntime intra-op thread count; ``None`` lets
            onnxruntime choose (one per physical core).

    Attributes:
        model_path: the model file, as a ``pathlib.Path``.
        provider: the execution provider the session actually uses, e.g.
            ``"CPUExecutionProvider"``.
        latent_dim: size of one latent vector.
        image_shape: ``(H, W, C)`` of one decoded image.
        likelihood: the metadata's ``likelihood`` (e.g. ``"bernoulli"``), or ``"unknown"``.
        precision: ``"fp32"``, or ``"int8"`` for a quantized decoder (from the metadata).
        metadata: every metadata entry of the model file, as ``str -> str``.
        input_name, output_name: graph tensor names (normally ``z``, ``x_mean``).
        logits_name: ``"logits"`` when a Bernoulli decoder has that output
            (``decode_logits``), else None.
        params_name: ``"x_params"`` when an 8-bit decoder outputs p(x|z)'s parameters, else None.

    Raises:
        FileNotFoundError: the model file does not exist.
        ModelLoadError: the file is not a loadable decoder.
        ProviderUnavailableError: ``provider="cuda"`` without CUDA.
        ValueError: an unknown ``provider`` string.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        provider: str = "auto",
        intra_op_threads: int | None = None,
    ) -> None:
        self._open(model_path, provider, intra_op_threads)
        self._read_signature()

    def _read_signature(self) -> None:
        """Set input/output names, ``latent_dim`` and ``image_shape``; probe once."""
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        where = repr(str(self.model_path))
        inputs, self.label_name, self.class_names = read_label_input(inputs, self.metadata, where)
        if len(inputs) != 1 or len(inputs[0].shape) != 2:
            raise ModelLoadError(
                f"{where} is not a decoder: expected one input z of shape "
                f"[batch, latent_dim], got {[(i.name, i.shape) for i in inputs]}"
            )
        if inputs[0].type != "tensor(float)":
            raise ModelLoadError(f"{where}: input must be float32, got {inputs[0].type}")
        names = [o.name for o in outputs]
        out = (outputs[names.index(contract.DECODER_OUTPUT)] if contract.DECODER_OUTPUT in names
               else outputs[0])
        self.input_name: str = inputs[0].name
        self.output_name: str = out.name
        # What scorers read where the export has it (files exported before have none): a Bernoulli
        # decoder's logits (contract.DECODER_LOGITS), an 8-bit one's parameters (DECODER_PARAMS).
        second = contract.DECODER_LOGITS if self.likelihood == "bernoulli" else contract.DECODER_PARAMS
        second = second if second in names and out.name != second else None
        self.logits_name: str | None = second if self.likelihood == "bernoulli" else None
        self.params_name: str | None = None if self.likelihood == "bernoulli" else second

        latent_dim = input_width(inputs[0], self.metadata, where)
        self.latent_dim: int = latent_dim
        try:
            self.prior = contract.decode_prior(self.metadata.get(contract.PRIOR), latent_dim)
        except ValueError as exc:
            raise ModelLoadError(f"{where}: {exc}") from None

        # One decode of z = 0 checks the model runs and gives the true output shape.
        probe = self._run(np.zeros((1, latent_dim), dtype=np.float32), np.zeros(1, np.int64))
        self.image_shape: tuple[int, int, int] = decoded_image_shape(probe, out, self.metadata, where)
        if second is not None:  # the logits have x_mean's shape, the parameters its H and W
            extra = self._run(np.zeros((1, latent_dim), dtype=np.float32), np.zeros(1, np.int64), second)
            if extra.shape[:3] != probe.shape[:3] or (self.logits_name and extra.shape != probe.shape):
                raise ModelLoadError(f"{where}: output {second} has shape {list(extra.shape)}, "
                                     f"which does not fit {self.output_name}'s, {list(probe.shape)}")

    def _run(self, z: np.ndarray, labels: np.ndarray | None = None,
             output: str | None = None) -> np.ndarray:
        feed = {self.input_name: z}
        if self.label_name is not None:
            feed[self.label_name] = labels
        (x,) = self._session.run([output or self.output_name], feed)
        return np.asarray(x, dtype=np.float32)

    @property
    def conditional(self) -> bool:
        """True for a class-conditional decoder p(x|z, y): ``decode`` and ``sample`` take labels."""
        return self.class_names is not None

    def validate_labels(self, labels: Any, n: int) -> np.ndarray | None:
        """int64 ``[n]`` labels for a conditional decoder (None for an unconditional one).

        ``labels`` is one class for all n rows or one per row, each an index or a class
        name (``contract.check_labels``). Raises ``ValueError`` naming the valid classes
        when labels are missing, unknown or out of range, or given to an unconditional model.
        """
        return check_model_labels(self.class_names, labels, n)

    def validate_latents(self, z: Any) -> np.ndarray:
        """Check ``z`` and return it as a C-contiguous float32 ``[n, latent_dim]`` array.

        Accepts any array-like of real numbers (ints or floats; nested lists
        too). Raises ``ValueError`` saying what was expected and what was given
        when ``z`` is not 2-D, has the wrong width, is not numeric, or holds
        NaN/inf (including values too large for float32).
        """
        expected = f"z must be a 2-D array of shape [n, {self.latent_dim}]"
        return finite_float32_array(
            z, expected, lambda shape: len(shape) == 2 and shape[1] == self.latent_dim)

    def decode_logits(self, z: Any, batch_size: int | None = None, labels: Any = None) -> np.ndarray:
        """The logits of a Bernoulli decoder with a ``logits`` output: float32 ``[n, H, W, C]``.

        Arguments as ``decode``, whose probabilities are their sigmoid. Raises
        ``ValueError`` when the file has no logits (``logits_name`` is None).
        """
        if self.logits_name is None:
            raise ValueError(f"{str(self.model_path)!r} has no {contract.DECODER_LOGITS} output")
        return self.decode(z, batch_size, labels, output=self.logits_name)

    def decode(self, z: Any, batch_size: int | None = None, labels: Any = None,
               output: str | None = None) -> np.ndarray:
        """Decode latents into pixel means.

        Args:
            z: ``[n, latent_dim]`` real numbers (see ``validate_latents``).
            batch_size: rows per onnxruntime call; ``None`` decodes all at once.
            labels: a conditional decoder's classes (``validate_labels``).
            output: the graph output to fetch (default: ``output_name``).

        Returns:
            float32 ``[n, H, W, C]`` pixel means (probabilities in [0, 1] for a
            Bernoulli decoder, unclipped real values for a Gaussian one).
        """
        arr = self.validate_latents(z)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        n = arr.shape[0]
        if n == 0:
            return np.zeros((0, *self.image_shape), dtype=np.float32)
        classes = self.validate_labels(labels, n)
        step = n if batch_size is None else batch_size
        parts = [self._run(arr[i : i + step], None if classes is None else classes[i : i + step],
                           output)
                 for i in range(0, n, step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def rows(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Checked z ``[n, latent_dim]`` (and labels ``[n]``) as one float32 array for ``decode_rows``.

        A conditional decoder's label becomes a last column (classes are exact in
        float32), so that one array carries a request's rows through the micro-batchers.
        """
        if self.label_name is None:
            return z
        return np.hstack([z, self.validate_labels(labels, len(z)).astype(np.float32)[:, None]])

    def decode_rows(self, rows: np.ndarray) -> np.ndarray:
        """``decode`` of the rows that ``rows`` made: ``[n, latent_dim (+ 1)]`` -> ``[n, H, W, C]``."""
        if self.label_name is None:
            return self.decode(rows)
        return self.decode(rows[:, :-1], labels=rows[:, -1].astype(np.int64))

    def latents(self, n: int, seed: int | None = None, temperature: float = 1.0) -> np.ndarray:
        """Draw ``z`` from the prior, spread scaled by ``temperature``: float32 ``[n, latent_dim]``.

        ``z ~ N(0, T^2 I)``; with a mixture prior, a component c is picked by
        its weight and ``z ~ N(mu_c, T^2 sigma_c^2)``. This is
        ``keras_vae.core.contract.draw_latents``: the same seed gives the same
        latents here and in ``keras_vae.VAE.sample_latents`` (``seed=None``
        draws fresh randomness). Raises ``ValueError`` for n < 1, a negative
        seed, or a temperature outside [0, ``contract.MAX_TEMPERATURE``].
        """
        return contract.draw_latents(n, self.latent_dim, self.prior, seed, temperature)

    def sample(
        self,
        n: int,
        seed: int | None = None,
        temperature: float = 1.0,
        batch_size: int = 256,
        labels: Any = None,
    ) -> np.ndarray:
        """Sample ``n`` images: decode ``latents(n, seed, temperature)`` in batches.

        Returns float32 ``[n, H, W, C]`` pixel means. The latents are drawn
        all at once, so the result does not depend on ``batch_size``; a
        conditional decoder's ``labels`` (``validate_labels``) do not change them.
        """
        classes = self.validate_labels(labels, n) if isinstance(n, int) and n >= 1 else None
        return self.decode(self.latents(n, seed, temperature), batch_size=batch_size, labels=classes)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: provider, shapes, likelihood, metadata."""
        return {
            "provider": self.provider,
            "latent_dim": self.latent_dim,
            "image_shape": list(self.image_shape),
            "likelihood": self.likelihood,
            "precision": self.precision,
            "prior": ("standard" if self.prior is None
                      else f"mixture of {self.prior.components} Gaussians"),
            **({} if self.class_names is None else {"class_names": list(self.class_names)}),
            # The prior's arrays are long; "prior" above summarises them.
            "metadata": {k: v for k, v in self.metadata.items() if k != contract.PRIOR},
        }

    def __repr__(self) -> str:
        return (
            f"Sampler({str(self.model_path)!r}, provider={self.provider!r}, "
            f"latent_dim={self.latent_dim}, image_shape={self.image_shape})"
        )
