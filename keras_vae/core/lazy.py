"""Names a package exports without importing their modules until first use (PEP 562).

A subpackage whose modules need Keras declares its public names here, so that
``import keras_vae.data`` (or any of its Keras-free modules) does not load Keras.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], object],
                                                                Callable[[], list[str]]]:
    """(__getattr__, __dir__) for ``package``: name -> the module (relative to it) that defines it.

    Example: ``__getattr__, __dir__ = lazy_exports(__name__, {"VAE": "vae"})``.
    """

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(homes)

    return __getattr__, __dir__
