"""keras-vae: a Keras 3 variational autoencoder for TensorFlow, JAX and PyTorch.

The package is grouped by job; a module's folder says what it does and what it needs:

* ``keras_vae.core`` - NumPy, Pillow and the standard library only: the export
  contract, the likelihood estimator, anomaly scores, atomic files, images.
* ``keras_vae.models`` - the VAE family (``keras_vae.VAE``, ``keras_vae.HierarchicalVAE``), on Keras.
* ``keras_vae.data``, ``keras_vae.training``, ``keras_vae.evaluation``,
  ``keras_vae.export`` - datasets, training runs, measuring, ONNX export.
* ``keras_vae.serving`` - onnxruntime and the web stack; never Keras.
* ``keras_vae.commands`` - the ``keras-vae`` command line.

``import keras_vae`` loads no Keras, so a serving-only install can import the package;
``keras_vae.VAE`` and ``keras_vae.HierarchicalVAE`` import Keras on first use (PEP 562). The model classes are
registered with Keras as soon as Keras is imported, before or after this package,
so Keras' own idiom loads a saved model::

    import keras, keras_vae
    vae = keras.models.load_model("vae.keras")
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

__all__ = ["VAE", "HierarchicalVAE", "__version__"]

#: The model classes exported here, and the modules that define them.
_MODELS = {"VAE": "keras_vae.models.vae", "HierarchicalVAE": "keras_vae.models.hierarchical"}

#: The module whose import registers every model class of the family with Keras.
_MODELS_MODULE = "keras_vae.models.vae"


def __getattr__(name: str):
    if name in _MODELS:
        return getattr(importlib.import_module(_MODELS[name]), name)
    raise AttributeError(f"module 'keras_vae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODELS))


def _register_models() -> None:
    """Imports the model classes, which registers them with Keras' serialization."""
    if _MODELS_MODULE in sys.modules:  # imported, or being imported: it registers itself
        return
    try:
        importlib.import_module(_MODELS_MODULE)
    except ImportError:  # e.g. a Keras backend the models do not support; `keras_vae.VAE` says so
        pass


class _RegisterModelsAfterKeras(importlib.abc.MetaPathFinder):
    """Registers the models right after the first ``import keras`` in this process."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # once; the search below goes on without it
        spec = importlib.util.find_spec("keras")
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegisterModels(spec.loader)
        return spec


class _ThenRegisterModels(importlib.abc.Loader):
    """Keras' own loader, followed by `_register_models`."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_models()

    def __getattr__(self, name):
        return getattr(self._loader, name)


if "keras" in sys.modules:
    _register_models()
elif not any(isinstance(finder, _RegisterModelsAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterModelsAfterKeras())
