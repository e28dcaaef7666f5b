"""What every model of the family shares: `FamilyModel`, a `keras.Model` with the backend's
train step, the KL warm-up, the loss trackers, the input checks and atomic saving (with the
noise generator's state).

A member (`keras_vae.models.vae.VAE`, `keras_vae.models.hierarchical.HierarchicalVAE`)
subclasses it and adds its layers, its `compute_losses` (the one loss that `train_step` and
`test_step` share on every backend; `keras_vae.models.trainers`), its `metrics` and its user
methods. It keeps `image_shape`, `likelihood`, `kl_warmup_steps`, and the variables
`kl_weight` (β) and `steps_seen` that the warm-up reads.
"""

import contextlib
import os

import numpy as np

import keras
from keras import ops

from keras_vae.core.files import atomic_path
from keras_vae.models.trainers import BackendTrainer


# The key under which a model's file stores the state of its noise generator.
NOISE_STATE_KEY = "noise_seed_state"


class FamilyModel(BackendTrainer, keras.Model):
    """The base class of the family's models (see the module docstring)."""

    def save_own_variables(self, store):
        # The noise generator's state (`seed_generator`) goes with the weights, into model
        # files, checkpoints and the resume backup, so that a resumed run draws the noise an
        # uninterrupted run would have.
        super().save_own_variables(store)
        store[NOISE_STATE_KEY] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        keys = list(store.keys())
        if NOISE_STATE_KEY in keys:  # files saved before it was stored have no noise state
            self.seed_generator.state.assign(np.asarray(store[NOISE_STATE_KEY]))
        super().load_own_variables({key: store[key] for key in keys if key != NOISE_STATE_KEY})

    def compile_from_config(self, config):
        # A model saved under JAX stores jit_compile=True, which under torch
        # would switch on torch.compile; let the loading backend choose.
        config = dict(config, jit_compile="auto")
        # Under torch, Keras saves its torch-only optimizer class (module
        # keras.src.backend.torch...); load the public class of the same name.
        optimizer = config.get("optimizer")
        if isinstance(optimizer, dict) and optimizer.get("module", "").startswith("keras.src.backend."):
            config["optimizer"] = dict(optimizer, module="keras.optimizers", registered_name=None)
        super().compile_from_config(config)

    def current_beta(self):
        """β for the next training step: linear warm-up from 0 over kl_warmup_steps."""
        if self.kl_warmup_steps == 0:
            return ops.convert_to_tensor(self.kl_weight)
        progress = ops.minimum(1.0, self.steps_seen / float(self.kl_warmup_steps))
        return self.kl_weight * progress

    def update_loss_trackers(self, losses):
        """Adds a batch of per-example losses to the trackers; returns the logs."""
        for tracker in self.metrics:
            tracker.update_state(losses[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.metrics}

    def check_image_shape(self, x):
        """Raises ValueError unless x is a batch of images of `input_shape`."""
        shape = tuple(x.shape)
        if len(shape) != 4 or tuple(shape[1:]) != self.image_shape:
            raise ValueError(
                f"Expected images of shape (batch, {', '.join(map(str, self.image_shape))}), "
                f"got an array of shape {shape}."
            )

    def check_images(self, x):
        """Shape check plus, for the Bernoulli and discretized logistic decoders, values in [0, 1].

        Returns float32 numpy.
        """
        x = np.asarray(x)
        self.check_image_shape(x)
        x = x.astype("float32", copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError("Images contain NaN or infinite values.")
        if self.likelihood != "gaussian" and x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise ValueError(
                f"A {self.likelihood.replace('_', ' ')} decoder needs pixel values in [0, 1], "
                "got values in "
                f"[{x.min():g}, {x.max():g}]; scale the data (e.g. divide uint8 images by 255)."
            )
        return x

    def save(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save`, made atomic for local `.keras` files.

        The model is written to a temporary file beside `filepath` and renamed
        over it, so an interrupted save (for instance by ModelCheckpoint in
        the middle of training) never leaves a half-written model behind.
        """
        path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
        with outside_distribution():
            if path is None or not path.endswith(".keras") or "://" in path:
                return super().save(filepath, overwrite=overwrite, **kwargs)
            if os.path.exists(path) and not overwrite:
                return super().save(filepath, overwrite=False, **kwargs)  # Keras asks first
            with atomic_path(path) as temp_path:
                super().save(temp_path, overwrite=True, **kwargs)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        with outside_distribution():
            return super().save_weights(filepath, overwrite=overwrite, **kwargs)


@contextlib.contextmanager
def outside_distribution():
    """No `keras.distribution` for the block (restored after it).

    Saving creates throw-away Keras objects (a reference optimizer); under a multi-process
    distribution their variables would be placed across every process's devices, a collective
    operation that the one process that saves cannot complete alone. Reading the model's own
    variables, replicated on every device, needs no other process.
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(distribution)


def is_array(x):
    """True for a NumPy array or any array-like tensor (it has a shape and a dtype)."""
    return isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype"))
