"""Exporting a `HierarchicalVAE`: its decoder, encoder and log-weight graph, in noise space.

The three graphs of the hierarchical contract (`keras_vae.core.hierarchy`, docs/hierarchical.md):

* ``decoder.onnx``: ``z`` float32 [batch, D], the standard-normal noise of every group,
  concatenated top-down -> ``x_mean`` [batch, H, W, C] (z_l = μ_p,l + σ_p,l·ε_l, top-down);
* ``encoder.onnx``: ``x`` -> ``z_mean``, ``z_log_var`` [batch, D], the posterior in noise space;
* ``log_weight.onnx``: ``x``, ``epsilon`` [batch, D] -> ``log_weight`` [batch], log p(x, z) −
  log q(z|x) for z drawn from q with that noise, so log p(x) needs onnxruntime alone.

Each goes through the same tf2onnx conversion and checks as the single-latent graphs
(`keras_vae.export.onnx`): onnx.checker, then onnxruntime against Keras on the same inputs.
"""

import os

import numpy as np

from keras_vae.core import contract
from keras_vae.core.files import write_bytes_atomic
from keras_vae.core.hierarchy import encode_groups
from keras_vae.export.onnx import DEFAULT_OPSET
from keras_vae.export.onnx import PARITY_TOLERANCE
from keras_vae.export.onnx import _convert
from keras_vae.export.onnx import common_metadata

#: Graph -> its output names.
OUTPUTS = {"decoder": [contract.DECODER_OUTPUT], "encoder": list(contract.ENCODER_OUTPUTS),
           "log_weight": [contract.LOG_WEIGHT_OUTPUT]}


class _Graph:
    """A function of the model's tensors that `_convert` traces like a Keras model."""

    def __init__(self, name, function):
        self.name, self.function = name, function

    def __call__(self, inputs, training=False):
        return self.function(*inputs) if isinstance(inputs, list) else self.function(inputs)


def hierarchical_metadata(vae):
    """The metadata of every graph of a hierarchical export (strings; keys in `contract`)."""
    metadata = common_metadata(vae, vae.noise_size)
    metadata.update({contract.MODEL: "hierarchical",
                     contract.LATENT_GROUPS: encode_groups(vae.latent_groups())})
    return metadata


def export_hierarchical(vae, decoder_path, encoder_path=None, log_weight_path=None,
                        opset=DEFAULT_OPSET, metadata=None, tolerance=PARITY_TOLERANCE):
    """Writes the decoder (and, where paths are given, the encoder and the log-weight graph).

    Every graph is converted and checked before any file is written, so a failed check
    (`keras_vae.export.onnx.ExportError`) leaves none of them behind. Returns
    {graph: summary} for the graphs written, each summary with its path.
    """
    props = dict(metadata or {}, **hierarchical_metadata(vae))
    wanted = {"decoder": decoder_path, "encoder": encoder_path, "log_weight": log_weight_path}
    converted = {name: convert_graph(vae, name, opset, props, tolerance)
                 for name, path in wanted.items() if path}
    summaries = {}
    for name, (data, summary) in converted.items():
        write_bytes_atomic(wanted[name], data)
        summaries[name] = dict(summary, path=os.path.abspath(wanted[name]))
    return summaries


def convert_graph(vae, name, opset, props, tolerance=PARITY_TOLERANCE):
    """One graph ("decoder", "encoder" or "log_weight") as checked ONNX bytes, and its summary."""
    noise_size, image_shape = vae.noise_size, tuple(vae.image_shape)

    def noise(rng, batch_size):
        return rng.standard_normal((batch_size, noise_size)).astype("float32")

    def images(rng, batch_size):
        x = rng.random((batch_size,) + image_shape).astype("float32")
        if vae.likelihood == "bernoulli":
            return (x < 0.5).astype("float32")
        if vae.likelihood in ("discretized_logistic", "logistic_mixture"):
            return np.round(x * 255.0) / np.float32(255.0)
        return x

    if name == "decoder":
        graph, specs = _Graph("hierarchical_decoder", vae.noise_to_mean), {
            contract.DECODER_INPUT: (noise_size,)}

        def reference(z):
            return [vae.decode(z)]

        def random_inputs(batch_size, rng):
            return {contract.DECODER_INPUT: noise(rng, batch_size)}
    elif name == "encoder":
        graph, specs = _Graph("hierarchical_encoder", vae.posterior_noise), {
            contract.ENCODER_INPUT: image_shape}

        def reference(x):
            return list(vae.encode(x))

        def random_inputs(batch_size, rng):
            return {contract.ENCODER_INPUT: images(rng, batch_size)}
    elif name == "log_weight":
        graph = _Graph("hierarchical_log_weight", vae.flat_log_weights)
        specs = dict(zip(contract.LOG_WEIGHT_INPUTS, (image_shape, (noise_size,))))

        def reference(x, epsilon):
            return [vae.numpy_log_weights(x, epsilon)]

        def random_inputs(batch_size, rng):
            return dict(zip(contract.LOG_WEIGHT_INPUTS, (images(rng, batch_size),
                                                          noise(rng, batch_size))))
    else:
        raise ValueError(f"graph must be one of {tuple(OUTPUTS)}, got {name!r}")
    return _convert(graph, specs, OUTPUTS[name], opset, props, random_inputs, reference, tolerance)
