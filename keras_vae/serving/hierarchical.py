"""Hierarchical (multi-group latent) exports in onnxruntime: the log-weight graph and scoring.

The decoder and encoder of a hierarchical export have the single-latent signatures, in
noise space (``keras_vae.core.hierarchy``), so ``Sampler`` and ``Encoder`` serve them;
``Sampler.groups`` holds the latent groups. What is new is here:

* ``LogWeightModel``: ``log_weight.onnx`` (``x``, ``epsilon`` -> ``log_weight``), the
  importance log weight of one noise draw per row;
* ``find_log_weight``: that file, beside the decoder (or the encoder);
* ``hierarchical_scores``: log p(x), the ELBO and the reconstruction error from the three
  files, with the noise of ``keras_vae.core.likelihood``;
* ``latents``: noise for ``/v1/generate`` and ``keras-vae generate``, with per-group
  temperatures;
* ``with_group_temperatures``: the ``/v1/generate`` body with its ``temperatures`` field.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from keras_vae.core import contract, hierarchy
from keras_vae.core.anomaly import ImageScores
from keras_vae.serving.onnx_model import (ModelLoadError, OnnxModel, finite_float32_array, parse_shape,
                                          static_dims)

__all__ = ["LogWeightModel", "find_log_weight", "hierarchical_scores", "latents", "read_groups",
           "with_group_temperatures", "check_groups_match", "score_unavailable"]


def read_groups(metadata: dict[str, str], latent_dim: int, where: str):
    """The decoder's latent groups (None for a single-latent file); ModelLoadError if malformed."""
    try:
        groups = hierarchy.read_groups(metadata, latent_dim)
    except ValueError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
    if groups is not None and metadata.get(contract.PRIOR) is not None:
        raise ModelLoadError(f"{where}: a hierarchical decoder takes standard-normal noise, so it "
                             f"cannot also hold a {contract.PRIOR!r} entry")
    return groups


def latents(sampler, n: int, seed: int | None, temperature: float, temperatures=None) -> np.ndarray:
    """Noise (hierarchical) or latents for ``n`` samples: float32 ``[n, latent_dim]``.

    ``temperatures`` (one per group, top-down) multiply ``temperature`` group by group; a
    single-latent model refuses them (ValueError).
    """
    if sampler.groups is None:
        if temperatures is not None:
            raise ValueError("temperatures (one per latent group) apply to hierarchical models "
                             "only; this model has a single latent: use temperature")
        return contract.draw_latents(n, sampler.latent_dim, sampler.prior, seed, temperature)
    return hierarchy.draw_noise(n, sampler.groups, seed, temperature, temperatures)


def check_groups_match(sampler, other: OnnxModel, what: str) -> None:
    """ModelLoadError when ``other`` (an encoder or log-weight file) names other groups than
    the decoder (a file without the ``latent_groups`` entry is not checked)."""
    if other.metadata.get(contract.LATENT_GROUPS) is None:
        return
    try:
        groups = hierarchy.read_groups(other.metadata, sampler.latent_dim)
    except ValueError as exc:
        raise ModelLoadError(f"{what} {str(other.model_path)!r}: {exc}") from None
    if groups != sampler.groups:
        raise ModelLoadError(f"{what} {str(other.model_path)!r} has latent groups {groups} but the "
                             f"decoder {str(sampler.model_path)!r} has {sampler.groups}")


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


def score_unavailable(sampler) -> str:
    """Why ``/v1/score`` cannot score a hierarchical model served without its log-weight graph."""
    folder = Path(sampler.model_path).parent
    return (f"this hierarchical model is scored by its {contract.LOG_WEIGHT_FILE} graph, which "
            f"the server did not find beside the decoder ({folder}) or the encoder: export it "
            "there and restart the server")


def hierarchical_scores(encoder, decoder, log_weight: LogWeightModel, x: np.ndarray,
                        num_samples: int = 100, batch_size: int = 100, seed: int = 0,
                        progress: Callable[[int], None] | None = None) -> ImageScores:
    """log p(x), the ELBO (nats) and the reconstruction MSE of images x ``[N, H, W, C]`` from a
    hierarchical export's three files (``keras_vae.core.hierarchy.score_images``).

    Raises ValueError for images of the wrong shape or range (``Encoder.validate_images``).
    """
    images = encoder.validate_images(x)
    return hierarchy.score_images(
        images, log_weight.log_weights, encoder.encode,
        lambda z: decoder.decode(z, batch_size=4096), decoder.latent_dim, num_samples,
        batch_size, seed, progress)


def with_group_temperatures(GenerateRequest, groups):
    """The ``/v1/generate`` body of a hierarchical model: ``GenerateRequest`` with
    ``temperatures``, one number in [0, MAX_TEMPERATURE] per latent group (top-down)."""
    count = len(groups)
    names = ", ".join(g.name for g in groups)
    Temperature = Annotated[float, Field(ge=0, le=contract.MAX_TEMPERATURE, allow_inf_nan=False,
                                         strict=True)]

    class HierarchicalGenerateRequest(GenerateRequest):
        __doc__ = (f"Sample ``n`` images: standard-normal noise of the {count} latent groups "
                   f"({names}), each group's spread scaled by temperature × its temperatures entry.")
        temperatures: list[Temperature] | None = Field(
            None, min_length=count, max_length=count,
            description=f"one temperature per latent group, top-down ({names}); each multiplies "
                        "temperature for its group (default: all 1)")

    HierarchicalGenerateRequest.__name__ = GenerateRequest.__name__
    return HierarchicalGenerateRequest


def attach(sampler, encoder, provider: str = "auto", intra_op_threads: int | None = None
           ) -> LogWeightModel | None:
    """What an app serving a hierarchical decoder adds: the encoder's groups are checked against
    the decoder's, and its log-weight graph is found (``find_log_weight``); None otherwise."""
    if sampler.groups is None:
        return None
    if encoder is not None:
        check_groups_match(sampler, encoder, "encoder")
    return find_log_weight(sampler, encoder, provider=provider, intra_op_threads=intra_op_threads)


def served_scores(state, images: np.ndarray, num_samples: int, seed: int) -> ImageScores:
    """``/v1/score``'s scores of a hierarchical model; ValueError without its log-weight graph."""
    if state.log_weight is None:
        raise ValueError(score_unavailable(state.sampler))
    return hierarchical_scores(state.encoder, state.sampler, state.log_weight, images, num_samples,
                               100, seed)


def hierarchical_score_function(decoder, encoder, args):
    """``keras-vae score``'s ``score(images, progress)`` for a hierarchical decoder: its
    log-weight graph from ``args.log_weight`` or beside the decoder or the encoder.

    Raises FileNotFoundError without one, ValueError when it does not fit the decoder.
    """
    try:
        log_weight = find_log_weight(decoder, encoder, args.log_weight)
    except ModelLoadError as exc:
        raise ValueError(str(exc)) from None
    if log_weight is None:
        raise FileNotFoundError(f"no {contract.LOG_WEIGHT_FILE} beside {decoder.model_path} or the "
                                "encoder: a hierarchical model is scored by it; pass --log-weight")

    def score(images, progress):
        return hierarchical_scores(encoder, decoder, log_weight, images, args.num_samples,
                                   args.batch_size, args.seed, progress)
    return score


#: The seed of the fixed draw of the lower groups on the explorer's pad.
EXPLORER_LOWER_SEED = 0


def explorer_settings(sampler, log_weight: bool) -> dict | None:
    """The explorer's ``hierarchy`` settings (None for a single-latent model): the groups with
    their noise columns, the seed of the pad's lower groups, and the log-weight graph's file
    (``models/log_weight.onnx``, or None when it is not served) and tensor names."""
    if getattr(sampler, "groups", None) is None:
        return None
    return {"groups": hierarchy.describe_groups(sampler.groups), "lower_seed": EXPLORER_LOWER_SEED,
            "log_weight": f"models/{contract.LOG_WEIGHT_FILE}" if log_weight else None,
            "log_weight_inputs": list(contract.LOG_WEIGHT_INPUTS),
            "log_weight_output": contract.LOG_WEIGHT_OUTPUT}
