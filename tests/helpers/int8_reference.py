"""A NumPy evaluation of a quantized (QDQ) ONNX decoder, as an independent truth for onnxruntime.

`evaluate(model, feeds)` walks the graph node by node. A Gemm or MatMul whose two
inputs are DequantizeLinear outputs is computed as the integer product its graph
defines: (q_a − zp_a) @ (q_w − zp_w) summed exactly in int64 (and checked to fit
int32), then scaled by s_a·s_w, plus the bias. Every other node is computed in float32
as the ONNX operator defines it (QuantizeLinear rounds half to even and saturates).

`accumulate="vpmaddubsw"` sums uint8 × int8 products as onnxruntime's kernel for CPUs
without VNNI does (AVX2, AVX-512BW): the raw bytes' products are added in adjacent
pairs (k = 0-1, 2-3, ...) into int16 with saturation at ±32767 (VPMADDUBSW), the
pairs into int32 (VPMADDWD), and the zero points are corrected for afterwards with
row and column sums. So one can see, on any CPU, what an int8 file computes on one
without VNNI.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

INT32 = np.iinfo(np.int32)


def evaluate(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
             accumulate: str = "exact") -> dict[str, np.ndarray]:
    """The graph outputs for `feeds`, by name; `accumulate` is "exact" or "vpmaddubsw"."""
    if accumulate not in ("exact", "vpmaddubsw"):
        raise ValueError(f"unknown accumulation {accumulate!r}")
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    values.update(feeds)
    dequantized = {}  # DequantizeLinear output -> (integers, scale, zero point, axis)
    for node in model.graph.node:
        inputs = [values[name] if name else None for name in node.input]
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            dequantized[node.output[0]] = (inputs[0], inputs[1], _input(inputs, 2, np.zeros((), inputs[0].dtype)),
                                           attributes.get("axis", 1))
        if node.op_type in ("Gemm", "MatMul") and all(n in dequantized for n in node.input[:2]):
            bias = inputs[2] if len(inputs) > 2 else None
            outputs = [_integer_product(dequantized[node.input[0]], dequantized[node.input[1]],
                                        attributes, bias, accumulate)]
        else:
            outputs = _float_op(node.op_type, inputs, attributes)
        values.update(zip(node.output, outputs))
    return {output.name: values[output.name] for output in model.graph.output}


def _input(inputs, index, default):
    return inputs[index] if len(inputs) > index and inputs[index] is not None else default


def _integer_product(a, b, attributes, bias, accumulate):
    """Gemm/MatMul of two dequantized tensors as integers: (M, K) @ (K, N) -> float32 (M, N)."""
    if attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
        raise NotImplementedError("Gemm with alpha or beta other than 1")
    (qa, sa, za, _), (qb, sb, zb, axis_b) = a, b
    if attributes.get("transA", 0):
        qa = qa.T
    if attributes.get("transB", 0):
        qb, axis_b = qb.T, 1 - axis_b
    if np.ndim(sa) != 0:
        raise NotImplementedError("per-channel activations")
    if np.ndim(sb) == 1 and axis_b != 1:
        raise NotImplementedError("weights quantized per row of K")
    if accumulate == "vpmaddubsw" and qa.dtype == np.uint8 and qb.dtype == np.int8:
        total = vpmaddubsw_product(qa, qb, int(za), np.broadcast_to(zb, qb.shape[1:]))
    else:
        total = (qa.astype(np.int64) - np.int64(za)) @ (qb.astype(np.int64) - zb.astype(np.int64))
    if total.min(initial=0) < INT32.min or total.max(initial=0) > INT32.max:
        raise OverflowError("the integer product does not fit int32")
    result = total.astype(np.float64) * (np.float64(sa) * sb.astype(np.float64))
    if bias is not None:
        result = result + bias.astype(np.float64)
    return result.astype(np.float32)


def vpmaddubsw_product(qa, qb, za, zb):
    """Σ_k (qa − za)(qb − zb) for uint8 qa (M, K), int8 qb (K, N), as the VPMADDUBSW kernel sums it.

    Raw products are added in pairs of k with int16 saturation, the pairs in int32; the
    zero points are then subtracted exactly: Σ ab − za·Σ_k b − zb·Σ_k a + K·za·zb.
    Returns int64 (M, N).
    """
    m, k = qa.shape
    if k % 2:  # the kernel pads K with zeros
        qa = np.concatenate([qa, np.zeros((m, 1), qa.dtype)], axis=1)
        qb = np.concatenate([qb, np.zeros((1, qb.shape[1]), qb.dtype)], axis=0)
    a, b = qa.astype(np.int32), qb.astype(np.int32)
    raw = np.zeros((m, b.shape[1]), np.int64)
    for start in range(0, m, 16):  # 16 rows at a time keeps the (rows, K/2, N) pairs small
        rows = a[start:start + 16]
        pairs = rows[:, 0::2, None] * b[None, 0::2] + rows[:, 1::2, None] * b[None, 1::2]
        raw[start:start + 16] = np.clip(pairs, -32768, 32767).sum(axis=1, dtype=np.int64)
    zb = zb.astype(np.int64)
    return (raw - za * b.sum(axis=0, dtype=np.int64)[None, :] - a.sum(axis=1, dtype=np.int64)[:, None] * zb
            + k * za * zb)


def _float_op(op, inputs, attributes):
    x = inputs[0]
    if op == "QuantizeLinear":
        scale, zero_point = inputs[1], _input(inputs, 2, np.uint8(0))
        info = np.iinfo(zero_point.dtype)
        shape = _channel_shape(x, scale, attributes.get("axis", 1))
        q = np.rint(x.astype(np.float32) / scale.reshape(shape).astype(np.float32))
        q = q + zero_point.reshape(shape).astype(np.float32)
        return [np.clip(q, info.min, info.max).astype(zero_point.dtype)]
    if op == "DequantizeLinear":
        zero_point = _input(inputs, 2, np.zeros((), x.dtype))
        shape = _channel_shape(x, inputs[1], attributes.get("axis", 1))
        difference = x.astype(np.int64) - zero_point.reshape(shape).astype(np.int64)
        return [(difference * inputs[1].reshape(shape)).astype(np.float32)]
    if op == "Gemm":
        a = x.T if attributes.get("transA", 0) else x
        b = inputs[1].T if attributes.get("transB", 0) else inputs[1]
        y = attributes.get("alpha", 1.0) * (a.astype(np.float64) @ b.astype(np.float64))
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + attributes.get("beta", 1.0) * inputs[2]
        return [y.astype(np.float32)]
    if op == "MatMul":
        return [(x.astype(np.float64) @ inputs[1].astype(np.float64)).astype(np.float32)]
    if op == "Reshape":
        shape = [d if d != 0 else x.shape[i] for i, d in enumerate(inputs[1])]
        return [x.reshape(shape)]
    elementwise = {
        "Relu": lambda: np.maximum(x, 0), "Sigmoid": lambda: 1 / (1 + np.exp(-x.astype(np.float64))),
        "Tanh": lambda: np.tanh(x), "Exp": lambda: np.exp(x), "Identity": lambda: x,
        "Softplus": lambda: np.logaddexp(0, x.astype(np.float64)),
        "Add": lambda: x + inputs[1], "Sub": lambda: x - inputs[1], "Mul": lambda: x * inputs[1],
        "Div": lambda: x / inputs[1],
    }
    if op not in elementwise:
        raise NotImplementedError(f"no NumPy evaluation of {op}")
    return [np.asarray(elementwise[op]()).astype(np.float32)]


def _channel_shape(x, scale, axis):
    """The shape that broadcasts a per-channel scale along `axis` of x (scalars stay scalars)."""
    if np.ndim(scale) == 0:
        return ()
    shape = [1] * np.ndim(x)
    shape[axis] = -1
    return shape
