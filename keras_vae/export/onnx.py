"""Exporting a trained VAE's decoder (and encoder) to ONNX, validated before it is written.

One conversion path for every model: the `.keras` file is loaded under the
TensorFlow backend and converted with tf2onnx. A `.keras` file loads in any
backend, so a model trained on JAX or torch goes through the same converter
and gets the same graph contract, op set and tensor names; tf2onnx is the
most mature Keras→ONNX converter and handles dynamic batch axes cleanly.
`keras-vae export` sets KERAS_BACKEND=tensorflow itself.

The decoder graph: input `z` float32 [batch, latent_dim] (symbolic batch)
-> output `x_mean` float32 [batch, H, W, C] (probabilities for a Bernoulli
decoder: the sigmoid is in the graph; the mean for a Gaussian one; the location
μ in [0, 1] for a discretized logistic one, the mean pixel for a logistic mixture). A Bernoulli
decoder has a second output, `logits` (`contract.DECODER_LOGITS`), the sigmoid's
input, from which log p(x|z) is scored without the float32 sigmoid's saturation. An 8-bit
decoder whose parameters are all decoder outputs (a discretized logistic whose scale depends
on z, a logistic mixture) has a second output, `x_params` (`contract.DECODER_PARAMS`), those
parameters per pixel, from which log p(x|z) is scored; a discretized logistic with one learned
log-scale per pixel carries it in the metadata (`decoder_log_scale`) instead. A
class-conditional model's decoder also takes `label` int64 [batch], and its
encoder `x` and `label` (`keras_vae.core.contract.LABEL_INPUT`); their metadata
lists the class names (`contract.CLASS_NAMES`).
"""

import datetime
import json
import os
import time
import numpy as np
import keras
import keras_vae
from keras_vae.core import contract
from keras_vae.core.contract import DEFAULT_OPSET
from keras_vae.core.contract import PARITY_TOLERANCE
from keras_vae.core.files import write_bytes_atomic




PARITY_BATCH_SIZES = (1, 7, 64)



class ExportError(RuntimeError):
    """The exported graph failed a check; nothing was written."""


def export_decoder(vae, path, opset=DEFAULT_OPSET, metadata=None, tolerance=PARITY_TOLERANCE):
    """Writes the decoder z -> x_mean (and logits, Bernoulli) as ONNX at `path`, after checking it.

    Checks, before the file appears: `onnx.checker.check_model(full_check=True)`,
    then onnxruntime against the Keras decoder on the same random z for batch
    sizes 1, 7 and 64 (max absolute difference ≤ tolerance; for the logits, relative
    to their size where it is above 1).

    Returns:
        A summary dict: path, bytes, opset, input/output shapes, parity per
        batch size, seconds.
    """
    data, summary = _convert_decoder(vae, opset, metadata, tolerance)
    write_bytes_atomic(path, data)
    return dict(summary, path=os.path.abspath(path))


def _convert_decoder(vae, opset, metadata, tolerance):
    """The fp32 decoder graph z (, label) -> x_mean (, logits) as checked ONNX bytes, and its summary."""
    z = keras.Input(shape=(vae.latent_dim,), name=contract.DECODER_INPUT)
    inputs, label = _with_label_input(vae, z)
    params = vae.decoder(vae.with_labels(z, label))
    outputs, output_names = [vae.decoder_output_to_mean(params)], [contract.DECODER_OUTPUT]
    if vae.likelihood == "bernoulli":  # the logits too, so that scorers need no clipped sigmoid
        outputs.append(params)
        output_names.append(contract.DECODER_LOGITS)
    if vae.params_output:  # p(x|z)'s parameters, from which scorers compute log p(x|z)
        outputs.append(vae.decoder_output_to_params(params))
        output_names.append(contract.DECODER_PARAMS)
    decoder = keras.Model(inputs, outputs, name="vae_decoder")

    def reference(z_batch, labels=None):
        means = vae.decode(z_batch, labels=labels)
        if vae.likelihood == "bernoulli":
            return [means, vae.decoder_logits(z_batch, labels=labels)]
        if vae.params_output:
            return [means, vae.decoder_distribution_params(z_batch, labels=labels)]
        return [means]

    def random_inputs(batch_size, rng):
        return _with_random_labels(vae, rng, batch_size, {contract.DECODER_INPUT:
                                   rng.standard_normal((batch_size, vae.latent_dim)).astype("float32")})

    props = dict(metadata or {}, **model_metadata(vae))
    return _convert(decoder, _input_specs(vae, contract.DECODER_INPUT, (vae.latent_dim,)),
                    output_names, opset, props, random_inputs, reference, tolerance)


def _with_label_input(vae, first_input):
    """(model inputs, int32 label tensor or None): a conditional graph's second input, int64 `label`."""
    if not vae.conditional:
        return first_input, None
    label = keras.Input(shape=(), dtype="int64", name=contract.LABEL_INPUT)
    return [first_input, label], keras.ops.cast(label, "int32")


def _with_random_labels(vae, rng, batch_size, inputs):
    if vae.conditional:
        inputs[contract.LABEL_INPUT] = rng.integers(0, vae.num_classes, batch_size).astype("int64")
    return inputs


def _input_specs(vae, name, shape):
    """{input name: (shape without batch, tf dtype name)} of a graph: the data, and a conditional label."""
    specs = {name: (shape, "float32")}
    if vae.conditional:
        specs[contract.LABEL_INPUT] = ((), "int64")
    return specs


def export_encoder(vae, path, opset=DEFAULT_OPSET, metadata=None, tolerance=PARITY_TOLERANCE):
    """Writes the encoder x -> (z_mean, z_log_var) as ONNX, checked as `export_decoder`."""
    data, summary = _convert_encoder(vae, opset, metadata, tolerance)
    write_bytes_atomic(path, data)
    return dict(summary, path=os.path.abspath(path))


def _convert_encoder(vae, opset, metadata, tolerance):
    def reference(x_batch, labels=None):
        return list(vae.encode(x_batch, labels=labels))

    def random_inputs(batch_size, rng):
        return _with_random_labels(vae, rng, batch_size, {contract.ENCODER_INPUT:
                                   rng.random((batch_size,) + vae.image_shape).astype("float32")})

    encoder = vae.encoder
    if vae.conditional:
        x = keras.Input(shape=vae.image_shape, name=contract.ENCODER_INPUT)
        inputs, label = _with_label_input(vae, x)
        encoder = keras.Model(inputs, vae.encoder([x, label]), name="encoder")
    props = dict(metadata or {}, **model_metadata(vae))
    return _convert(encoder, _input_specs(vae, contract.ENCODER_INPUT, vae.image_shape),
                    list(contract.ENCODER_OUTPUTS), opset, props, random_inputs, reference,
                    tolerance)


def common_metadata(model, latent_dim):
    """The metadata every exported graph of any model of the family carries: precision,
    latent_dim (the width of the decoder's input), image_shape, likelihood, version, creation
    time, and source_backend when the model records it."""
    metadata = {
        contract.PRECISION: "fp32",
        contract.LATENT_DIM: str(latent_dim),
        contract.IMAGE_SHAPE: "[" + ", ".join(str(d) for d in model.image_shape) + "]",
        contract.LIKELIHOOD: model.likelihood,
        contract.VERSION: keras_vae.__version__,
        contract.CREATED: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if model.source_backend:
        metadata[contract.SOURCE_BACKEND] = model.source_backend
    return metadata


def model_metadata(vae):
    """The metadata every exported graph carries (strings; keys in `keras_vae.core.contract`).

    latent_dim, image_shape, likelihood, keras_vae_version, created, and
    source_backend when the model records it. A model with a learned mixture
    prior also carries "prior" (`contract.encode_prior`), so that a sampler
    can draw z from it; a Gaussian decoder carries "decoder_log_var", a discretized logistic
    one with a per-pixel scale "decoder_log_scale", and a logistic mixture "mixture_components",
    so that log p(x) can be scored from the ONNX files alone.
    """
    metadata = common_metadata(vae, vae.latent_dim)
    if vae.likelihood == "gaussian":
        log_var = keras.ops.convert_to_numpy(vae.decoder_log_variance())
        metadata[contract.DECODER_LOG_VAR] = contract.encode_decoder_log_var(log_var)
    if vae.decoder_log_scale is not None:
        log_scale = keras.ops.convert_to_numpy(vae.decoder_log_scale_clipped())
        metadata[contract.DECODER_LOG_SCALE] = contract.encode_decoder_log_var(log_scale)
    if vae.likelihood == "logistic_mixture":
        metadata[contract.MIXTURE_COMPONENTS] = str(vae.mixture_components)
    prior = vae.prior_parameters()
    if prior is not None:
        metadata[contract.PRIOR] = contract.encode_prior(prior)
    if vae.conditional:
        metadata[contract.CLASS_NAMES] = json.dumps(list(vae.class_names))
    return metadata


def _convert(model, input_shapes, output_names, opset, props, random_inputs, reference, tolerance):
    """Converts `model` with tf2onnx and checks it; returns (serialized ONNX, summary)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "ONNX export runs under KERAS_BACKEND=tensorflow (any backend's .keras file loads "
            "there); use `keras-vae export`, which sets it."
        )
    started = time.perf_counter()
    # input_shapes: {name: shape}, float32, or {name: (shape, dtype name)}.
    input_shapes = {name: spec if isinstance(spec, tuple) and len(spec) == 2
                    and isinstance(spec[1], str) else (spec, "float32")
                    for name, spec in input_shapes.items()}
    signature = [tf.TensorSpec((None,) + tuple(shape), getattr(tf, dtype), name=name)
                 for name, (shape, dtype) in input_shapes.items()]

    @tf.function(input_signature=signature)
    def forward(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return list(outputs)  # a list keeps the order; tf2onnx names them Identity*:0

    onnx_model, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=opset)
    _name_outputs(onnx_model, output_names)
    onnx_model.graph.name = model.name
    onnx_model.doc_string = ""
    onnx_model.producer_name = "keras_vae"
    onnx_model.producer_version = keras_vae.__version__
    onnx.helper.set_model_props(onnx_model, props)
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"onnx.checker rejected the graph: {error}") from None

    data = onnx_model.SerializeToString()
    parity = _check_parity(data, random_inputs, reference, output_names, tolerance)
    return data, {
        "precision": "fp32",
        "bytes": len(data),
        "opset": opset,
        "inputs": {name: ["batch", *shape] for name, (shape, _) in input_shapes.items()},
        "outputs": {node.name: [d.dim_param or d.dim_value
                                for d in node.type.tensor_type.shape.dim]
                    for node in onnx_model.graph.output},
        "max_abs_diff": parity,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _name_outputs(onnx_model, output_names):
    """Renames the graph outputs to `output_names`, in order, wherever they are referenced,
    and calls the leading axis of every input and output "batch"."""
    for value in list(onnx_model.graph.input) + list(onnx_model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    renames = {}
    for output, name in zip(onnx_model.graph.output, output_names):
        renames[output.name] = name
        output.name = name
    for node in onnx_model.graph.node:
        node.output[:] = [renames.get(n, n) for n in node.output]
        node.input[:] = [renames.get(n, n) for n in node.input]


def _check_parity(model_bytes, random_inputs, reference, output_names, tolerance):
    """Runs onnxruntime and the Keras model on the same inputs; returns max |diff| per batch size,
    each difference taken relative to the size of the Keras value above 1 (|diff| / max(1, |keras|)):
    absolute for bounded outputs such as pixels, relative for unbounded ones such as logits and
    log weights, whose float32 rounding grows with them."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    parity = {}
    for batch_size in PARITY_BATCH_SIZES:
        inputs = random_inputs(batch_size, rng)
        got = session.run(output_names, inputs)
        expected = reference(*inputs.values())
        diff = max(float(np.max(np.abs(g - e) / np.maximum(1.0, np.abs(e))))
                   for g, e in zip(got, expected))
        parity[batch_size] = diff
        if not diff <= tolerance:
            raise ExportError(
                f"onnxruntime output differs from Keras by {diff:.3g} at batch size "
                f"{batch_size} (tolerance {tolerance:g}); nothing was written"
            )
    return parity
