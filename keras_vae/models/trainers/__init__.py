"""The one piece that differs by backend: how a training step takes and applies gradients.

`BackendTrainer` is the mixin for the backend Keras runs on; `VAE` inherits it.
Each mixin calls the shared `VAE.compute_losses`, and applies the gradient-norm
clipping and update skipping of `gradient_guard` to models that ask for it.
"""

import keras

_backend = keras.backend.backend()
if _backend == "tensorflow":
    from keras_vae.models.trainers.tensorflow_trainer import TensorFlowTrainer as BackendTrainer
elif _backend == "jax":
    from keras_vae.models.trainers.jax_trainer import JaxTrainer as BackendTrainer
elif _backend == "torch":
    from keras_vae.models.trainers.torch_trainer import TorchTrainer as BackendTrainer
else:
    raise ImportError(
        f"keras_vae supports the tensorflow, jax and torch backends; KERAS_BACKEND is {_backend!r}"
    )

__all__ = ["BackendTrainer"]
