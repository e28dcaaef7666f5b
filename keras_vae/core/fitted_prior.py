"""Priors fitted after training, as exported beside the decoder, and their sampling loop (NumPy only).

A VAE's decoder has only learned the regions of latent space its encoder visits; a prior
fitted to those latents afterwards (a Gaussian mixture, a normalizing flow or a latent
diffusion model; ``keras_vae.priors``) samples where the data is. ``keras-vae export`` writes
it as ``prior.onnx`` beside ``decoder.onnx``: a graph of standard-normal noise (and what else
its kind needs) whose output the decoder takes as ``z``. For a hierarchical model it fills the
top group's noise, the first columns of ``z``; the lower groups keep their own prior.

The graphs, by kind (``TENSORS``; d = ``fitted_prior_dim``):

* ``gmm``: ``epsilon`` float32 [batch, d], ``component`` int64 [batch] -> ``z`` float32
  [batch, d], z = μ_c + L_c·ε, with L_c the Cholesky factor of component c's covariance;
* ``flow``: ``epsilon`` [batch, d] -> ``z`` [batch, d], the flow's inverse;
* ``diffusion``: ``x`` float32 [batch, d], ``t`` int64 [batch] -> ``noise`` [batch, d], the
  denoiser's estimate of the noise in x at diffusion step t (of ``train_steps``), in the
  standardized units of ``shift`` and ``scale``.

The loop around them is written once here (``draw_fitted``), and once in the explorer page
(``keras_vae/serving/explorer/static/fitted.js``); a test holds them to each other. It draws from
``numpy.random.default_rng(seed)``: first ε, float32 [n, D], exactly the noise that N(0, I)
would scale (``contract.draw_latents``, ``hierarchy.draw_noise``), so that the two samplers see
the same noise; the prior's columns take ε·T and the rest is unchanged. Then, from the same
generator: a Gaussian mixture's components (``Generator.choice`` with its weights, as
``draw_latents`` picks a learned mixture's); a diffusion model's fresh noise at every step
whose σ is above 0 (none for DDIM, η = 0). A diffusion sample starts at x = T·ε and takes
``steps`` generalized DDIM steps (Song et al. 2021) down the timesteps ``ddim_timesteps``:

    x̂_0 = (x − √(1 − ᾱ_t)·ε̂) / √ᾱ_t,
    σ = η·√((1 − ᾱ_s)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_s),
    x ← √ᾱ_s·x̂_0 + √(1 − ᾱ_s − σ²)·ε̂ + σ·T·ε',

(s the next timestep, ᾱ = 1 after the last), in float64 with the graph's float32 ε̂, and ends
at z = shift + scale·x. η = 1 with every step is DDPM's ancestral sampler.

Metadata (strings) of ``prior.onnx``: the decoder's (``latent_dim``, ``image_shape``, and for a
hierarchical model ``model`` and ``latent_groups``, so that a server checks the prior fits), and
``fitted_prior`` (the kind), ``fitted_prior_dim`` (d), ``fitted_prior_fit`` (JSON: what it was
fitted to, and how long it took), ``gmm_weights`` (JSON list, C numbers) or ``diffusion`` (JSON:
``train_steps``, ``steps``, ``eta``, and base64 little-endian float64 ``alphas_cumprod``
(train_steps,), ``shift`` and ``scale`` (d,)).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from keras_vae.core import contract, hierarchy

__all__ = ["PRIOR_FILE", "KINDS", "TENSORS", "SAMPLERS", "FittedPrior", "DiffusionSchedule",
           "encode_fitted_prior", "decode_fitted_prior", "is_fitted_prior", "check_fits",
           "ddim_timesteps", "draw_fitted", "sample_prior", "linear_alphas_cumprod",
           "ddim_coefficients"]

#: The file ``keras-vae export`` writes beside the decoder, and servers look for there.
PRIOR_FILE = "prior.onnx"
KINDS = ("gmm", "flow", "diffusion")
#: What ``/v1/generate``'s ``sampler`` and ``keras-vae generate --sampler`` choose between:
#: the model's own prior, or the fitted one.
SAMPLERS = ("prior", "fitted")
#: kind -> (graph input names, graph output name): the first input is float32 [batch, d], the
#: second (if any) int64 [batch].
TENSORS: dict[str, tuple[tuple[str, ...], str]] = {
    "gmm": (("epsilon", "component"), "z"),
    "flow": (("epsilon",), "z"),
    "diffusion": (("x", "t"), "noise"),
}

# === Metadata keys (every value is a string) ===
KIND = "fitted_prior"
DIM = "fitted_prior_dim"
FIT = "fitted_prior_fit"
GMM_WEIGHTS = "gmm_weights"
DIFFUSION = "diffusion"

#: ``run(inputs) -> output``: one call of the prior's graph (onnxruntime, or the Keras model),
#: ``inputs`` a dict of the graph's input names (``TENSORS``) to arrays.
Run = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class DiffusionSchedule:
    """A latent diffusion model's noise schedule and its sampler's settings.

    Attributes:
        alphas_cumprod: (train_steps,) float64, ᾱ_t, decreasing from near 1 towards 0.
        steps: sampling steps S (1 to train_steps).
        eta: η in [0, 1]: 0 is DDIM (deterministic), 1 with every step DDPM's ancestral sampler.
        shift, scale: (d,) float64: z = shift + scale·x, x the standardized latent.
    """

    alphas_cumprod: np.ndarray
    steps: int
    eta: float
    shift: np.ndarray
    scale: np.ndarray

    @property
    def train_steps(self) -> int:
        return len(self.alphas_cumprod)

    def timesteps(self) -> np.ndarray:
        return ddim_timesteps(self.train_steps, self.steps)


@dataclass(frozen=True)
class FittedPrior:
    """What the loop needs of a fitted prior, from its metadata.

    Attributes:
        kind: ``"gmm"``, ``"flow"`` or ``"diffusion"``.
        dim: d, the width of the prior's z.
        weights: a Gaussian mixture's (C,) float64 component weights, summing to 1.
        schedule: a diffusion model's ``DiffusionSchedule``.
        fit: what it was fitted to and how long it took (JSON-ready; may be empty).
    """

    kind: str
    dim: int
    weights: np.ndarray | None = None
    schedule: DiffusionSchedule | None = None
    fit: dict = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[str, ...]:
        return TENSORS[self.kind][0]

    @property
    def output(self) -> str:
        return TENSORS[self.kind][1]


def linear_alphas_cumprod(train_steps: int = 1000, beta_start: float = 1e-4,
                          beta_end: float = 0.02) -> np.ndarray:
    """ᾱ_t = Π_{s≤t} (1 − β_s) of DDPM's linear β schedule (Ho et al. 2020), float64 (train_steps,)."""
    betas = np.linspace(beta_start, beta_end, int(train_steps), dtype=np.float64)
    return np.cumprod(1.0 - betas)


def ddim_timesteps(train_steps: int, steps: int) -> np.ndarray:
    """The S timesteps a sample visits, from train_steps − 1 down to 0, evenly spaced: int64 (S,)."""
    if not 1 <= steps <= train_steps:
        raise ValueError(f"steps must be from 1 to train_steps = {train_steps}; got {steps}")
    if steps == 1:
        return np.array([train_steps - 1], np.int64)
    return np.round(np.linspace(train_steps - 1, 0, steps)).astype(np.int64)


def ddim_coefficients(alpha: float, alpha_next: float, eta: float) -> tuple[float, float, float]:
    """(√ᾱ_s, √(1 − ᾱ_s − σ²), σ) of one step from ᾱ_t = ``alpha`` to ᾱ_s = ``alpha_next``."""
    sigma = eta * math.sqrt((1.0 - alpha_next) / (1.0 - alpha) * (1.0 - alpha / alpha_next))
    return math.sqrt(alpha_next), math.sqrt(max(0.0, 1.0 - alpha_next - sigma * sigma)), sigma


# === Metadata ===

def _b64(values) -> str:
    return base64.b64encode(np.asarray(values, "<f8").tobytes()).decode("ascii")


def _array(spec: dict, name: str, length: int) -> np.ndarray:
    data = base64.b64decode(spec[name], validate=True)
    if len(data) != 8 * length:
        raise ValueError(f"{name} has {len(data)} bytes, not {length} float64 numbers")
    return np.frombuffer(data, "<f8").astype(np.float64)


def encode_fitted_prior(prior: FittedPrior) -> dict[str, str]:
    """The fitted-prior entries of ``prior.onnx``'s metadata (see the module docstring)."""
    entries = {KIND: prior.kind, DIM: str(int(prior.dim)), FIT: json.dumps(prior.fit)}
    if prior.kind == "gmm":
        entries[GMM_WEIGHTS] = json.dumps([float(w) for w in prior.weights])
    if prior.kind == "diffusion":
        s = prior.schedule
        entries[DIFFUSION] = json.dumps({
            "train_steps": s.train_steps, "steps": int(s.steps), "eta": float(s.eta),
            "alphas_cumprod": _b64(s.alphas_cumprod), "shift": _b64(s.shift),
            "scale": _b64(s.scale)})
    decode_fitted_prior(entries)  # refuse to write what cannot be read
    return entries


def is_fitted_prior(metadata: Mapping[str, str]) -> bool:
    """True when the metadata names a fitted prior (``fitted_prior``)."""
    return KIND in metadata


def decode_fitted_prior(metadata: Mapping[str, str]) -> FittedPrior:
    """The ``FittedPrior`` of a ``prior.onnx``'s metadata; ValueError naming the problem."""
    where = "malformed fitted prior metadata"
    kind = metadata.get(KIND)
    if kind not in KINDS:
        raise ValueError(f"{where}: {KIND} must be one of {', '.join(KINDS)}; got {kind!r}")
    try:
        dim = int(metadata.get(DIM, ""))
    except ValueError:
        dim = 0
    if dim < 1 or str(dim) != str(metadata.get(DIM)).strip():
        raise ValueError(f"{where}: {DIM} must be a positive integer; got {metadata.get(DIM)!r}")
    try:
        fit = json.loads(metadata.get(FIT) or "{}")
        if not isinstance(fit, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise ValueError(f"{where}: {FIT}: {exc}") from None
    if kind == "flow":
        return FittedPrior(kind, dim, fit=fit)
    if kind == "gmm":
        try:
            weights = np.asarray(json.loads(metadata[GMM_WEIGHTS]), np.float64)
            if weights.ndim != 1 or not len(weights):
                raise ValueError("expected a non-empty list of numbers")
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {GMM_WEIGHTS}: {exc}") from None
        if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(f"{where}: {GMM_WEIGHTS} must be finite, >= 0 and not all 0")
        return FittedPrior(kind, dim, weights=weights / weights.sum(), fit=fit)
    try:
        spec = json.loads(metadata[DIFFUSION])
        train_steps, steps, eta = int(spec["train_steps"]), int(spec["steps"]), float(spec["eta"])
        if train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {train_steps}")
        alphas = _array(spec, "alphas_cumprod", train_steps)
        shift, scale = _array(spec, "shift", dim), _array(spec, "scale", dim)
    except (KeyError, ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(f"{where}: {DIFFUSION}: {exc}") from None
    if not 1 <= steps <= train_steps:
        raise ValueError(f"{where}: {DIFFUSION}: steps must be from 1 to train_steps = "
                         f"{train_steps}; got {steps}")
    if not (np.all(np.isfinite(alphas)) and np.all((alphas > 0) & (alphas < 1))
            and np.all(np.diff(alphas) < 0)):
        raise ValueError(f"{where}: {DIFFUSION}: alphas_cumprod must decrease within (0, 1)")
    if not (0.0 <= eta <= 1.0 and np.all(np.isfinite(shift)) and np.all(np.isfinite(scale))):
        raise ValueError(f"{where}: {DIFFUSION}: eta must be in [0, 1], shift and scale finite")
    return FittedPrior(kind, dim, schedule=DiffusionSchedule(alphas, steps, eta, shift, scale),
                       fit=fit)


def check_fits(prior: FittedPrior, latent_dim: int, groups: Sequence | None = None) -> None:
    """ValueError unless the prior's z fills the decoder's: all ``latent_dim`` columns of a
    single-latent model, the top group of a hierarchical one (``groups``)."""
    wanted = latent_dim if groups is None else groups[0].size
    if prior.dim != wanted:
        what = (f"its latent_dim, {latent_dim}" if groups is None
                else f"the size of its top latent group {groups[0].name}, {wanted}")
        raise ValueError(f"the fitted prior draws z of {prior.dim} numbers, but the decoder needs "
                         f"{what}")


# === The loop ===

def sample_prior(prior: FittedPrior, epsilon: np.ndarray, rng: np.random.Generator,
                 temperature: float, run: Run) -> np.ndarray:
    """The prior's z for standard-normal ``epsilon`` float32 (n, d) at temperature T: float32 (n, d).

    ``rng`` supplies what else the kind draws (components; fresh diffusion noise); ``run``
    calls the graph.
    """
    n = len(epsilon)
    t = np.float32(temperature)
    names, _ = TENSORS[prior.kind]
    if prior.kind == "flow":
        return _output(run({names[0]: epsilon * t}), n, prior.dim)
    if prior.kind == "gmm":
        component = rng.choice(len(prior.weights), size=n, p=prior.weights)
        return _output(run({names[0]: epsilon * t, names[1]: component.astype(np.int64)}), n,
                       prior.dim)
    schedule = prior.schedule
    alphas, timesteps = schedule.alphas_cumprod, schedule.timesteps()
    x = epsilon.astype(np.float64) * float(t)
    for i, step in enumerate(timesteps):
        alpha = float(alphas[step])
        alpha_next = float(alphas[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        noise = _output(run({names[0]: x.astype(np.float32),
                             names[1]: np.full(n, step, np.int64)}), n, prior.dim).astype(np.float64)
        x0 = (x - math.sqrt(1.0 - alpha) * noise) / math.sqrt(alpha)
        keep, direction, sigma = ddim_coefficients(alpha, alpha_next, schedule.eta)
        x = keep * x0 + direction * noise
        if sigma > 0:
            fresh = rng.standard_normal((n, prior.dim), dtype=np.float32)
            x = x + sigma * float(t) * fresh.astype(np.float64)
    return (schedule.shift + schedule.scale * x).astype(np.float32)


def _output(values, n: int, dim: int) -> np.ndarray:
    values = np.asarray(values, np.float32)
    if values.shape != (n, dim):
        raise ValueError(f"the fitted prior's graph gave shape {list(values.shape)}, not [{n}, {dim}]")
    return values


def draw_fitted(prior: FittedPrior, n: int, latent_dim: int, run: Run, seed: int | None = None,
                temperature: float = 1.0, groups: Sequence | None = None,
                temperatures=None) -> np.ndarray:
    """n draws of the decoder's z with the fitted prior: float32 (n, latent_dim).

    ε ~ N(0, I), float32 (n, D), comes first from ``numpy.random.default_rng(seed)``, as for the
    model's own N(0, I) (``hierarchy.draw_noise``); the prior's columns (all of them, or the top
    group's of a hierarchical model, whose ``groups`` are given) are the prior's z for that ε at
    temperature T (times the top group's entry of ``temperatures``), the other columns the noise
    ``draw_noise`` gives. Raises ValueError for a bad n, seed or temperature, or a prior that
    does not fit (``check_fits``).
    """
    check_fits(prior, latent_dim, groups)
    t = contract.check_temperature(temperature)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None; got {seed!r}")
    rng = np.random.default_rng(seed)
    epsilon = rng.standard_normal((int(n), int(latent_dim)), dtype=np.float32)
    if temperatures is None or groups is None:
        if temperatures is not None:
            raise ValueError("temperatures (one per latent group) apply to hierarchical models only")
        z, prior_t = epsilon * np.float32(t), t
    else:
        scale = hierarchy.noise_scale(groups, temperatures, t)
        z, prior_t = epsilon * np.float32(1.0) * scale, float(scale[0])
    z = z.copy()
    z[:, :prior.dim] = sample_prior(prior, np.ascontiguousarray(epsilon[:, :prior.dim]), rng,
                                    prior_t, run)
    return z
