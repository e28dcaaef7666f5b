"""A small hierarchical (two-group) linear-Gaussian VAE as ONNX, with NumPy references.

The model, top-down, with groups z_1 = ``group_0`` (shape [3]) and z_2 = ``group_1``
(shape [2, 2, 1], 4 numbers), D = 7, images 4×4×1 (P = 16):

    p(z_1) = N(0, I),   p(z_2 | z_1) = N(A z_1 + b, diag s²),   p(x | z) = N(W_1 z_1 + W_2 z_2 + c, σ_x² I)

so x is Gaussian (pixel means near 0.5, σ_x = 0.1) and log p(x) has a closed form (`HierarchicalFixture.exact_log_px`). The
posterior q is the diagonal top-down factorisation of the exact Gaussian posterior, its
variances inflated by ``inflate``² (so the importance weights vary, but not too much):

    q(z_1 | x) = N(E x + e, diag σ_q1²),   q(z_2 | x, z_1) = N(F x + f + G z_1, diag σ_q2²).

The three graphs follow `keras_vae.core.hierarchy`'s contract: ``decoder.onnx`` (noise ``z``
-> ``x_mean``), ``encoder.onnx`` (``x`` -> ``z_mean``, ``z_log_var`` in noise space) and
``log_weight.onnx`` (``x``, ``epsilon`` -> ``log_weight``). The methods `decode`, `encode`
and `log_weight` recompute them in float64 NumPy from the same parameters.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from keras_vae.core import contract, hierarchy

OPSET = 17
LOG_2PI = math.log(2 * math.pi)
GROUPS = (hierarchy.LatentGroup("group_0", (3,)), hierarchy.LatentGroup("group_1", (2, 2, 1)))
IMAGE_SHAPE = (4, 4, 1)


@dataclass
class HierarchicalFixture:
    folder: Path
    params: dict = field(repr=False)
    groups: tuple = GROUPS
    image_shape: tuple = IMAGE_SHAPE

    @property
    def decoder(self) -> Path:
        return self.folder / "decoder.onnx"

    @property
    def encoder(self) -> Path:
        return self.folder / "encoder.onnx"

    @property
    def log_weight_path(self) -> Path:
        return self.folder / contract.LOG_WEIGHT_FILE

    @property
    def latent_dim(self) -> int:
        return sum(g.size for g in self.groups)

    def _split(self, v):
        d1 = self.groups[0].size
        return v[:, :d1], v[:, d1:]

    def decode(self, noise) -> np.ndarray:
        """x_mean float64 [n, H, W, C] of noise [n, D]."""
        p = self.params
        e1, e2 = self._split(np.asarray(noise, np.float64))
        z1 = e1
        z2 = z1 @ p["A"].T + p["b"] + p["s"] * e2
        x = z1 @ p["W1"].T + z2 @ p["W2"].T + p["c"]
        return x.reshape(-1, *self.image_shape)

    def _posterior(self, x):
        p = self.params
        xf = np.asarray(x, np.float64).reshape(len(x), -1)
        mu1 = xf @ p["E"].T + p["e"]
        return xf, mu1

    def encode(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(z_mean, z_log_var) float64 [n, D] in noise space."""
        p = self.params
        xf, mu1 = self._posterior(x)
        mu2 = xf @ p["F"].T + p["f"] + mu1 @ p["G"].T
        mp2 = mu1 @ p["A"].T + p["b"]
        z_mean = np.hstack([mu1, (mu2 - mp2) / p["s"]])
        log_var = np.hstack([np.log(p["sq1"] ** 2), np.log(p["sq2"] ** 2 / p["s"] ** 2)])
        return z_mean, np.broadcast_to(log_var, z_mean.shape).copy()

    def log_weight(self, x, epsilon) -> np.ndarray:
        """log p(x|z) + Σ_l log p(z_l|z_<l) − log q(z_l|x, z_<l), float64 [n]."""
        p = self.params
        xf, mu1 = self._posterior(x)
        e1, e2 = self._split(np.asarray(epsilon, np.float64))
        z1 = mu1 + p["sq1"] * e1
        mu2 = xf @ p["F"].T + p["f"] + z1 @ p["G"].T
        z2 = mu2 + p["sq2"] * e2
        mp2 = z1 @ p["A"].T + p["b"]
        xm = z1 @ p["W1"].T + z2 @ p["W2"].T + p["c"]

        def normal(v, mean, std):
            return np.sum(-0.5 * (LOG_2PI + 2 * np.log(std) + ((v - mean) / std) ** 2), axis=-1)

        return (normal(xf, xm, p["sigma_x"]) + normal(z1, 0.0, 1.0) + normal(z2, mp2, p["s"])
                - normal(z1, mu1, p["sq1"]) - normal(z2, mu2, p["sq2"]))

    def exact_log_px(self, x) -> np.ndarray:
        """The closed-form log p(x), float64 [n]."""
        p = self.params
        xf = np.asarray(x, np.float64).reshape(len(x), -1)
        mean = p["W"] @ p["m"] + p["c"]
        cov = p["W"] @ p["S"] @ p["W"].T + p["sigma_x"] ** 2 * np.eye(len(mean))
        sign, logdet = np.linalg.slogdet(cov)
        diff = xf - mean
        quad = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        return -0.5 * (len(mean) * LOG_2PI + logdet + quad)

    def sample_images(self, n, seed=0) -> np.ndarray:
        """n images drawn from p(x), clipped to [0, 1], float32 [n, H, W, C]."""
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((n, self.latent_dim))
        x = self.decode(noise) + self.params["sigma_x"] * rng.standard_normal((n, *self.image_shape))
        return np.clip(x, 0.0, 1.0).astype(np.float32)


def _params(seed: int, inflate: float) -> dict:
    rng = np.random.default_rng(seed)
    d1, d2 = GROUPS[0].size, GROUPS[1].size
    size = int(np.prod(IMAGE_SHAPE))
    p = {
        "A": rng.normal(0, 0.7, (d2, d1)), "b": rng.normal(0, 0.3, d2),
        "s": rng.uniform(0.5, 1.0, d2),
        "W1": rng.normal(0, 0.08, (size, d1)), "W2": rng.normal(0, 0.08, (size, d2)),
        "c": 0.5 + rng.normal(0, 0.05, size), "sigma_x": 0.1,
    }
    # float32 parameters, so the graphs and the references compute the same function
    p = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in p.items()}
    p["sigma_x"] = float(p["sigma_x"])
    p["W"] = np.hstack([p["W1"], p["W2"]])
    p["m"] = np.concatenate([np.zeros(d1), p["b"]])
    p["S"] = np.block([[np.eye(d1), p["A"].T], [p["A"], p["A"] @ p["A"].T + np.diag(p["s"] ** 2)]])
    precision = np.linalg.inv(p["S"]) + p["W"].T @ p["W"] / p["sigma_x"] ** 2
    cov = np.linalg.inv(precision)
    gain = cov @ p["W"].T / p["sigma_x"] ** 2  # (D, P)
    offset = cov @ (np.linalg.solve(p["S"], p["m"]) - p["W"].T @ p["c"] / p["sigma_x"] ** 2)
    G = cov[d1:, :d1] @ np.linalg.inv(cov[:d1, :d1])
    q = {"E": gain[:d1], "e": offset[:d1], "G": G, "F": gain[d1:] - G @ gain[:d1],
         "f": offset[d1:] - G @ offset[:d1],
         "sq1": inflate * np.sqrt(np.diag(cov[:d1, :d1])),
         "sq2": inflate * np.sqrt(np.diag(cov[d1:, d1:] - G @ cov[:d1, d1:]))}
    p.update({k: np.asarray(v, np.float32).astype(np.float64) for k, v in q.items()})
    return p


def _f32(v):
    return np.asarray(v, np.float32)


def _save(nodes, name, inputs, outputs, initializers, path, metadata):
    graph = helper.make_graph(nodes, name, inputs=inputs, outputs=outputs,
                              initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="keras-vae-tests")
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def hierarchical_metadata(params) -> dict[str, str]:
    return {
        contract.MODEL: hierarchy.HIERARCHICAL,
        contract.LATENT_GROUPS: hierarchy.encode_groups(GROUPS),
        contract.LATENT_DIM: str(sum(g.size for g in GROUPS)),
        contract.IMAGE_SHAPE: json.dumps(list(IMAGE_SHAPE)),
        contract.LIKELIHOOD: "gaussian",
        contract.DECODER_LOG_VAR: contract.encode_decoder_log_var(math.log(params["sigma_x"] ** 2)),
        contract.VERSION: "0.0.0-test", contract.SOURCE_BACKEND: "numpy",
        contract.DATASET: "synthetic-hierarchical", contract.CREATED: "2024-01-01T00:00:00Z",
    }


def make_hierarchical_onnx(folder, seed: int = 0, inflate: float = 1.15,
                           metadata: dict[str, str | None] | None = None,
                           log_weight: bool = True) -> HierarchicalFixture:
    """Write decoder.onnx, encoder.onnx and (``log_weight``) log_weight.onnx into ``folder``.

    ``metadata`` overrides the decoder's entries (a None value removes the entry).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    p = _params(seed, inflate)
    d1 = GROUPS[0].size
    D = sum(g.size for g in GROUPS)
    h, w, c = IMAGE_SHAPE
    size = h * w * c
    meta = hierarchical_metadata(p)
    decoder_meta = {**meta, **(metadata or {})}
    decoder_meta = {k: v for k, v in decoder_meta.items() if v is not None}
    fx = HierarchicalFixture(folder, p)

    slices = {"s1_start": np.array([0], np.int64), "s1_end": np.array([d1], np.int64),
              "s2_start": np.array([d1], np.int64), "s2_end": np.array([D], np.int64),
              "axis1": np.array([1], np.int64)}

    def split(name, first, second):
        return [helper.make_node("Slice", [name, "s1_start", "s1_end", "axis1"], [first]),
                helper.make_node("Slice", [name, "s2_start", "s2_end", "axis1"], [second])]

    def affine(out, terms, bias=None):
        """out = Σ inp @ weight (+ bias)."""
        nodes, names = [], []
        for inp, weight in terms:
            nodes.append(helper.make_node("MatMul", [inp, weight], [f"{out}_{weight}"]))
            names.append(f"{out}_{weight}")
        if bias is not None:
            names.append(bias)
        nodes.append(helper.make_node("Sum", names, [out]))
        return nodes

    # decoder: noise -> x_mean
    init = {"AT": _f32(p["A"].T), "b": _f32(p["b"]), "s": _f32(p["s"]), "W1T": _f32(p["W1"].T),
            "W2T": _f32(p["W2"].T), "c": _f32(p["c"]), "image": np.array([-1, h, w, c], np.int64),
            **slices}
    nodes = split("z", "e1", "e2") + [helper.make_node("Mul", ["s", "e2"], ["se2"])]
    nodes += affine("z2", [("e1", "AT")], "b")
    nodes[-1] = helper.make_node("Sum", ["z2_AT", "b", "se2"], ["z2"])
    nodes += affine("flat_mean", [("e1", "W1T"), ("z2", "W2T")], "c")
    nodes.append(helper.make_node("Reshape", ["flat_mean", "image"], ["x_mean"]))
    _save(nodes, "hierarchical_decoder",
          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", D])],
          [helper.make_tensor_value_info("x_mean", TensorProto.FLOAT, ["batch", h, w, c])],
          init, fx.decoder, decoder_meta)

    # encoder: x -> z_mean, z_log_var (noise space)
    lv = np.concatenate([np.log(p["sq1"] ** 2), np.log(p["sq2"] ** 2 / p["s"] ** 2)])
    init = {"flat": np.array([-1, size], np.int64), "ET": _f32(p["E"].T), "e": _f32(p["e"]),
            "FT": _f32(p["F"].T), "f": _f32(p["f"]), "GT": _f32(p["G"].T), "AT": _f32(p["A"].T),
            "b": _f32(p["b"]), "s": _f32(p["s"]), "lv": _f32(lv), "zeros": np.zeros((1, D), np.float32)}
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["xf"])]
    nodes += affine("mu1", [("xf", "ET")], "e")
    nodes += affine("mu2", [("xf", "FT"), ("mu1", "GT")], "f")
    nodes += affine("mp2", [("mu1", "AT")], "b")
    nodes += [helper.make_node("Sub", ["mu2", "mp2"], ["d2"]),
              helper.make_node("Div", ["d2", "s"], ["eps2"]),
              helper.make_node("Concat", ["mu1", "eps2"], ["z_mean"], axis=1),
              helper.make_node("Mul", ["z_mean", "zeros"], ["zero_rows"]),
              helper.make_node("Add", ["zero_rows", "lv"], ["z_log_var"])]
    _save(nodes, "hierarchical_encoder",
          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", h, w, c])],
          [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", D]) for n in contract.ENCODER_OUTPUTS],
          init, fx.encoder, meta)

    if log_weight:
        # log_weight: x, epsilon -> log p(x|z) + Σ log p(z_l|z_<l) − log q(z_l|x, z_<l)
        const = -0.5 * (np.sum(np.log(p["s"] ** 2)) + size * (LOG_2PI + math.log(p["sigma_x"] ** 2))
                        - np.sum(np.log(p["sq1"] ** 2)) - np.sum(np.log(p["sq2"] ** 2)))
        init = {"flat": np.array([-1, size], np.int64), "ET": _f32(p["E"].T), "e": _f32(p["e"]),
                "FT": _f32(p["F"].T), "f": _f32(p["f"]), "GT": _f32(p["G"].T), "AT": _f32(p["A"].T),
                "b": _f32(p["b"]), "s": _f32(p["s"]), "sq1": _f32(p["sq1"]), "sq2": _f32(p["sq2"]),
                "W1T": _f32(p["W1"].T), "W2T": _f32(p["W2"].T), "c": _f32(p["c"]),
                "inv_sx": _f32(1.0 / p["sigma_x"]), "minus_half": _f32(-0.5), "const": _f32(const),
                **slices}
        nodes = [helper.make_node("Reshape", ["x", "flat"], ["xf"])] + split("epsilon", "e1", "e2")
        nodes += affine("mu1", [("xf", "ET")], "e")
        nodes += [helper.make_node("Mul", ["sq1", "e1"], ["se1"]),
                  helper.make_node("Add", ["mu1", "se1"], ["z1"])]
        nodes += affine("mu2", [("xf", "FT"), ("z1", "GT")], "f")
        nodes += [helper.make_node("Mul", ["sq2", "e2"], ["se2"]),
                  helper.make_node("Add", ["mu2", "se2"], ["z2"])]
        nodes += affine("mp2", [("z1", "AT")], "b")
        nodes += affine("xm", [("z1", "W1T"), ("z2", "W2T")], "c")
        nodes += [helper.make_node("Sub", ["z2", "mp2"], ["dz2"]),
                  helper.make_node("Div", ["dz2", "s"], ["u2"]),
                  helper.make_node("Sub", ["xf", "xm"], ["dx"]),
                  helper.make_node("Mul", ["dx", "inv_sx"], ["ux"]),
                  helper.make_node("Neg", ["e1"], ["ne1"]),
                  helper.make_node("Neg", ["e2"], ["ne2"]),
                  helper.make_node("Mul", ["z1", "z1"], ["q_z1"]),
                  helper.make_node("Mul", ["u2", "u2"], ["q_u2"]),
                  helper.make_node("Mul", ["ux", "ux"], ["q_ux"]),
                  helper.make_node("Mul", ["ne1", "e1"], ["q_e1"]),
                  helper.make_node("Mul", ["ne2", "e2"], ["q_e2"]),
                  helper.make_node("Concat", ["q_z1", "q_u2", "q_ux", "q_e1", "q_e2"], ["terms"], axis=1),
                  helper.make_node("ReduceSum", ["terms", "axis1"], ["total"], keepdims=0),
                  helper.make_node("Mul", ["total", "minus_half"], ["half"]),
                  helper.make_node("Add", ["half", "const"], ["log_weight"])]
        _save(nodes, "hierarchical_log_weight",
              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", h, w, c]),
               helper.make_tensor_value_info("epsilon", TensorProto.FLOAT, ["batch", D])],
              [helper.make_tensor_value_info("log_weight", TensorProto.FLOAT, ["batch"])],
              init, fx.log_weight_path, meta)
    return fx
