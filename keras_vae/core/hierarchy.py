"""Hierarchical (multi-group latent) exports: their metadata, noise and likelihood (NumPy only).

A hierarchical VAE has L groups of Gaussian latents z_1 (top) .. z_L, with a top-down
prior p(z_l | z_<l) = N(μ_p,l, σ_p,l²) and posterior q(z_l | x, z_<l) = N(μ_q,l, σ_q,l²).
Its export follows the same files as the single-latent model, in *noise space*:

* ``decoder.onnx``: ``z`` float32 [batch, D] is the standard-normal noise ε of all the
  groups, concatenated top-down, each group flattened in (H, W, C) order (a vector group:
  (d,)); the graph computes z_l = μ_p,l(z_<l) + σ_p,l(z_<l) ⊙ ε_l top-down and outputs
  ``x_mean``. Sampling at temperature T feeds T·ε (`keras_vae.core.contract.draw_latents`
  with the standard prior); noise 0 decodes the chain of prior means; per-group
  temperatures scale each group's slice of the noise (`draw_noise`).
* ``encoder.onnx``: ``x`` -> ``z_mean``, ``z_log_var`` [batch, D] in noise space: with the
  groups above at their posterior means, ε̂_l = (μ_q,l − μ_p,l)/σ_p,l and
  log var = log(σ_q,l²/σ_p,l²). Decoding ``z_mean`` reconstructs from the posterior means.
* ``log_weight.onnx`` (`contract.LOG_WEIGHT_FILE`): ``x`` [batch, H, W, C] and ``epsilon``
  [batch, D] -> ``log_weight`` [batch], log p(x|z) + Σ_l [log p(z_l|z_<l) − log q(z_l|x, z_<l)]
  with z_l = μ_q,l + σ_q,l ⊙ ε_l drawn top-down.

Metadata (strings): ``model`` = ``"hierarchical"`` (`contract.MODEL`; absent for the
single-latent model), ``latent_groups`` (`contract.LATENT_GROUPS`), a JSON list in top-down
order of ``{"name": "group_0", "shape": [h, w, c] or [d]}`` (`encode_groups`,
`decode_groups`), and ``latent_dim`` = D, the sum of the group sizes.

log p(x) ≈ log-mean-exp of K log weights, the ELBO their mean (`log_likelihood`,
`score_images`), with the noise of `keras_vae.core.likelihood`: image i draws its K noise
vectors, in order, from ``numpy.random.default_rng([seed, i])``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from keras_vae.core import contract
from keras_vae.core.anomaly import ImageScores
from keras_vae.core.likelihood import log_mean_exp

__all__ = ["HIERARCHICAL", "LatentGroup", "encode_groups", "decode_groups", "read_groups",
           "is_hierarchical", "group_slices", "check_temperatures", "noise_scale", "draw_noise",
           "LogWeights", "noise_log_weights", "log_likelihood", "score_images", "describe_groups"]

#: The ``model`` metadata value of a hierarchical export.
HIERARCHICAL = "hierarchical"

#: ``(x (M, H, W, C), epsilon float32 (M, D)) -> log weights (M,)``: a hierarchical model's
#: log p(x|z) + Σ_l [log p(z_l|z_<l) − log q(z_l|x, z_<l)] for z drawn from q with noise epsilon.
LogWeights = Callable[[np.ndarray, np.ndarray], np.ndarray]
Encode = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
DecodeMean = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LatentGroup:
    """One group of latents: its name and shape ((h, w, c) or (d,)); ``size`` = the product."""

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))


def encode_groups(groups: Sequence[LatentGroup]) -> str:
    """The ``latent_groups`` metadata value: JSON ``[{"name", "shape"}, ...]``, top-down."""
    value = json.dumps([{"name": g.name, "shape": [int(d) for d in g.shape]} for g in groups])
    decode_groups(value, sum(g.size for g in groups))  # refuse to write what cannot be read
    return value


def decode_groups(value: str | None, latent_dim: int | None) -> tuple[LatentGroup, ...]:
    """The groups of a ``latent_groups`` metadata value, top-down.

    Raises ValueError, naming the problem, when the value is missing, is not JSON, is not
    a non-empty list of ``{"name": str, "shape": [positive ints] (1 or 3 of them)}`` with
    distinct names, or when the sizes do not sum to ``latent_dim`` (None: not checked).
    """
    where = "malformed latent_groups metadata"
    if value is None:
        raise ValueError(f"{where}: a hierarchical model needs the {contract.LATENT_GROUPS!r} "
                         "metadata entry (a JSON list of {\"name\", \"shape\"}), and it is missing")
    try:
        spec = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"{where}: not JSON ({exc})") from None
    if not isinstance(spec, list) or not spec:
        raise ValueError(f"{where}: expected a non-empty JSON list of groups, got {value[:200]!r}")
    groups = []
    for index, entry in enumerate(spec):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ValueError(f"{where}: group {index} must be an object with a non-empty string "
                             f"\"name\" and a \"shape\"; got {entry!r}")
        shape = entry.get("shape")
        if (not isinstance(shape, list) or len(shape) not in (1, 3)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            raise ValueError(f"{where}: group {entry['name']!r} has shape {shape!r}; expected "
                             "[d] or [h, w, c] of positive integers")
        groups.append(LatentGroup(entry["name"], tuple(shape)))
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: group names must be distinct; got {names}")
    total = sum(g.size for g in groups)
    if latent_dim is not None and total != latent_dim:
        raise ValueError(f"{where}: the group sizes {[g.size for g in groups]} sum to {total}, "
                         f"not to latent_dim = {latent_dim}")
    return tuple(groups)


def is_hierarchical(metadata: Mapping[str, str]) -> bool:
    """True when the metadata says ``model`` = ``"hierarchical"``; ValueError for another model."""
    model = metadata.get(contract.MODEL)
    if model is None:
        return False
    if model != HIERARCHICAL:
        raise ValueError(f"unknown model {model!r} in the metadata: this keras-vae reads "
                         f"{HIERARCHICAL!r} or no {contract.MODEL!r} entry (a single latent)")
    return True


def read_groups(metadata: Mapping[str, str], latent_dim: int) -> tuple[LatentGroup, ...] | None:
    """A file's latent groups (None for a single-latent model); ValueError when malformed."""
    if not is_hierarchical(metadata):
        return None
    return decode_groups(metadata.get(contract.LATENT_GROUPS), latent_dim)


def describe_groups(groups: Sequence[LatentGroup]) -> list[dict]:
    """JSON-ready groups: name, shape, size and the slice [start, stop) of the noise vector."""
    return [{"name": g.name, "shape": list(g.shape), "size": g.size, "start": s.start, "stop": s.stop}
            for g, s in zip(groups, group_slices(groups))]


def group_slices(groups: Sequence[LatentGroup]) -> list[slice]:
    """Each group's columns of the flat noise vector, top-down."""
    slices, start = [], 0
    for g in groups:
        slices.append(slice(start, start + g.size))
        start += g.size
    return slices


def check_temperatures(temperatures, groups: Sequence[LatentGroup]) -> np.ndarray:
    """Per-group temperatures as float32 (L,), each in [0, MAX_TEMPERATURE]; ValueError otherwise."""
    count = len(groups)
    if isinstance(temperatures, (str, bytes)) or not isinstance(temperatures, (Sequence, np.ndarray)):
        raise ValueError(f"temperatures must be a list of {count} numbers, one per latent group "
                         f"({', '.join(g.name for g in groups)}); got {temperatures!r}")
    values = list(temperatures)
    if len(values) != count:
        raise ValueError(f"temperatures must be a list of {count} numbers, one per latent group "
                         f"({', '.join(g.name for g in groups)}); got {len(values)}")
    return np.array([contract.check_temperature(t) for t in values], np.float32)


def noise_scale(groups: Sequence[LatentGroup], temperatures, temperature: float = 1.0) -> np.ndarray:
    """float32 (D,): temperature × each group's temperature, repeated over its slice of the noise."""
    t = contract.check_temperature(temperature)
    per_group = check_temperatures(temperatures, groups).astype(np.float64) * t
    return np.repeat(per_group, [g.size for g in groups]).astype(np.float32)


def draw_noise(n: int, groups: Sequence[LatentGroup], seed: int | None = None,
               temperature: float = 1.0, temperatures=None) -> np.ndarray:
    """n noise vectors for the decoder, float32 (n, D).

    Without ``temperatures`` this is ``contract.draw_latents(n, D, None, seed, temperature)``:
    T·ε. With per-group ``temperatures`` (L numbers, top-down, each in [0, MAX_TEMPERATURE])
    group l's slice of ε is scaled by T·T_l, so temperatures of all 1 give exactly the bytes
    of ``draw_latents`` at T. Raises ValueError for a bad n, seed or temperature.
    """
    latent_dim = sum(g.size for g in groups)
    if temperatures is None:
        return contract.draw_latents(n, latent_dim, None, seed, temperature)
    scale = noise_scale(groups, temperatures, temperature)
    return contract.draw_latents(n, latent_dim, None, seed, 1.0) * scale


def noise_log_weights(x: np.ndarray, log_weights: LogWeights, latent_dim: int,
                      num_samples: int = 1000, batch_size: int = 100,
                      samples_per_chunk: int | None = None, seed: int | None = 0,
                      ) -> Iterator[tuple[int, np.ndarray]]:
    """The log importance weights of images x (N, H, W, C), one batch of images at a time.

    Image i draws its K noise vectors ε (float32, D each), in order, from
    ``numpy.random.default_rng([seed, i])``, ``samples_per_chunk`` of them per call of
    ``log_weights`` (default: about 20,000 rows per call), so memory stays bounded and an
    image's weights depend neither on ``batch_size`` nor on the chunking. Yields, per batch
    of B images: (index of its first image, log weights float64 (K, B)).
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1; got {num_samples}, {batch_size}")
    if samples_per_chunk is None:
        samples_per_chunk = max(1, min(num_samples, 20_000 // batch_size))
    if samples_per_chunk < 1:
        raise ValueError(f"samples_per_chunk must be >= 1; got {samples_per_chunk}")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
    for start in range(0, len(x), batch_size):
        x_batch = np.asarray(x[start : start + batch_size], np.float32)
        b = len(x_batch)
        streams = [np.random.default_rng([seed, start + i]) for i in range(b)]
        parts = []
        for done in range(0, num_samples, samples_per_chunk):
            k = min(samples_per_chunk, num_samples - done)
            epsilon = np.stack([s.standard_normal((k, latent_dim), dtype=np.float32)
                                for s in streams], axis=1)  # (k, B, D)
            images = np.broadcast_to(x_batch, (k, *x_batch.shape)).reshape(k * b, *x_batch.shape[1:])
            values = np.asarray(log_weights(np.ascontiguousarray(images),
                                            epsilon.reshape(k * b, latent_dim)), np.float64)
            if values.shape != (k * b,):
                raise ValueError(f"log_weights returned shape {list(values.shape)}; expected [{k * b}]")
            parts.append(values.reshape(k, b))
        yield start, np.concatenate(parts)


def log_likelihood(x: np.ndarray, log_weights: LogWeights, latent_dim: int,
                   num_samples: int = 1000, batch_size: int = 100,
                   samples_per_chunk: int | None = None, seed: int | None = 0,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Importance-sampled log p(x) per image, nats, float64 (N,): the log-mean-exp of K weights.

    The hierarchical twin of `keras_vae.core.likelihood.log_likelihood`, with the same noise
    per image; arguments as `noise_log_weights`.
    """
    results = []
    for _, weights in noise_log_weights(x, log_weights, latent_dim, num_samples, batch_size,
                                        samples_per_chunk, seed):
        results.append(log_mean_exp(weights, axis=0))
        if progress is not None:
            progress(weights.shape[1])
    return np.concatenate(results) if results else np.zeros((0,), np.float64)


def score_images(x: np.ndarray, log_weights: LogWeights, encode: Encode, decode_mean: DecodeMean,
                 latent_dim: int, num_samples: int = 100, batch_size: int = 100, seed: int = 0,
                 progress: Callable[[int], None] | None = None) -> ImageScores:
    """log p(x), the ELBO (nats) and the reconstruction MSE of images x (N, H, W, C).

    The hierarchical twin of `keras_vae.core.anomaly.score_images`: log p(x) and the ELBO
    are the log-mean-exp and the mean of the K log weights (`noise_log_weights`); the
    reconstruction is ``decode_mean`` of the posterior-mean noise ``encode(x)[0]``, its
    error the mean squared difference per pixel. The typicality score follows from log p(x)
    (`ImageScores.anomaly`).
    """
    log_px, elbo, recon = [], [], []
    for start, weights in noise_log_weights(x, log_weights, latent_dim, num_samples, batch_size,
                                            None, seed):
        x_batch = np.asarray(x[start : start + weights.shape[1]], np.float32)
        log_px.append(log_mean_exp(weights, axis=0))
        elbo.append(np.mean(weights, axis=0))
        z_mean, _ = encode(x_batch)
        means = np.asarray(decode_mean(np.asarray(z_mean, np.float32)), np.float64)
        recon.append(np.mean(np.square(means - x_batch.astype(np.float64)), axis=(1, 2, 3)))
        if progress is not None:
            progress(weights.shape[1])
    join = (lambda parts: np.concatenate(parts) if parts else np.zeros((0,), np.float64))
    return ImageScores(join(log_px), join(elbo), join(recon), int(num_samples), int(seed))
