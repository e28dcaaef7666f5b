"""Hierarchical (multi-group latent) exports in onnxruntime: the log-weight graph and scoring.

The decoder and encoder of a hierarchical export have the single-latent signatures, in
noise space (``keras_vae.core.hierarchy``), so ``Sampler`` and ``Encoder`` serve them; their
``groups`` (``OnnxModel``) hold the latent groups. What is new is here, and in
``keras_vae.serving.log_weight`` (``LogWeightModel``, ``find_log_weight``):

* ``hierarchical_scores``: log p(x), the ELBO and the reconstruction error from the three
  files, with the noise of ``keras_vae.core.likelihood``;
* ``latents``: noise for ``/v1/generate`` and ``keras-vae generate``, with per-group
  temperatures;
* ``with_group_temperatures``: the ``/v1/generate`` body with its ``temperatures`` field;
* ``attach``, ``served_scores``, ``describe``, ``explorer_settings``: what the app, its
  routes and the explorer add for a hierarchical model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from keras_vae.core import contract, hierarchy
from keras_vae.core.anomaly import ImageScores
from keras_vae.serving.log_weight import LogWeightModel, check_groups_match, find_log_weight
from keras_vae.serving.onnx_model import ModelLoadError

__all__ = ["LogWeightModel", "find_log_weight", "hierarchical_scores", "latents", "describe",
           "with_group_temperatures", "check_groups_match", "score_unavailable", "attach",
           "served_scores", "hierarchical_score_function", "explorer_settings"]


def latents(sampler, n: int, seed: int | None, temperature: float, temperatures=None) -> np.ndarray:
    """Noise (hierarchical) or latents for ``n`` samples: float32 ``[n, latent_dim]``.

    ``temperatures`` (one per group, top-down) multiply ``temperature`` group by group; a
    single-latent model refuses them (ValueError).
    """
    if sampler.groups is None:
        if temperatures is not None:
            raise ValueError("temperatures (one per latent group) apply to hierarchical models "
                             "only; this model has a single latent: use temperature")
        return sampler.latents(n, seed, temperature)
    return hierarchy.draw_noise(n, sampler.groups, seed, temperature, temperatures)


def describe(sampler) -> dict[str, Any]:
    """``/v1/model``'s entries for a hierarchical decoder: ``model`` and its ``latent_groups``."""
    if sampler.groups is None:
        return {}
    return {"model": hierarchy.HIERARCHICAL, "latent_groups": hierarchy.describe_groups(sampler.groups)}


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
    """``keras-vae score``'s ``score(data, progress)`` (data: the `ScoreImages` to score) for a
    hierarchical decoder: its
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

    def score(data, progress):
        return hierarchical_scores(encoder, decoder, log_weight, data.images, args.num_samples,
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
