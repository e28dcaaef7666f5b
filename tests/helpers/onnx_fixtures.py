"""Small ONNX decoders for tests, built with ``onnx.helper`` (no Keras needed).

The graph follows the decoder contract of ``keras-vae export``:

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
    with_logits: bool = False,
    weight_scale: float = 1.0,
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
        with_logits: a Bernoulli decoder gets the second output ``logits`` [batch, H, W, C]
            that ``keras-vae export`` writes (older files have only ``x_mean``).
        weight_scale: multiplies the weights and bias (large values saturate the sigmoid).
    """
    if likelihood not in ("bernoulli", "gaussian", "discretized_logistic"):
        raise ValueError(f"unknown likelihood {likelihood!r}")
    h, w, c = image_shape
    size = h * w * c
    rng = np.random.default_rng(seed)
    weight = (weight_scale * rng.normal(0.0, 1.0, (latent_dim, size))).astype(np.float32)
    bias = (weight_scale * rng.normal(0.0, 0.5, (size,))).astype(np.float32)

    nodes = [
        helper.make_node("MatMul", ["z", "W"], ["zw"]),
        helper.make_node("Add", ["zw", "b"], ["flat_logits"]),
    ]
    flat = "flat_logits"
    if likelihood in ("bernoulli", "discretized_logistic"):  # probabilities, or the location μ
        nodes.append(helper.make_node("Sigmoid", ["flat_logits"], ["probs"]))
        flat = "probs"
    nodes.append(helper.make_node("Reshape", [flat, "shape"], ["x_mean"]))
    outputs = [helper.make_tensor_value_info("x_mean", TensorProto.FLOAT, ["batch", h, w, c])]
    if with_logits:
        if likelihood != "bernoulli":
            raise ValueError("only a Bernoulli decoder has a logits output")
        nodes.append(helper.make_node("Reshape", ["flat_logits", "shape"], ["logits"]))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", h, w, c]))

    graph = helper.make_graph(
        nodes,
        "vae_decoder",
        inputs=[helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent_dim])],
        outputs=outputs,
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


def reference_decode(path: str | os.PathLike, z: np.ndarray, logits: bool = False) -> np.ndarray:
    """Decode ``z`` [n, latent_dim] with NumPy using the weights stored in ``path``.

    Returns float64 ``[n, H, W, C]`` pixel means (with ``logits``, the sigmoid's input).
    Independent of onnxruntime.
    """
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ops = [node.op_type for node in model.graph.node]
    raw = np.asarray(z, dtype=np.float64) @ init["W"].astype(np.float64) + init["b"]
    out = 1.0 / (1.0 + np.exp(-raw)) if "Sigmoid" in ops and not logits else raw
    return out.reshape(-1, *[int(d) for d in init["shape"][1:]])


def make_encoder_onnx(
    path: str | os.PathLike,
    latent_dim: int = 4,
    image_shape: tuple[int, int, int] = (8, 8, 1),
    *,
    seed: int = 1,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write an encoder ONNX file (the contract's x -> z_mean, z_log_var) and return the path.

    ``z_mean = flat(x) @ Wm + bm`` and ``z_log_var = clip(flat(x) @ Wv + bv, -4, 2)``,
    with fixed pseudo-random weights; :func:`reference_encode` recomputes it in NumPy.
    """
    h, w, c = image_shape
    size = h * w * c
    rng = np.random.default_rng(seed)
    initializers = {
        "Wm": rng.normal(0.0, 1.0 / np.sqrt(size), (size, latent_dim)).astype(np.float32),
        "bm": rng.normal(0.0, 0.1, (latent_dim,)).astype(np.float32),
        "Wv": rng.normal(0.0, 0.5 / np.sqrt(size), (size, latent_dim)).astype(np.float32),
        "bv": rng.normal(-1.0, 0.1, (latent_dim,)).astype(np.float32),
        "flat_shape": np.array([-1, size], dtype=np.int64),
        "low": np.array(-4.0, np.float32),
        "high": np.array(2.0, np.float32),
    }
    nodes = [
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "Wm"], ["xm"]),
        helper.make_node("Add", ["xm", "bm"], ["z_mean"]),
        helper.make_node("MatMul", ["flat", "Wv"], ["xv"]),
        helper.make_node("Add", ["xv", "bv"], ["raw_log_var"]),
        helper.make_node("Clip", ["raw_log_var", "low", "high"], ["z_log_var"]),
    ]
    graph = helper.make_graph(
        nodes, "encoder",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", h, w, c])],
        outputs=[helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", latent_dim])
                 for name in ("z_mean", "z_log_var")],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="keras-vae-tests")
    model.ir_version = 8
    helper.set_model_props(model, {"latent_dim": str(latent_dim), "image_shape": json.dumps(list(image_shape)),
                                   "likelihood": "bernoulli", **(metadata or {})})
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def reference_encode(path: str | os.PathLike, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z_mean, z_log_var) of ``x`` [n, H, W, C] in NumPy from the weights in ``path`` (float64)."""
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    z_mean = flat @ init["Wm"].astype(np.float64) + init["bm"]
    z_log_var = np.clip(flat @ init["Wv"].astype(np.float64) + init["bv"], -4.0, 2.0)
    return z_mean, z_log_var


def make_params_decoder_onnx(
    path: str | os.PathLike,
    likelihood: str = "discretized_logistic",
    latent_dim: int = 3,
    image_shape: tuple[int, int, int] = (4, 3, 3),
    mixture_components: int | None = None,
    *,
    seed: int = 0,
) -> Path:
    """Write an 8-bit decoder with the ``x_params`` output (``contract.DECODER_PARAMS``), and return the path.

    ``x_params = tanh(z @ W + b) · scale + shift`` per pixel, [batch, H, W, P], with ``scale`` and
    ``shift`` chosen per block of the layout (`keras_vae.core.contract.split_decoder_params`) so
    that every parameter lies in a sensible range: locations and means around [0, 1], log-scales
    in [-4, -1], logits and coupling coefficients in [-2, 2]. ``x_mean`` is the first C values of
    the location (or component 0's means) block, clipped to [0, 1]. :func:`reference_params`
    recomputes ``x_params`` in NumPy.
    """
    h, w, c = image_shape
    if likelihood == "discretized_logistic":
        blocks = [(c, 0.5, 0.5), (c, 1.5, -2.5)]
    elif likelihood == "logistic_mixture":
        m = mixture_components
        blocks = [(m, 2.0, 0.0), (m * c, 0.6, 0.5), (m * c, 1.5, -2.5), (m * c * (c - 1) // 2, 2.0, 0.0)]
    else:
        raise ValueError(f"no x_params for a {likelihood} decoder")
    scale = np.concatenate([np.full(n, s) for n, s, _ in blocks]).astype(np.float32)
    shift = np.concatenate([np.full(n, t) for n, _, t in blocks]).astype(np.float32)
    width = len(scale)
    start = blocks[0][0] if likelihood == "logistic_mixture" else 0
    rng = np.random.default_rng(seed)
    initializers = {
        "W": rng.normal(0.0, 1.0, (latent_dim, h * w * width)).astype(np.float32),
        "b": rng.normal(0.0, 0.5, (h * w * width,)).astype(np.float32),
        "shape": np.array([-1, h, w, width], dtype=np.int64),
        "scale": scale, "shift": shift,
        "starts": np.array([start], np.int64), "ends": np.array([start + c], np.int64),
        "axes": np.array([3], np.int64), "low": np.array(0.0, np.float32), "high": np.array(1.0, np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["z", "W"], ["zw"]),
        helper.make_node("Add", ["zw", "b"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["raw"]),
        helper.make_node("Tanh", ["raw"], ["squashed"]),
        helper.make_node("Mul", ["squashed", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["x_params"]),
        helper.make_node("Slice", ["x_params", "starts", "ends", "axes"], ["first"]),
        helper.make_node("Clip", ["first", "low", "high"], ["x_mean"]),
    ]
    graph = helper.make_graph(
        nodes, "vae_decoder",
        inputs=[helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent_dim])],
        outputs=[helper.make_tensor_value_info("x_mean", TensorProto.FLOAT, ["batch", h, w, c]),
                 helper.make_tensor_value_info("x_params", TensorProto.FLOAT, ["batch", h, w, width])],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="keras-vae-tests")
    model.ir_version = 8
    props = {"latent_dim": str(latent_dim), "image_shape": json.dumps(list(image_shape)),
             "likelihood": likelihood, "keras_vae_version": "0.0.0-test", "dataset": "synthetic"}
    if mixture_components is not None:
        props["mixture_components"] = str(mixture_components)
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def reference_params(path: str | os.PathLike, z: np.ndarray) -> np.ndarray:
    """``x_params`` [n, H, W, P] of a :func:`make_params_decoder_onnx` file, in float64 NumPy."""
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    raw = np.asarray(z, np.float64) @ init["W"].astype(np.float64) + init["b"]
    raw = raw.reshape(-1, *[int(d) for d in init["shape"][1:]])
    return np.tanh(raw) * init["scale"] + init["shift"]
