"""`GaussianMixturePrior`: a Gaussian mixture fitted by scikit-learn's `GaussianMixture`.

Ghosh et al. 2020 fit a 10-component mixture to a trained autoencoder's latents; Chadebec &
Allassonnière 2022 swap only the sampler of a plain MNIST VAE for one. The mixture's weights,
means and the Cholesky factors L_c of its covariances (any of scikit-learn's covariance types,
as full matrices) are the model's weights; its graph maps noise ε and a component c to
z = μ_c + L_c·ε. The loop (`keras_vae.core.fitted_prior`) picks c by the weights.
"""

import numpy as np

import keras
from keras import ops

from keras_vae.core import fitted_prior
from keras_vae.priors.base import FitTimer, PriorModel, check_latents

COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")


@keras.saving.register_keras_serializable(package="keras_vae")
class GaussianMixturePrior(PriorModel):
    """p(z) = Σ_c w_c N(z; μ_c, L_c L_cᵀ).

    Args:
        dim: d.
        components: C.
        covariance_type: what it was fitted with ("full", "diag", "tied", "spherical"); the
            factors are stored as full (C, d, d) matrices whatever it is.

    Example:
        >>> prior = fit_gmm(latents, components=10)
        >>> z = prior.sample_latents(16, seed=0)
    """

    kind = "gmm"

    def __init__(self, dim, components=10, covariance_type="full", fit=None, **kwargs):
        super().__init__(dim, fit, **kwargs)
        self.components = int(components)
        self.covariance_type = covariance_type
        # === Weights (set by fit_gmm) ===
        self.component_weights = self.add_weight(
            shape=(self.components,), initializer=keras.initializers.Constant(1.0 / self.components),
            trainable=False, name="component_weights")
        self.means = self.add_weight(shape=(self.components, self.dim), initializer="zeros",
                                     trainable=False, name="means")
        self.scale_tril = self.add_weight(
            shape=(self.components, self.dim, self.dim),
            initializer=keras.initializers.Constant(np.broadcast_to(
                np.eye(self.dim, dtype="float32"), (self.components, self.dim, self.dim))),
            trainable=False, name="scale_tril")
        self.built = True

    def get_config(self):
        return {**super().get_config(), "components": self.components,
                "covariance_type": self.covariance_type}

    def graph(self, epsilon, component):
        component = ops.cast(component, "int32")
        mean = ops.take(self.means, component, axis=0)  # (n, d)
        tril = ops.take(self.scale_tril, component, axis=0)  # (n, d, d)
        return mean + ops.squeeze(ops.matmul(tril, ops.expand_dims(epsilon, -1)), -1)

    def call(self, inputs):
        return self.graph(*inputs)

    def fitted_prior(self):
        weights = np.asarray(ops.convert_to_numpy(self.component_weights), np.float64)
        return fitted_prior.FittedPrior(self.kind, self.dim, weights=weights / weights.sum(),
                                        fit=self.fit_info)

    def covariances(self):
        """(C, d, d) float64 covariances L_c L_cᵀ."""
        tril = np.asarray(ops.convert_to_numpy(self.scale_tril), np.float64)
        return tril @ np.swapaxes(tril, 1, 2)


def full_covariances(mixture):
    """A fitted `sklearn.mixture.GaussianMixture`'s covariances as (C, d, d) float64."""
    c, d = mixture.means_.shape
    covariances = np.asarray(mixture.covariances_, np.float64)
    if mixture.covariance_type == "full":
        return covariances
    if mixture.covariance_type == "tied":
        return np.broadcast_to(covariances, (c, d, d)).copy()
    if mixture.covariance_type == "diag":
        return np.stack([np.diag(v) for v in covariances])
    return np.stack([np.eye(d) * v for v in covariances])  # spherical


def fit_gmm(latents, components=10, covariance_type="full", seed=0, max_iter=200, fit=None,
            verbose=0):
    """A `GaussianMixturePrior` fitted to (N, d) latents with scikit-learn (EM, k-means start)."""
    from sklearn.mixture import GaussianMixture

    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}; "
                         f"got {covariance_type!r}")
    latents = check_latents(latents)
    if not 1 <= components <= len(latents):
        raise ValueError(f"components must be from 1 to the number of latents, {len(latents)}; "
                         f"got {components}")
    with FitTimer() as timer:
        mixture = GaussianMixture(components, covariance_type=covariance_type, random_state=seed,
                                  max_iter=max_iter, reg_covar=1e-6, verbose=verbose)
        mixture.fit(latents.astype(np.float64))
    prior = GaussianMixturePrior(latents.shape[1], components, covariance_type, fit=timer.record(
        **(fit or {}), kind="gmm", components=components, covariance_type=covariance_type,
        converged=bool(mixture.converged_), iterations=int(mixture.n_iter_),
        train_log_likelihood=float(mixture.score(latents.astype(np.float64)))))
    prior.component_weights.assign(mixture.weights_.astype("float32"))
    prior.means.assign(mixture.means_.astype("float32"))
    prior.scale_tril.assign(np.linalg.cholesky(full_covariances(mixture)).astype("float32"))
    return prior
