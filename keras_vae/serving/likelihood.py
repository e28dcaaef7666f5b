"""log p(x) and log p(x|z) from the exported files alone (onnxruntime, no Keras).

The adapter between `keras_vae.core.likelihood`'s estimator, which takes the model
as two functions, and the exported graphs: an ``encoder.onnx``
(`keras_vae.serving.encoder.Encoder`) and a ``decoder.onnx``
(`keras_vae.serving.sampler.Sampler`), whose metadata says how to score.
"""

from __future__ import annotations

import numpy as np

from keras_vae.core import contract
from keras_vae.core.likelihood import (LogPxGivenZ, bernoulli_log_prob, bernoulli_log_prob_from_logits,
                                       decoder_params_log_prob, discretized_logistic_log_prob,
                                       gaussian_log_prob, log_likelihood)
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.sampler import Sampler

__all__ = ["onnx_log_likelihood", "onnx_log_px_given_z"]


def onnx_log_likelihood(encoder: Encoder, decoder: Sampler, x: np.ndarray, num_samples: int = 1000,
                        batch_size: int = 100, samples_per_chunk: int | None = None,
                        seed: int | None = 0, labels: np.ndarray | None = None) -> np.ndarray:
    """`keras_vae.core.likelihood.log_likelihood` of images x (N, H, W, C) from the exported
    files alone, in nats (log p(x|y) of a class-conditional export, given labels (N,)).

    The prior, the likelihood and the decoder's spread come from the decoder's
    metadata (see `onnx_log_px_given_z`).

    Returns:
        (N,) float64.
    """
    return log_likelihood(x, encoder.encode, onnx_log_px_given_z(decoder), decoder.prior,
                          num_samples, batch_size, samples_per_chunk, seed, labels=labels)


def onnx_log_px_given_z(decoder: Sampler) -> LogPxGivenZ:
    """log p(x|z) of an exported decoder, in nats: (x (B, H, W, C), z (k, B, D)[, y (B,)]) -> (k, B).

    A Bernoulli decoder is scored from its ``logits`` output
    (`keras_vae.core.likelihood.bernoulli_log_prob_from_logits`), as Keras scores it. A
    file exported without that output is scored from its probabilities, clipped to
    [PROBABILITY_FLOOR, 1 − PROBABILITY_FLOOR], so there a saturated pixel costs at most
    −log(1e-7) ≈ 16 nats where the exact value may be more. An 8-bit decoder with an
    ``x_params`` output (a discretized logistic whose scale depends on z, a logistic mixture)
    is scored from those parameters (`keras_vae.core.likelihood.decoder_params_log_prob`).
    Raises ValueError when the metadata cannot say how to score (a Gaussian decoder without
    ``decoder_log_var``, a mixture without ``mixture_components``).
    """
    decode = decoder.decode
    if decoder.params_name is not None:
        components = (contract.read_mixture_components(decoder.metadata)
                      if decoder.likelihood == "logistic_mixture" else None)

        def pixels_log_prob(x_batch, params):
            return decoder_params_log_prob(decoder.likelihood, x_batch, params, components)

        def decode(z, batch_size=None, **given):
            return decoder.decode(z, batch_size, output=decoder.params_name, **given)
    elif decoder.likelihood in contract.DECODER_SPREAD_KEYS:
        spread = contract.decoder_spread(decoder.metadata, decoder.likelihood, decoder.image_shape)
        if spread is None:
            key = contract.DECODER_SPREAD_KEYS[decoder.likelihood]
            name = {"gaussian": "Gaussian"}.get(decoder.likelihood, decoder.likelihood.replace("_", " "))
            raise ValueError(f"the decoder's metadata has no {key}, so its {name} likelihood "
                             "cannot be scored; export it again")
        density = (gaussian_log_prob if decoder.likelihood == "gaussian"
                   else discretized_logistic_log_prob)

        def pixels_log_prob(x_batch, means):
            return density(x_batch, means, spread)
    elif decoder.likelihood == "bernoulli" and decoder.logits_name is not None:
        pixels_log_prob, decode = bernoulli_log_prob_from_logits, decoder.decode_logits
    elif decoder.likelihood == "bernoulli":
        pixels_log_prob = bernoulli_log_prob
    else:
        raise ValueError(f"cannot score a decoder whose likelihood is {decoder.likelihood!r}")

    def log_px_given_z(x_batch, z, y_batch=None):  # z (k, B, D), y (B,) -> (k, B)
        given = {} if y_batch is None else {"labels": np.tile(np.asarray(y_batch), z.shape[0])}
        outputs = decode(z.reshape(-1, z.shape[-1]), batch_size=4096, **given)
        return pixels_log_prob(x_batch, outputs.reshape(z.shape[:2] + outputs.shape[1:]))

    return log_px_given_z
