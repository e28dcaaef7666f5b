"""Anomaly scores, thresholds and decisions (NumPy and the standard library only).

A VAE scores an image four ways, each oriented so that **higher means more
anomalous**:

* ``log_px``: −log p(x), the importance-sampled negative log-likelihood with K
  samples (`keras_vae.core.likelihood`), in nats per image;
* ``elbo``: −ELBO, the mean over the same K samples of −(log p(x, z_k) − log q(z_k|x)),
  in nats per image (always ≥ the ``log_px`` score: the ELBO is a lower bound);
* ``recon``: the mean squared error between the image and the decoded posterior
  mean, averaged over pixels (pixel values in [0, 1]);
* ``typicality``: |−log p(x) − c|, the distance of the NLL from c, the mean NLL of
  held-out normal images, in nats (after Nalisnick et al. 2019, "Detecting
  out-of-distribution inputs to deep generative models using typicality"): it flags
  images that are *too likely* as well, such as blank ones, which −log p(x) ranks as
  the most normal of all.

`score_images` computes all three from any model given as functions (the Keras
model and the ONNX files both pass theirs), with the same noise as
`keras_vae.core.likelihood.log_likelihood`, so the two agree on the same seed.

A threshold is set on scores of held-out *normal* images for a target false-positive
rate (`calibrate_threshold`): an image is anomalous when its score is **above** the
threshold. `AnomalyThreshold` is what an export stores under the
``anomaly_threshold`` metadata key (`keras_vae.core.contract.ANOMALY_THRESHOLD`).
A ``log_px`` or ``elbo`` threshold holds only at the K that set it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from keras_vae.core.contract import MixturePrior
from keras_vae.core.likelihood import Encode, LogPxGivenZ, importance_log_weights, log_mean_exp

__all__ = ["SCORES", "ImageScores", "AnomalyThreshold", "score_images", "calibrate_threshold",
           "threshold_from_scores",
           "false_positive_rate", "encode_threshold", "decode_threshold", "scores_csv",
           "check_num_samples"]

#: The score names, each "higher = more anomalous"; see the module docstring.
SCORES = ("log_px", "elbo", "recon", "typicality")
#: Scores whose value depends on the number of importance samples K.
SAMPLED_SCORES = ("log_px", "elbo", "typicality")

DecodeMean = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ImageScores:
    """Per-image scores of N images, float64 (N,) each.

    Attributes:
        log_px: importance-sampled log p(x), nats (higher = more typical).
        elbo: the K-sample ELBO estimate, nats (≤ log_px up to noise).
        recon: mean squared error of the reconstruction from the posterior mean, per pixel.
        num_samples: K.
        seed: the noise seed.
    """

    log_px: np.ndarray
    elbo: np.ndarray
    recon: np.ndarray
    num_samples: int
    seed: int

    def __len__(self) -> int:
        return len(self.log_px)

    def anomaly(self, score: str, center: float | None = None) -> np.ndarray:
        """The anomaly score ``score`` (one of `SCORES`), higher = more anomalous: (N,) float64.

        ``center`` is the typicality score's c, in nats; without it, these images' mean NLL.
        """
        if score == "typicality":
            nll = -self.log_px
            return np.abs(nll - (np.mean(nll) if center is None else center))
        if score == "log_px":
            return -self.log_px
        if score == "elbo":
            return -self.elbo
        if score == "recon":
            return self.recon
        raise ValueError(f"unknown anomaly score {score!r}; choose one of {', '.join(SCORES)}")


@dataclass(frozen=True)
class AnomalyThreshold:
    """A decision rule: an image is anomalous when its ``score`` is above ``value``.

    Attributes:
        score: one of `SCORES` ("log_px": −log p(x) in nats; "elbo": −ELBO in nats;
            "recon": mean squared error per pixel).
        value: the threshold, in the score's units (for "log_px": an NLL in nats).
        num_samples: K of the scores it was set on (None for "recon", which has no K).
        fpr: the false-positive rate it was set for, on the calibration data.
        achieved_fpr: the fraction of calibration images above it (≤ fpr).
        data: the calibration data's name (a dataset and split).
        count: the number of calibration images.
        seed: the noise seed of the calibration scores.
        center: for "typicality", c: the calibration images' mean NLL, nats (else None).
    """

    score: str
    value: float
    num_samples: int | None
    fpr: float
    achieved_fpr: float
    data: str
    count: int
    seed: int = 0
    center: float | None = None

    def is_anomalous(self, scores: ImageScores) -> np.ndarray:
        """(N,) bool: True where the image's score is above the threshold."""
        check_num_samples(self, scores.num_samples)
        return scores.anomaly(self.score, self.center) > self.value

    def describe(self) -> str:
        """One line for people: the rule and where it came from."""
        k = f", K = {self.num_samples}" if self.num_samples is not None else ""
        return (f"anomalous when {self.score} score > {self.value:.6g}{k} (set for FPR "
                f"{self.fpr:g} on {self.count} images of {self.data}; achieved {self.achieved_fpr:g})")


def check_num_samples(threshold: AnomalyThreshold, num_samples: int) -> None:
    """ValueError, naming the threshold's K, unless scores with K = ``num_samples`` are comparable."""
    if threshold.score in SAMPLED_SCORES and threshold.num_samples != num_samples:
        raise ValueError(
            f"the anomaly threshold ({threshold.score}) was set with K = {threshold.num_samples} "
            f"importance samples and holds only at that K; got num_samples = {num_samples}: "
            f"score with num_samples = {threshold.num_samples}")


def score_images(x: np.ndarray, encode: Encode, log_px_given_z: LogPxGivenZ,
                 decode_mean: DecodeMean, prior: MixturePrior | None = None,
                 num_samples: int = 100, batch_size: int = 100, seed: int = 0,
                 progress: Callable[[int], None] | None = None,
                 labels: np.ndarray | None = None) -> ImageScores:
    """log p(x), the ELBO and the reconstruction error of images x (N, H, W, C).

    With a class-conditional model's `labels` (N,), these are log p(x|y) and its ELBO;
    ``encode``, ``log_px_given_z`` and ``decode_mean`` then take each batch's labels last.

    Args:
        x: (N, H, W, C) float32 images, already checked by the caller.
        encode, log_px_given_z, prior, num_samples, batch_size, seed: as
            `keras_vae.core.likelihood.log_likelihood` (the same noise per image).
        decode_mean: z (B, D) float32 -> pixel means (B, H, W, C).
        progress: called with the number of images done after each batch.

    Returns:
        `ImageScores`.
    """
    log_px, elbo, recon = [], [], []
    for start, z_mean, log_weights in importance_log_weights(
            x, encode, log_px_given_z, prior, num_samples, batch_size, None, seed, labels):
        x_batch = np.asarray(x[start : start + log_weights.shape[1]], np.float64)
        log_px.append(log_mean_exp(log_weights, axis=0))
        elbo.append(np.mean(log_weights, axis=0))
        given = () if labels is None else (labels[start : start + log_weights.shape[1]],)
        means = np.asarray(decode_mean(z_mean, *given), np.float64)
        recon.append(np.mean(np.square(means - x_batch), axis=(1, 2, 3)))
        if progress is not None:
            progress(log_weights.shape[1])
    join = (lambda parts: np.concatenate(parts) if parts else np.zeros((0,), np.float64))
    return ImageScores(join(log_px), join(elbo), join(recon), int(num_samples), int(seed))


def calibrate_threshold(normal_scores: np.ndarray, fpr: float) -> float:
    """A threshold t with exactly ⌊fpr·n⌋ of the n normal scores above it (when they have no ties).

    ``normal_scores`` are anomaly scores (higher = more anomalous) of held-out normal
    images; an image is flagged when its score is > t. With k = ⌊fpr·n⌋ and the scores
    sorted, s[0] ≤ … ≤ s[n−1], t is the midpoint of s[n−k−1] and s[n−k] (the largest
    score, s[n−1], when k = 0): the empirical (1 − fpr) quantile, placed between two
    scores so that the tiny differences between the Keras model and its ONNX export
    never move an image across it. On these scores the false-positive rate is
    exactly k / n ≤ fpr (less with ties). A percentile p of the normal scores is
    fpr = 1 − p/100.

    Raises ValueError for an empty or non-finite input, or fpr outside [0, 1).
    """
    scores = np.asarray(normal_scores, np.float64).ravel()
    if scores.size == 0:
        raise ValueError("cannot set a threshold on no images: the calibration data is empty")
    if not np.all(np.isfinite(scores)):
        raise ValueError("cannot set a threshold: some calibration scores are NaN or infinite")
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"the false-positive rate must be in [0, 1); got {fpr!r}")
    ordered = np.sort(scores)
    allowed_above = math.floor(fpr * scores.size + 1e-9)
    below = ordered[scores.size - allowed_above - 1]
    if allowed_above == 0:
        return float(below)
    return float(below + (ordered[scores.size - allowed_above] - below) / 2)


def threshold_from_scores(scores: ImageScores, score: str, fpr: float, data: str) -> AnomalyThreshold:
    """The `AnomalyThreshold` on ``score`` that flags at most a fraction ``fpr`` of these images.

    ``scores`` are of held-out *normal* images, described by ``data`` (a dataset and
    split, recorded with the threshold). See `calibrate_threshold`.
    """
    center = float(np.mean(-scores.log_px)) if score == "typicality" else None
    values = scores.anomaly(score, center)
    value = calibrate_threshold(values, fpr)
    return AnomalyThreshold(score=score, value=value,
                            num_samples=scores.num_samples if score in SAMPLED_SCORES else None,
                            fpr=float(fpr), achieved_fpr=false_positive_rate(values, value),
                            data=data, count=len(values), seed=scores.seed, center=center)


def false_positive_rate(normal_scores: np.ndarray, threshold: float) -> float:
    """The fraction of ``normal_scores`` above ``threshold`` (flagged although normal)."""
    scores = np.asarray(normal_scores, np.float64).ravel()
    return float(np.mean(scores > threshold)) if scores.size else 0.0


def encode_threshold(threshold: AnomalyThreshold) -> str:
    """The ``anomaly_threshold`` metadata value: JSON of the `AnomalyThreshold` fields."""
    decode_threshold(json.dumps(asdict(threshold)))  # refuse to write what cannot be read
    return json.dumps(asdict(threshold), sort_keys=True)


def decode_threshold(value: str | None) -> AnomalyThreshold | None:
    """The `AnomalyThreshold` of an ``anomaly_threshold`` metadata value (None: no threshold).

    Raises ValueError, naming the problem, when the value is malformed.
    """
    if value is None:
        return None
    try:
        spec = json.loads(value)
        if not isinstance(spec, dict):
            raise ValueError("not a JSON object")
        threshold = AnomalyThreshold(
            score=str(spec["score"]), value=float(spec["value"]),
            num_samples=None if spec.get("num_samples") is None else int(spec["num_samples"]),
            fpr=float(spec["fpr"]), achieved_fpr=float(spec.get("achieved_fpr", spec["fpr"])),
            data=str(spec.get("data", "unknown")), count=int(spec.get("count", 0)),
            seed=int(spec.get("seed", 0)),
            center=None if spec.get("center") is None else float(spec["center"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed anomaly_threshold metadata: {exc}") from None
    if threshold.score not in SCORES:
        raise ValueError(f"malformed anomaly_threshold metadata: unknown score {threshold.score!r}")
    if threshold.score in SAMPLED_SCORES and (threshold.num_samples is None
                                              or threshold.num_samples < 1):
        raise ValueError("malformed anomaly_threshold metadata: a log_px, elbo or typicality "
                         "threshold needs num_samples >= 1")
    if threshold.score == "typicality" and not math.isfinite(threshold.center or math.nan):
        raise ValueError("malformed anomaly_threshold metadata: a typicality threshold needs "
                         "its center, a finite NLL in nats")
    if not math.isfinite(threshold.value) or not 0.0 <= threshold.fpr < 1.0:
        raise ValueError("malformed anomaly_threshold metadata: the value must be finite and "
                         "the fpr in [0, 1)")
    return threshold


def scores_csv(scores: ImageScores, names: Sequence[str] | None = None,
               threshold: AnomalyThreshold | None = None) -> str:
    """CSV text, one row per image: index (or name), log_px, elbo, recon_mse (and anomalous).

    log_px and elbo are in nats (higher = more typical); recon_mse is per pixel.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["index" if names is None else "name", "log_px", "elbo", "recon_mse"]
    flags = None
    if threshold is not None:
        header.append("anomalous")
        flags = threshold.is_anomalous(scores)
    writer.writerow(header)
    for i in range(len(scores)):
        row = [i if names is None else names[i], repr(float(scores.log_px[i])),
               repr(float(scores.elbo[i])), repr(float(scores.recon[i]))]
        if flags is not None:
            row.append(int(flags[i]))
        writer.writerow(row)
    return buffer.getvalue()
