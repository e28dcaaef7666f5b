"""Anomaly scores of a Keras VAE: `keras_scores` and `calibrate_keras`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_vae.core import hierarchy
from keras_vae.core.anomaly import AnomalyThreshold, ImageScores, score_images, threshold_from_scores
from keras_vae.models.hierarchical import HierarchicalVAE


def keras_scores(vae, x: np.ndarray, num_samples: int = 100, batch_size: int = 100,
                 seed: int = 0, progress: Callable[[int], None] | None = None,
                 labels=None) -> ImageScores:
    """log p(x), the ELBO (nats) and the reconstruction MSE of images x (N, H, W, C) under ``vae``
    (log p(x|y) and its ELBO for a class-conditional model, given the images' ``labels`` (N,)).

    The same noise as the exported files' scoring (`keras_vae.serving.scoring` for a `VAE`,
    the log-weight graph for a `HierarchicalVAE`), so a run directory and its export give the
    same scores up to the export's parity.

    Raises ValueError for images the model does not take (shape, range), and for labels
    missing from a conditional model, given to an unconditional one, or out of range.
    """
    from keras_vae.models import conditioning

    x = vae.check_images(x)
    if isinstance(vae, HierarchicalVAE):  # in noise space, from the model's importance weights
        if labels is not None:
            raise ValueError("the hierarchical model is unconditional: it takes no labels")
        return hierarchy.score_images(x, vae.numpy_log_weights, vae.encode, vae.decode,
                                      vae.noise_size, num_samples, batch_size, seed, progress)
    labels = conditioning.labels_for(vae, labels, len(x))
    encode, log_px_given_z, decode_mean = vae.numpy_functions()
    return score_images(x, encode, log_px_given_z, decode_mean, vae.prior_parameters(),
                        num_samples, batch_size, seed, progress, labels)


def calibrate_keras(vae, images: np.ndarray, description: str, score: str = "log_px",
                    fpr: float = 0.01, num_samples: int = 100, seed: int = 0,
                    batch_size: int = 100, labels=None) -> AnomalyThreshold:
    """The threshold on ``score`` flagging at most ``fpr`` of ``images`` (held-out normal data;
    a class-conditional model needs their ``labels``).

    ``description`` names the images (a dataset and split) in the threshold. See
    `keras_vae.core.anomaly.threshold_from_scores`.
    """
    scores = keras_scores(vae, images, num_samples, batch_size, seed, labels=labels)
    return threshold_from_scores(scores, score, fpr, description)
