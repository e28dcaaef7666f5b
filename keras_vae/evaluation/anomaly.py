"""Anomaly scores of a Keras VAE: `keras_scores` and `calibrate_keras`."""

from __future__ import annotations

from collections.abc import Callable
import numpy as np
from keras_vae.core.anomaly import AnomalyThreshold, ImageScores, score_images, threshold_from_scores


def keras_scores(vae, x: np.ndarray, num_samples: int = 100, batch_size: int = 100,
                 seed: int = 0, progress: Callable[[int], None] | None = None) -> ImageScores:
    """log p(x), the ELBO (nats) and the reconstruction MSE of images x (N, H, W, C) under ``vae``.

    Raises ValueError for images the model does not take (shape, range).
    """
    from keras import ops

    x = vae.check_images(x)

    def encode(x_batch):
        z_mean, z_log_var = vae.encoder(ops.convert_to_tensor(x_batch), training=False)
        return ops.convert_to_numpy(z_mean), ops.convert_to_numpy(z_log_var)

    def log_px_given_z(x_batch, z):
        return ops.convert_to_numpy(vae.log_px_given_z(ops.convert_to_tensor(x_batch),
                                                       ops.convert_to_tensor(z)))

    def decode_mean(z):
        params = vae.decoder(ops.convert_to_tensor(z), training=False)
        return ops.convert_to_numpy(vae.decoder_output_to_mean(params))

    return score_images(x, encode, log_px_given_z, decode_mean, vae.prior_parameters(),
                        num_samples, batch_size, seed, progress)


def calibrate_keras(vae, images: np.ndarray, description: str, score: str = "log_px",
                    fpr: float = 0.01, num_samples: int = 100, seed: int = 0,
                    batch_size: int = 100) -> AnomalyThreshold:
    """The threshold on ``score`` flagging at most ``fpr`` of ``images`` (held-out normal data).

    ``description`` names the images (a dataset and split) in the threshold. See
    `keras_vae.core.anomaly.threshold_from_scores`.
    """
    scores = keras_scores(vae, images, num_samples, batch_size, seed)
    return threshold_from_scores(scores, score, fpr, description)
