"""A prior fitted after training (``prior.onnx`` beside the decoder) in onnxruntime, and sampling
with it: ``keras-vae generate --sampler fitted``, ``/v1/generate`` ``{"sampler": "fitted"}``,
KServe (the model ``{model_name}_prior``) and the explorer page.

``FittedPriorModel`` runs the graph; the loop around it (a mixture's component choice, a
diffusion model's DDIM steps) is ``keras_vae.core.fitted_prior.draw_fitted``'s, so the same seed
gives the same z in Keras, here and in the page. ``find_prior`` finds the file beside the
decoder and checks that it fits; a file that does not is refused with ``ModelLoadError``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from keras_vae.core import contract, fitted_prior
from keras_vae.serving import hierarchical
from keras_vae.serving.log_weight import check_groups_match
from keras_vae.serving.onnx_model import ModelLoadError, OnnxModel, finite_float32_array

__all__ = ["FittedPriorModel", "find_prior", "draw_latents", "served_latents", "with_sampler",
           "NO_PRIOR", "kserve_name", "kserve_metadata", "run_kserve", "explorer_settings"]

#: Why ``sampler: "fitted"`` is refused by a server (or a command) without a fitted prior.
NO_PRIOR = (f"'fitted' needs a prior fitted after training ({fitted_prior.PRIOR_FILE} beside the "
            "decoder: keras-vae fit-prior, then keras-vae export); this model has none, so use 'prior'")


class FittedPriorModel(OnnxModel):
    """``prior.onnx`` in onnxruntime (``keras_vae.core.fitted_prior``'s contract).

    Arguments and errors as ``Sampler``'s.

    Attributes:
        prior: the ``keras_vae.core.fitted_prior.FittedPrior`` its metadata describes.
        latent_dim: D, the width of the decoder's z it draws (d = ``prior.dim`` of it from the
            prior, the rest N(0, I) noise).
        input_names, output_name: its graph's tensors.
    """

    def __init__(self, model_path: str | os.PathLike, provider: str = "auto",
                 intra_op_threads: int | None = None) -> None:
        session = self._open(model_path, provider, intra_op_threads)
        where = repr(str(self.model_path))
        try:
            self.prior = fitted_prior.decode_fitted_prior(self.metadata)
            self.latent_dim = int(self.metadata.get(contract.LATENT_DIM, ""))
        except ValueError as exc:
            raise ModelLoadError(f"{where} is not a fitted prior: {exc}") from None
        self.input_names, self.output_name = fitted_prior.TENSORS[self.prior.kind]
        inputs = {i.name: i.type for i in session.get_inputs()}
        types = dict(zip(self.input_names, ("tensor(float)", "tensor(int64)")))
        outputs = [o.name for o in session.get_outputs()]
        if inputs != types or self.output_name not in outputs:
            raise ModelLoadError(f"{where}: a {self.prior.kind} prior's graph takes {types} and "
                                 f"outputs {self.output_name!r}; this one takes {inputs} and "
                                 f"outputs {outputs}")
        width = session.get_inputs()[0].shape[-1]
        if isinstance(width, int) and width != self.prior.dim:
            raise ModelLoadError(f"{where}: its graph takes {self.input_names[0]} of width {width}, "
                                 f"but its {fitted_prior.DIM} metadata says {self.prior.dim}")
        try:
            probe = self.run(self._probe_inputs())
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{where}: its graph fails on one row: {str(exc).strip()}") from None
        if probe.shape != (1, self.prior.dim) or not np.all(np.isfinite(probe)):
            raise ModelLoadError(f"{where}: its graph gave {list(probe.shape)} for one row, not "
                                 f"[1, {self.prior.dim}] finite numbers")

    def _probe_inputs(self) -> dict[str, np.ndarray]:
        inputs = {self.input_names[0]: np.zeros((1, self.prior.dim), np.float32)}
        if len(self.input_names) > 1:
            inputs[self.input_names[1]] = np.zeros(1, np.int64)
        return inputs

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """One call of the graph: float32 ``[n, d]``."""
        (out,) = self._session.run([self.output_name], inputs)
        return np.asarray(out, np.float32)

    def check_pairs_with(self, sampler) -> None:
        """ModelLoadError unless this prior fills the decoder's z (width, latent groups)."""
        where = f"fitted prior {str(self.model_path)!r}"
        if self.latent_dim != sampler.latent_dim:
            raise ModelLoadError(f"{where} was exported for a decoder of latent_dim "
                                 f"{self.latent_dim}, not {sampler.latent_dim} as "
                                 f"{str(sampler.model_path)!r}")
        check_groups_match(sampler, self, where)
        try:
            fitted_prior.check_fits(self.prior, sampler.latent_dim, sampler.groups)
        except ValueError as exc:
            raise ModelLoadError(f"{where}: {exc}") from None
        if sampler.class_names is not None:
            raise ModelLoadError(f"{where}: a fitted prior is for unconditional decoders")

    def latents(self, n: int, seed: int | None = None, temperature: float = 1.0,
                temperatures=None) -> np.ndarray:
        """float32 ``[n, latent_dim]``: ``fitted_prior.draw_fitted`` with this graph (a
        hierarchical model's per-group ``temperatures`` too, top-down)."""
        return fitted_prior.draw_fitted(self.prior, n, self.latent_dim, self.run, seed,
                                        temperature, self.groups, temperatures)

    def describe(self) -> dict[str, Any]:
        """``/v1/model``'s ``fitted_prior`` entry."""
        info = {"path": self.model_path.name, "kind": self.prior.kind, "dim": self.prior.dim,
                "fit": self.prior.fit}
        if self.prior.weights is not None:
            info["components"] = len(self.prior.weights)
        if self.prior.schedule is not None:
            schedule = self.prior.schedule
            info.update(steps=schedule.steps, train_steps=schedule.train_steps, eta=schedule.eta)
        return info


def find_prior(sampler, path: str | os.PathLike | None = None, provider: str = "auto",
               intra_op_threads: int | None = None) -> FittedPriorModel | None:
    """The fitted prior of ``sampler``'s decoder, checked against it, or None.

    ``path`` when given (FileNotFoundError if missing), else ``prior.onnx`` beside the decoder.
    """
    if path is None:
        path = Path(sampler.model_path).parent / fitted_prior.PRIOR_FILE
        if not path.is_file():
            return None
    prior = FittedPriorModel(path, provider=provider, intra_op_threads=intra_op_threads)
    prior.check_pairs_with(sampler)
    return prior


def draw_latents(sampler, prior: FittedPriorModel | None, which: str, n: int, seed: int | None,
                 temperature: float = 1.0, temperatures=None) -> np.ndarray:
    """z for ``n`` samples from the model's own prior (``which="prior"``) or the fitted one;
    ValueError for an unknown ``which``, or ``"fitted"`` without a fitted prior."""
    if which not in fitted_prior.SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(fitted_prior.SAMPLERS)}; got {which!r}")
    if which == "prior":
        return hierarchical.latents(sampler, n, seed, temperature, temperatures)
    if prior is None:
        raise ValueError(NO_PRIOR)
    return prior.latents(n, seed, temperature, temperatures)


async def served_latents(state, body) -> np.ndarray:
    """``/v1/generate``'s z: the fitted prior's work is admitted to the sample queue and timed."""
    which, temperatures = getattr(body, "sampler", "prior"), getattr(body, "temperatures", None)
    if which != "fitted":
        return draw_latents(state.sampler, None, which, body.n, body.seed, body.temperature,
                            temperatures)
    async with state.admission.admit("sample", "prior", body.n):
        return await asyncio.to_thread(_timed, state, body.n, body.seed, body.temperature,
                                       temperatures)


def _timed(state, n, seed, temperature, temperatures) -> np.ndarray:
    start = time.perf_counter()
    z = draw_latents(state.sampler, state.prior, "fitted", n, seed, temperature, temperatures)
    state.admission.costs.record("prior", n, time.perf_counter() - start)
    return z


def with_sampler(Base, fitted: bool):
    """The ``/v1/generate`` body ``Base`` with its ``sampler`` field: ``"prior"`` (the model's own,
    the default), or ``"fitted"`` when a fitted prior is served (else a 422 saying why)."""
    Choice = Literal["prior", "fitted"] if fitted else Literal["prior"]

    class GenerateRequest(Base):
        __doc__ = Base.__doc__
        sampler: Choice = Field("prior", description=(
            "where z comes from: 'prior', the model's own; " + (
                "'fitted', the prior fitted after training (prior.onnx)" if fitted else
                "this model has no fitted prior, so 'fitted' is refused")))

        @field_validator("sampler", mode="before")
        @classmethod
        def _served(cls, value):
            if value == "fitted" and not fitted:
                raise ValueError(NO_PRIOR)
            return value

    return GenerateRequest


# --------------------------------------------------------------- KServe v2

def kserve_name(state) -> str | None:
    """The fitted prior's model name under ``/v2/models/``: ``{model_name}_prior`` (None without)."""
    return None if getattr(state, "prior", None) is None else f"{state.model_name}_prior"


def kserve_metadata(state, version: str, platform: str) -> dict:
    """The prior's model metadata: its graph's inputs and output."""
    prior = state.prior
    inputs = [{"name": prior.input_names[0], "datatype": "FP32", "shape": [-1, prior.prior.dim]}]
    if len(prior.input_names) > 1:
        inputs.append({"name": prior.input_names[1], "datatype": "INT64", "shape": [-1]})
    return {"name": kserve_name(state), "versions": [version], "platform": platform,
            "inputs": inputs, "outputs": [{"name": prior.output_name, "datatype": "FP32",
                                           "shape": [-1, prior.prior.dim]}]}


async def run_kserve(state, values) -> np.ndarray:
    """One call of the prior's graph for KServe's infer: ``values`` are ``input_tensor``'s."""
    prior = state.prior
    first, second = values if len(prior.input_names) > 1 else (values, None)
    inputs = {prior.input_names[0]: finite_float32_array(first, "the first input", lambda s: True)}
    if second is not None:
        high = len(prior.prior.weights) if prior.prior.weights is not None else (
            prior.prior.schedule.train_steps)
        if np.any(second < 0) or np.any(second >= high):
            raise ValueError(f"input {prior.input_names[1]!r} must hold integers from 0 to {high - 1}")
        inputs[prior.input_names[1]] = np.ascontiguousarray(second, np.int64)
    async with state.admission.admit("sample", "prior", len(inputs[prior.input_names[0]])):
        return await asyncio.to_thread(prior.run, inputs)


def explorer_settings(prior: FittedPriorModel | None) -> dict | None:
    """The page's ``fitted`` settings: the graph's file and tensors and what the loop reads."""
    if prior is None:
        return None
    spec = prior.prior
    settings = {"path": f"models/{fitted_prior.PRIOR_FILE}", "kind": spec.kind, "dim": spec.dim,
                "inputs": list(prior.input_names), "output": prior.output_name,
                "weights": None if spec.weights is None else spec.weights.tolist()}
    if spec.schedule is not None:
        s = spec.schedule
        settings["diffusion"] = {"alphas_cumprod": s.alphas_cumprod.tolist(),
                                 "timesteps": s.timesteps().tolist(), "eta": s.eta,
                                 "shift": s.shift.tolist(), "scale": s.scale.tolist()}
    return settings
