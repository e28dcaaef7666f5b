"""Small ONNX decoders for tests, built with ``onnx.helper`` (no Keras needed).

The graph follows the decoder contract of ``pipelines/export.py``:

    z: float32 [batch, latent_dim]  ->  x_mean: float32 [batch, H, W, C]

computed as ``x_mean = act(z @ W + b).reshape(-1, H, W, C)`` where ``act`` is
a sigmoid for a Bernoulli decoder and the identity for a Gaussian one (so its
means are real-valued and fall outside [0, 1]). The weights are fixed
pseudo-random numbers. :func:`reference_decode` recomputes the same function
in plain NumPy from the weights stored in the file, as an independent truth.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def make_decoder_onnx(
    path: str | os.PathLike,
    latent_dim: int = 4,
    image_shape: tuple[int, int, int] = (8, 8, 1),
    likelihood: str = "bernoulli",
    *,
    with_metadata: bool = True,
    metadata: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a decoder ONNX file to ``path`` and return the path.

    Args:
        path: destination ``.onnx`` file.
        latent_dim: width of the input ``z``.
        image_shape: ``(H, W, C)`` of one output image.
        likelihood: ``"bernoulli"`` (sigmoid output) or ``"gaussian"`` (linear).
        with_metadata: when False the file has no metadata at all, so readers
            must fall back to the graph shapes.
        metadata: extra or overriding metadata entries (strings).
        seed: seed of the fixed random weights.
    """
    if likelihood not in ("bernoulli", "gaussian"):
        raise ValueError(f"unknown likelihood {likelihood!r}")
    h, w, c = image_shape
    size = h * w * c
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 1.0, (latent_dim, size)).astype(np.float32)
    bias = rng.normal(0.0, 0.5, (size,)).astype(np.float32)

    nodes = [
        helper.make_node("MatMul", ["z", "W"], ["zw"]),
        helper.make_node("Add", ["zw", "b"], ["logits"]),
    ]
    flat = "logits"
    if likelihood == "bernoulli":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probs"]))
        flat = "probs"
    nodes.append(helper.make_node("Reshape", [flat, "shape"], ["x_mean"]))

    graph = helper.make_graph(
        nodes,
        "vae_decoder",
        inputs=[helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent_dim])],
        outputs=[
            helper.make_tensor_value_info("x_mean", TensorProto.FLOAT, ["batch", h, w, c])
        ],
        initializer=[
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(np.array([-1, h, w, c], dtype=np.int64), "shape"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="keras-vae-tests",
    )
    model.ir_version = 8
    if with_metadata:
        props = {
            "latent_dim": str(latent_dim),
            "image_shape": json.dumps(list(image_shape)),
            "likelihood": likelihood,
            "keras_vae_version": "0.0.0-test",
            "source_backend": "numpy",
            "dataset": "synthetic",
            "created": "2024-01-01T00:00:00Z",
        }
        props.update(metadata or {})
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def reference_decode(path: str | os.PathLike, z: np.ndarray) -> np.ndarray:
    """Decode ``z`` [n, latent_dim] with NumPy using the weights stored in ``path``.

    Returns float64 ``[n, H, W, C]`` pixel means. Independent of onnxruntime.
    """
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ops = [node.op_type for node in model.graph.node]
    logits = np.asarray(z, dtype=np.float64) @ init["W"].astype(np.float64) + init["b"]
    out = 1.0 / (1.0 + np.exp(-logits)) if "Sigmoid" in ops else logits
    return out.reshape(-1, *[int(d) for d in init["shape"][1:]])
