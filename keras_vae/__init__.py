"""keras-vae: a Keras 3 variational autoencoder for TensorFlow, JAX and PyTorch.

The package has three layers, each importable on its own:

* ``keras_vae.core`` - NumPy, Pillow and the standard library only: the
  export contract, the likelihood estimator, atomic files and images.
* the Keras library - ``keras_vae.VAE`` and the modules beside it
  (``keras_vae.model``, ``keras_vae.training``, ``keras_vae.export`` ...).
* ``keras_vae.serving`` - onnxruntime and the web stack; never Keras.

``import keras_vae`` loads none of them: ``keras_vae.VAE`` imports Keras on first
use (PEP 562), so a serving-only install can import the package.
"""

__version__ = "0.1.0"

__all__ = ["VAE", "__version__"]


def __getattr__(name: str):
    if name == "VAE":
        from keras_vae.model import VAE

        return VAE
    raise AttributeError(f"module 'keras_vae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"VAE"})
