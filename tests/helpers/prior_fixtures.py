"""Small fitted priors as ONNX (``prior.onnx``, `keras_vae.core.fitted_prior`'s contract), built
with ``onnx.helper`` (no Keras), each with a NumPy reference of its graph.

* ``gmm``: ``epsilon``, ``component`` -> ``z`` = means[c] + L_c·ε (Gather, MatMul);
* ``flow``: ``epsilon`` -> ``z`` = a + exp(b)·ε + 0.3·tanh(ε·W) (a smooth map: serving needs
  only the graph's contract, not an invertible one);
* ``diffusion``: ``x``, ``t`` -> ``noise`` = tanh(x·W + (t/T)·c + e), with a short schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from keras_vae.core import fitted_prior, hierarchy

OPSET = 17


@dataclass
class PriorFixture:
    path: Path
    prior: fitted_prior.FittedPrior
    params: dict

    def run(self, inputs) -> np.ndarray:
        """The graph in NumPy, float64: what onnxruntime computes in float32."""
        p, kind = self.params, self.prior.kind
        if kind == "gmm":
            eps = np.asarray(inputs["epsilon"], np.float64)
            c = np.asarray(inputs["component"])
            return p["means"][c] + np.einsum("nij,nj->ni", p["tril"][c], eps)
        if kind == "flow":
            eps = np.asarray(inputs["epsilon"], np.float64)
            return p["a"] + np.exp(p["b"]) * eps + 0.3 * np.tanh(eps @ p["W"])
        x, t = np.asarray(inputs["x"], np.float64), np.asarray(inputs["t"], np.float64)
        return np.tanh(x @ p["W"] + (t / self.prior.schedule.train_steps)[:, None] * p["c"] + p["e"])


def _f32(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def make_prior_onnx(path, kind: str, dim: int, latent_dim: int, groups=None, seed: int = 0,
                    components: int = 3, train_steps: int = 20, steps: int = 6, eta: float = 0.0,
                    metadata: dict | None = None) -> PriorFixture:
    """Write ``prior.onnx`` of ``kind`` for a decoder of ``latent_dim`` (with ``groups`` for a
    hierarchical one, whose top group has ``dim`` numbers) and return it with its reference."""
    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a, np.float32).astype(np.float64)  # noqa: E731
    batch = ["batch", dim]
    if kind == "gmm":
        weights = rng.random(components) + 0.2
        means = f32(rng.normal(0, 2, (components, dim)))
        tril = f32(np.tril(rng.normal(0, 0.3, (components, dim, dim)), -1)
                   + np.eye(dim) * rng.uniform(0.5, 1.5, (components, 1, dim)))
        params = {"means": means, "tril": tril}
        nodes = [helper.make_node("Gather", ["means", "component"], ["mean"], axis=0),
                 helper.make_node("Gather", ["tril", "component"], ["l"], axis=0),
                 helper.make_node("Unsqueeze", ["epsilon", "last"], ["eps3"]),
                 helper.make_node("MatMul", ["l", "eps3"], ["le"]),
                 helper.make_node("Squeeze", ["le", "last"], ["le2"]),
                 helper.make_node("Add", ["mean", "le2"], ["z"])]
        inputs = [helper.make_tensor_value_info("epsilon", TensorProto.FLOAT, batch),
                  helper.make_tensor_value_info("component", TensorProto.INT64, ["batch"])]
        inits = [_f32("means", means), _f32("tril", tril),
                 numpy_helper.from_array(np.array([-1], np.int64), "last")]
        spec = fitted_prior.FittedPrior("gmm", dim, weights=weights / weights.sum())
    elif kind == "flow":
        params = {"a": f32(rng.normal(0, 1, dim)), "b": f32(rng.normal(0, 0.3, dim)),
                  "W": f32(rng.normal(0, 0.5, (dim, dim)))}
        nodes = [helper.make_node("Exp", ["b"], ["s"]), helper.make_node("Mul", ["epsilon", "s"], ["se"]),
                 helper.make_node("Add", ["se", "a"], ["lin"]),
                 helper.make_node("MatMul", ["epsilon", "W"], ["ew"]),
                 helper.make_node("Tanh", ["ew"], ["th"]), helper.make_node("Mul", ["th", "k"], ["kt"]),
                 helper.make_node("Add", ["lin", "kt"], ["z"])]
        inputs = [helper.make_tensor_value_info("epsilon", TensorProto.FLOAT, batch)]
        inits = [_f32("a", params["a"]), _f32("b", params["b"]), _f32("W", params["W"]),
                 _f32("k", 0.3)]
        spec = fitted_prior.FittedPrior("flow", dim)
    else:
        params = {"W": f32(rng.normal(0, 0.4, (dim, dim))), "c": f32(rng.normal(0, 1, dim)),
                  "e": f32(rng.normal(0, 0.1, dim))}
        nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
                 helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
                 helper.make_node("Div", ["tf", "T"], ["tt"]),
                 helper.make_node("Unsqueeze", ["tt", "last"], ["t2"]),
                 helper.make_node("Mul", ["t2", "c"], ["tc"]),
                 helper.make_node("Add", ["xw", "tc"], ["h"]), helper.make_node("Add", ["h", "e"], ["h2"]),
                 helper.make_node("Tanh", ["h2"], ["noise"])]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, batch),
                  helper.make_tensor_value_info("t", TensorProto.INT64, ["batch"])]
        inits = [_f32("W", params["W"]), _f32("c", params["c"]), _f32("e", params["e"]),
                 _f32("T", float(train_steps)), numpy_helper.from_array(np.array([-1], np.int64), "last")]
        schedule = fitted_prior.DiffusionSchedule(
            fitted_prior.linear_alphas_cumprod(train_steps, 1e-3, 0.3), steps, eta,
            rng.normal(0, 1, dim), rng.uniform(0.5, 2.0, dim))
        spec = fitted_prior.FittedPrior("diffusion", dim, schedule=schedule)
    output = fitted_prior.TENSORS[kind][1]
    graph = helper.make_graph(nodes, f"{kind}_prior", inputs,
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, batch)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="keras-vae-tests")
    model.ir_version = 8
    props = {"latent_dim": str(latent_dim), "keras_vae_version": "0.0.0-test",
             **fitted_prior.encode_fitted_prior(spec)}
    if groups is not None:
        props.update({"model": "hierarchical", "latent_groups": hierarchy.encode_groups(groups)})
    props.update(metadata or {})
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return PriorFixture(path, spec, params)


def with_metadata(source, target, **changes) -> Path:
    """A copy of the ONNX file ``source`` at ``target`` with metadata entries changed (None: removed)."""
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(changes)
    del model.metadata_props[:]
    helper.set_model_props(model, {k: v for k, v in props.items() if v is not None})
    onnx.save(model, str(target))
    return Path(target)
