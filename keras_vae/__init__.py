"""keras-vae: a Keras 3 variational autoencoder for TensorFlow, JAX and PyTorch."""

__version__ = "0.1.0"

from keras_vae.model import VAE  # noqa: E402

__all__ = ["VAE", "__version__"]
