"""Anomaly scores from the exported files alone (onnxruntime, no Keras).

`onnx_scores` is `keras_vae.core.anomaly.score_images` with an ``encoder.onnx``
(`keras_vae.serving.encoder.Encoder`) and a ``decoder.onnx``
(`keras_vae.serving.sampler.Sampler`). `write_threshold` stores an
`keras_vae.core.anomaly.AnomalyThreshold` in an ONNX file's metadata, atomically,
without the ``onnx`` package (so in a serving-only install too).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from functools import lru_cache

import numpy as np

from keras_vae.core import contract
from keras_vae.core.anomaly import (SAMPLED_SCORES, AnomalyThreshold, ImageScores, check_num_samples,
                                    decode_threshold, encode_threshold, score_images)
from keras_vae.core.files import write_bytes_atomic
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.likelihood import onnx_log_px_given_z
from keras_vae.serving.onnx_metadata import set_metadata_entry
from keras_vae.serving.sampler import Sampler

__all__ = ["onnx_scores", "served_threshold", "write_threshold", "resolve_score_request",
           "check_threshold_servable", "threshold_summary", "DEFAULT_SCORE_SAMPLES"]


def onnx_scores(encoder: Encoder, decoder: Sampler, x: np.ndarray, num_samples: int = 100,
                batch_size: int = 100, seed: int = 0,
                progress: Callable[[int], None] | None = None, labels=None) -> ImageScores:
    """log p(x), the ELBO (nats) and the reconstruction MSE of images x ``[N, H, W, C]``
    (of log p(x|y) for a class-conditional model, given ``labels``, see ``Sampler.validate_labels``).

    Raises ValueError for images of the wrong shape or range (``Encoder.validate_images``),
    bad labels, or a decoder whose metadata cannot be scored.
    """
    images = encoder.validate_images(x)
    labels = decoder.validate_labels(labels, len(images))
    return score_images(images, encoder.encode, onnx_log_px_given_z(decoder),
                        lambda z, y=None: decoder.decode(z, batch_size=4096, labels=y), decoder.prior,
                        num_samples, batch_size, seed, progress, labels)


def served_threshold(decoder: Sampler) -> AnomalyThreshold | None:
    """The decoder's anomaly threshold from its metadata (None without one); ValueError if malformed."""
    return _parse(decoder.metadata.get(contract.ANOMALY_THRESHOLD))


@lru_cache(maxsize=16)
def _parse(value: str | None) -> AnomalyThreshold | None:
    return decode_threshold(value)


def write_threshold(path: str | os.PathLike, threshold: AnomalyThreshold) -> None:
    """Store ``threshold`` in the metadata of the ONNX file at ``path``, beside its other entries.

    The ``anomaly_threshold`` entry of the model's ``metadata_props`` is replaced (or
    added); every other byte of the file is kept. The file is rewritten through a
    temporary file, fsync and rename (`keras_vae.core.files.write_bytes_atomic`), so it
    is whole before and after. Needs no ``onnx`` package
    (`keras_vae.serving.onnx_metadata`). Raises ValueError when the file is not an ONNX model.
    """
    value = encode_threshold(threshold)
    with open(path, "rb") as f:
        data = f.read()
    try:
        data = set_metadata_entry(data, contract.ANOMALY_THRESHOLD, value)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)!r} is not an ONNX model: {exc}") from None
    write_bytes_atomic(path, data)
    _parse.cache_clear()


#: K of ``/v1/score`` when the request names none and the decoder holds no threshold with a K.
DEFAULT_SCORE_SAMPLES = 100


def resolve_score_request(decoder: Sampler, num_samples: int | None,
                          max_score_samples: int) -> tuple[AnomalyThreshold | None, int]:
    """(the decoder's threshold or None, K) for a ``/v1/score`` request asking for ``num_samples``.

    Without ``num_samples``, K is the threshold's (or `DEFAULT_SCORE_SAMPLES`, at most
    ``max_score_samples``). Raises
    ValueError, naming the threshold's K, when the threshold does not hold at K, and
    when K is more than the server allows.
    """
    threshold = served_threshold(decoder)
    if num_samples is None:
        num_samples = (threshold.num_samples if threshold is not None and threshold.num_samples
                       else min(DEFAULT_SCORE_SAMPLES, max_score_samples))
    if threshold is not None:
        check_num_samples(threshold, num_samples)
    if num_samples > max_score_samples:
        why = (f"the anomaly threshold was set with K = {num_samples}, and " if threshold is not None
               and threshold.num_samples == num_samples else "")
        raise ValueError(f"{why}num_samples = {num_samples} is more than this server allows "
                         f"({max_score_samples}; keras-vae serve --max-score-samples)")
    return threshold, num_samples


def check_threshold_servable(decoder: Sampler, max_score_samples: int) -> None:
    """Raise ValueError, naming both numbers, when the decoder's anomaly threshold holds only at
    a K above ``max_score_samples``: every ``/v1/score`` request would then be refused.

    A malformed threshold passes here (``/v1/score`` reports it, as ``/v1/model`` does).
    """
    try:
        threshold = served_threshold(decoder)
    except ValueError:
        return
    if threshold is None or threshold.score not in SAMPLED_SCORES or not threshold.num_samples:
        return
    if threshold.num_samples > max_score_samples:
        raise ValueError(
            f"the anomaly threshold in {decoder.model_path.name} was set with K = "
            f"{threshold.num_samples} importance samples, more than --max-score-samples "
            f"{max_score_samples} allows, so every /v1/score request would be refused; serve with "
            f"--max-score-samples {threshold.num_samples} or more, or set the threshold again "
            f"with --num-samples {max_score_samples} or fewer")


def threshold_summary(decoder: Sampler) -> dict | None:
    """The decoder's threshold as a JSON-ready dict (None without one; ``{"error"}`` if malformed)."""
    try:
        threshold = served_threshold(decoder)
    except ValueError as exc:
        return {"error": str(exc)}
    return None if threshold is None else asdict(threshold)
