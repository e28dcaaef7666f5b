"""Exporting a fitted prior (`keras_vae.priors`) as ``prior.onnx``, beside the decoder.

The graph is the prior's `graph` (`keras_vae.core.fitted_prior.TENSORS`: a Gaussian mixture's
ε, component -> z; a flow's ε -> z; a diffusion model's denoiser x, t -> noise), converted by
the same tf2onnx path and checked by the same parity test as the decoder
(`keras_vae.export.onnx`): onnx.checker, then onnxruntime against Keras on the same inputs at
batch sizes 1, 7 and 64. Its metadata is the decoder's shapes (and a hierarchical model's
latent groups), so that a server can check that the prior fits the decoder it serves, and the
fitted-prior entries the sampling loop reads (`keras_vae.core.fitted_prior`).
"""

import os

from keras_vae.core import contract, fitted_prior
from keras_vae.core.files import write_bytes_atomic
from keras_vae.export.hierarchical import _Graph, hierarchical_metadata
from keras_vae.export.onnx import DEFAULT_OPSET, PARITY_TOLERANCE, _convert, common_metadata


def prior_metadata(vae, prior, steps=None, eta=None):
    """The metadata of ``prior.onnx`` for ``prior`` fitted to ``vae``'s latents (strings)."""
    hierarchical = hasattr(vae, "latent_groups")
    metadata = hierarchical_metadata(vae) if hierarchical else common_metadata(vae, vae.latent_dim)
    description = prior.fitted_prior(steps, eta) if prior.kind == "diffusion" else prior.fitted_prior()
    groups = vae.latent_groups() if hierarchical else None
    fitted_prior.check_fits(description, int(metadata[contract.LATENT_DIM]), groups)
    metadata.update(fitted_prior.encode_fitted_prior(description))
    return metadata


def export_prior(vae, prior, path, opset=DEFAULT_OPSET, metadata=None, steps=None, eta=None,
                 tolerance=PARITY_TOLERANCE):
    """Writes ``prior`` (fitted to ``vae``) as ONNX at ``path``, after the checks.

    ``steps`` and ``eta`` set a diffusion prior's sampler (default: its own). Returns the
    summary `keras_vae.export.onnx.export_decoder` returns.
    """
    props = dict(metadata or {}, **prior_metadata(vae, prior, steps, eta))
    specs = prior.input_specs()
    names = list(specs)
    second = prior.train_steps if prior.kind == "diffusion" else getattr(prior, "components", 1)

    def random_inputs(batch_size, rng):
        inputs = {names[0]: rng.standard_normal((batch_size, prior.dim)).astype("float32")}
        if len(names) > 1:
            inputs[names[1]] = rng.integers(0, second, batch_size).astype("int64")
        return inputs

    def reference(*inputs):
        return [prior.run_graph(dict(zip(names, inputs)))]

    graph = _Graph(f"{prior.kind}_prior", lambda *inputs: prior.graph(*inputs))
    _, output = fitted_prior.TENSORS[prior.kind]
    data, summary = _convert(graph, specs, [output], opset, props, random_inputs, reference,
                             tolerance)
    write_bytes_atomic(path, data)
    return dict(summary, path=os.path.abspath(path), kind=prior.kind)


def prior_path_beside(decoder_path):
    """Where the prior of the decoder at ``decoder_path`` goes: ``prior.onnx`` in its folder."""
    return os.path.join(os.path.dirname(os.path.abspath(decoder_path)), fitted_prior.PRIOR_FILE)

