"""The page's settings (``explorer/config.json``): the model's shapes, prior and principal directions.

The page computes what Python computes (z from the prior as
``keras_vae.core.contract.draw_latents``, log p(x) as
``keras_vae.core.likelihood``), so the numbers those need come from here,
read from their one owner in Python, rather than being written again in
JavaScript.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_vae.core import contract, likelihood
from keras_vae.serving import fitted, hierarchical
from keras_vae.serving.scoring import threshold_summary

__all__ = ["explorer_config", "prior_directions", "SLIDERS", "SCORE_SAMPLES", "SCORE_SEED"]

#: How many directions get a slider on the page.
SLIDERS = 5
#: Importance samples for the score of a drawn or dropped image.
SCORE_SAMPLES = 200
#: The noise seed of that score, in the browser and in the page's /v1/score requests alike.
SCORE_SEED = 0

# --------------------------------------------------------------- the page's data


def prior_directions(latent_dim: int, prior: contract.MixturePrior | None) -> dict[str, list]:
    """The prior's mean and principal axes, as plain lists for JSON.

    The axes are the eigenvectors of the prior's covariance, largest variance
    first: what principal component analysis of many samples of z converges
    to, computed exactly from the prior's parameters. For a mixture,
    ``Cov = Σ_c w_c (diag σ_c² + μ_c μ_cᵀ) − μ̄ μ̄ᵀ``; for N(0, I) every direction
    has variance 1 and the axes are the latent dimensions in order. Each axis
    is signed so that its largest entry is positive.

    Returns ``{"center": (D,), "directions": (D, D) rows, "direction_std": (D,),
    "explained": (D,) fraction of the total variance, "dim_std": (D,)}``.
    """
    if prior is None:
        center = np.zeros(latent_dim)
        covariance = np.eye(latent_dim)
    else:
        weights = prior.weights[:, None]
        center = (weights * prior.means).sum(0)
        second = np.einsum("c,ci,cj->ij", prior.weights, prior.means, prior.means)
        second += np.diag((weights * np.exp(prior.log_vars)).sum(0))
        covariance = second - np.outer(center, center)
        covariance = 0.5 * (covariance + covariance.T)
    values, vectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(-values, kind="stable")
    values = np.clip(values[order], 0.0, None)
    vectors = vectors[:, order].T  # rows
    signs = np.sign(vectors[np.arange(latent_dim), np.argmax(np.abs(vectors), axis=1)])
    vectors = vectors * np.where(signs == 0, 1.0, signs)[:, None]
    total = float(values.sum()) or 1.0
    return {
        "center": center.tolist(),
        "directions": vectors.tolist(),
        "direction_std": np.sqrt(values).tolist(),
        "explained": (values / total).tolist(),
        "dim_std": np.sqrt(np.clip(np.diag(covariance), 0.0, None)).tolist(),
    }


def _mixture_components(sampler) -> int | None:
    """M of a logistic-mixture decoder (None for another, or when its metadata is malformed)."""
    try:
        return contract.read_mixture_components(sampler.metadata)
    except ValueError:
        return None


def _decoder_spread(sampler, likelihood: str) -> Any:
    """The spread (``contract.decoder_spread``) of a decoder of this ``likelihood``, as JSON (a
    number or nested lists); None for another likelihood, or when its metadata has none."""
    if sampler.likelihood != likelihood:
        return None
    try:
        value = contract.decoder_spread(sampler.metadata, likelihood, sampler.image_shape)
    except ValueError:
        return None
    if value is None:
        return None
    return float(value) if np.ndim(value) == 0 else np.asarray(value, np.float64).tolist()


def _compact(values) -> list:
    """Nested lists of floats rounded to 9 significant digits (float32 values survive exactly)."""
    array = np.asarray(values, np.float64)
    return np.reshape([float(f"{v:.9g}") for v in array.ravel().tolist()], array.shape).tolist()


def explorer_config(sampler, *, encoder: bool, ort: bool, server: bool,
                    max_batch: int | None = None,
                    score_samples: int = SCORE_SAMPLES, log_weight: bool = False,
                    fitted_prior=None) -> dict[str, Any]:
    """What the page needs to know about the model, as JSON-ready data.

    Args:
        sampler: the decoder's ``keras_vae.serving.sampler.Sampler`` (its shapes,
            likelihood, metadata and prior are read).
        encoder: whether ``models/encoder.onnx`` is there.
        ort: whether onnxruntime-web is served (``explorer/ort/``); when
            False the page decodes through the server.
        server: True when served by ``keras-vae serve`` (the page may then
            call ``/v1/...``), False in a static export.
        max_batch: most rows the server decodes per request.
        score_samples: importance samples K for the score of a drawn image; the
            K of the decoder's anomaly threshold when it holds one with a K.
        log_weight: whether ``models/log_weight.onnx`` (a hierarchical model's) is there.
        fitted_prior: the served fitted prior (``keras_vae.serving.fitted.FittedPriorModel``, as
            ``models/prior.onnx``), which the page samples from with the loop of ``fitted.js``.

    ``anomaly_threshold`` is the decoder's threshold (``keras_vae.core.anomaly``:
    score, value, num_samples, fpr, ...), or None without one (or a malformed one).
    """
    prior = sampler.prior
    metadata = sampler.metadata
    threshold = threshold_summary(sampler)
    if threshold is not None and "error" in threshold:
        threshold = None
    if threshold is not None and threshold["num_samples"]:
        score_samples = threshold["num_samples"]  # a threshold holds only at its own K
    return {
        "latent_dim": int(sampler.latent_dim),
        "image_shape": [int(d) for d in sampler.image_shape],
        "likelihood": sampler.likelihood,
        "decoder_log_var": _decoder_spread(sampler, "gaussian"),
        "decoder_log_scale": _decoder_spread(sampler, "discretized_logistic"),
        # an 8-bit decoder that outputs p(x|z)'s parameters (x_params), and a mixture's M
        "decoder_params": sampler.params_name is not None,
        "mixture_components": _mixture_components(sampler),
        # exact float64 values: the page draws z from them as draw_latents does
        "prior": None if prior is None else {
            "components": int(prior.components),
            **{name: np.asarray(getattr(prior, name), np.float64).tolist()
               for name in ("weights", "means", "log_vars")},
        },
        **{key: _compact(value)
           for key, value in prior_directions(sampler.latent_dim, prior).items()},
        "sliders": min(SLIDERS, int(sampler.latent_dim)),
        "max_temperature": contract.MAX_TEMPERATURE,
        "score_samples": int(score_samples),
        "score_seed": SCORE_SEED,
        "anomaly_threshold": threshold,
        "probability_floor": likelihood.PROBABILITY_FLOOR,
        "encoder": bool(encoder),
        "ort": bool(ort),
        "server": bool(server),
        "max_batch": max_batch,
        "models": {"decoder": "models/decoder.onnx",
                   "encoder": "models/encoder.onnx" if encoder else None},
        # a class-conditional decoder's classes: the page's class picker chooses the label
        "class_names": None if sampler.class_names is None else list(sampler.class_names),
        # a hierarchical model's latent groups and log-weight graph (None: a single latent)
        "hierarchy": hierarchical.explorer_settings(sampler, log_weight),
        # a prior fitted after training: its graph, tensors and what the sampling loop reads
        "fitted": fitted.explorer_settings(fitted_prior),
        "tensors": {"decoder_input": contract.DECODER_INPUT, "label_input": contract.LABEL_INPUT,
                    "decoder_output": contract.DECODER_OUTPUT,
                    "decoder_logits": contract.DECODER_LOGITS,
                    "decoder_params": contract.DECODER_PARAMS,
                    "encoder_input": contract.ENCODER_INPUT,
                    "encoder_outputs": list(contract.ENCODER_OUTPUTS)},
        "model": {key: metadata[key] for key in (
            contract.DATASET, contract.SOURCE_BACKEND, contract.VERSION, contract.CREATED,
            contract.PRECISION) if key in metadata},
    }
