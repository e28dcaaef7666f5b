"""`FlowPrior`: a normalizing flow of RealNVP affine coupling layers (Dinh et al. 2017).

z is standardized (u = (z − shift)/scale, fixed from the data), then each coupling layer k
keeps the coordinates of its mask m_k and moves the others by a scale and shift computed from
the kept ones:

    to_noise (z -> ε):    u ← m·u + (1 − m)·(u − t(m·u))·exp(−s(m·u)),   log|det| −= Σ (1 − m)·s,
    to_latents (ε -> z):  u ← m·u + (1 − m)·(u·exp(s(m·u)) + t(m·u)),

with s = 3·tanh(s_raw/3) so that no layer scales by more than e³. The masks cycle through even
and odd coordinates, then the first and second half. log p(z) = log N(ε; 0, I) + log|det ∂ε/∂z|,
which `fit` maximizes (`compute_loss` is −mean log p(z)) on every backend; `graph` is the
inverse, what `prior.onnx` computes.
"""

import math

import numpy as np

import keras
from keras import ops

from keras_vae.priors.base import FitTimer, PriorModel, check_latents, fit_with_cosine_decay
from keras_vae.priors.base import standardization

#: s = SCALE_BOUND·tanh(s_raw / SCALE_BOUND)
SCALE_BOUND = 3.0


def coupling_masks(dim, layers):
    """(layers, d) float32 0/1 masks: even, odd, first half, second half coordinates, in turn."""
    index = np.arange(dim)
    patterns = [index % 2 == 0, index % 2 == 1, index < dim // 2, index >= dim // 2]
    if dim == 1:
        patterns = [np.zeros(1, bool)]  # one coordinate: every layer moves it by a constant
    return np.stack([patterns[k % len(patterns)] for k in range(layers)]).astype("float32")


@keras.saving.register_keras_serializable(package="keras_vae")
class FlowPrior(PriorModel):
    """A RealNVP flow over d latents.

    Args:
        dim: d.
        layers: coupling layers.
        units: width of each layer's network (ReLU), which outputs s and t.
        hidden_layers: hidden layers of that network.

    Example:
        >>> prior = fit_flow(latents, epochs=30)
        >>> log_p = prior.log_prob(latents[:5])
    """

    kind = "flow"

    def __init__(self, dim, layers=8, units=256, hidden_layers=2, fit=None, **kwargs):
        super().__init__(dim, fit, **kwargs)
        self.num_layers, self.units, self.hidden_layers = int(layers), int(units), int(hidden_layers)
        # === Layers ===
        self.shift = self.add_weight(shape=(self.dim,), initializer="zeros", trainable=False,
                                     name="shift")
        self.log_scale = self.add_weight(shape=(self.dim,), initializer="zeros", trainable=False,
                                         name="log_scale")
        self.masks = coupling_masks(self.dim, self.num_layers)
        self.nets = []
        for k in range(self.num_layers):
            net = keras.Sequential(
                [keras.layers.Dense(self.units, activation="relu") for _ in range(self.hidden_layers)]
                + [keras.layers.Dense(2 * self.dim, kernel_initializer="zeros", name="s_t")],
                name=f"coupling_{k}")
            net.build((None, self.dim))
            self.nets.append(net)
        self.built = True

    def get_config(self):
        return {**super().get_config(), "layers": self.num_layers, "units": self.units,
                "hidden_layers": self.hidden_layers}

    def _mask(self, k):
        return ops.convert_to_tensor(self.masks[k])

    def _scale_shift(self, k, u):
        mask = self._mask(k)
        s_t = self.nets[k](u * mask)
        s = SCALE_BOUND * ops.tanh(s_t[:, : self.dim] / SCALE_BOUND) * (1.0 - mask)
        return s, s_t[:, self.dim :] * (1.0 - mask)

    def to_noise(self, z):
        """(ε, log|det ∂ε/∂z|) of z (n, d): ε (n, d), the log-determinant (n,)."""
        z = ops.convert_to_tensor(z, "float32")
        u = (z - self.shift) * ops.exp(-self.log_scale)
        log_det = -ops.sum(self.log_scale) * ops.ones_like(u[:, 0])
        for k in range(self.num_layers):
            mask = self._mask(k)
            s, t = self._scale_shift(k, u)
            u = u * mask + (1.0 - mask) * (u - t) * ops.exp(-s)
            log_det = log_det - ops.sum(s, axis=-1)
        return u, log_det

    def to_latents(self, epsilon):
        """z (n, d) of noise ε (n, d): the flow run backwards."""
        u = epsilon
        for k in reversed(range(self.num_layers)):
            mask = self._mask(k)
            s, t = self._scale_shift(k, u)
            u = u * mask + (1.0 - mask) * (u * ops.exp(s) + t)
        return self.shift + ops.exp(self.log_scale) * u

    def log_prob(self, z):
        """log p(z), nats, (n,)."""
        epsilon, log_det = self.to_noise(ops.convert_to_tensor(z, "float32"))
        return (-0.5 * ops.sum(ops.square(epsilon), axis=-1)
                - 0.5 * self.dim * math.log(2.0 * math.pi) + log_det)

    def call(self, z):
        return self.log_prob(z)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return -ops.mean(y_pred)

    def graph(self, epsilon):
        return self.to_latents(epsilon)


def fit_flow(latents, layers=8, units=256, hidden_layers=2, epochs=30, batch_size=256, lr=1e-3,
             seed=0, fit=None, verbose=0):
    """A `FlowPrior` trained by maximum likelihood on (N, d) latents: Adam, cosine decay, `fit`."""
    latents = check_latents(latents)
    keras.utils.set_random_seed(seed)
    with FitTimer() as timer:
        prior = FlowPrior(latents.shape[1], layers, units, hidden_layers)
        mean, std = standardization(latents)
        prior.shift.assign(mean.astype("float32"))
        prior.log_scale.assign(np.log(std).astype("float32"))
        history = fit_with_cosine_decay(prior, latents, epochs, batch_size, lr, verbose,
                                        clipnorm=10.0)
    prior.fit_info = timer.record(
        **(fit or {}), kind="flow", layers=layers, units=units, hidden_layers=hidden_layers,
        epochs=epochs, batch_size=batch_size, lr=lr, backend=keras.backend.backend(),
        train_nll=float(history.history["loss"][-1]))
    return prior
