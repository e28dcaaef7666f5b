"""The run directory: finding and loading its model, reading its config and history."""

import csv
import dataclasses
import datetime
import json
import os
import platform

import numpy as np

import keras

import keras_vae
from keras_vae.models.hierarchical import HierarchicalVAE
from keras_vae.models.vae import VAE


def resolve_model_path(path):
    """A `.keras` file, or a run directory (its model.keras); returns (model path, run dir or None)."""
    if os.path.isdir(path):
        model_path = os.path.join(path, "model.keras")
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"{path} is a directory without model.keras; is it a run directory?")
        return model_path, path
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such model file or run directory: {path}")
    return path, None


def load_vae(path):
    """Loads a model of the family (a `VAE` or a `HierarchicalVAE`) from a `.keras` file or a
    run directory; ValueError if it is not one."""
    model_path, _ = resolve_model_path(path)
    try:
        model = keras.models.load_model(model_path)
    except Exception as error:
        raise ValueError(f"Could not load {model_path} as a Keras model: {error}") from None
    if not isinstance(model, (VAE, HierarchicalVAE)):
        raise ValueError(f"{model_path} holds a {type(model).__name__}, not a keras_vae.VAE or "
                         "keras_vae.HierarchicalVAE")
    return model


def read_run_config(run_dir):
    """The run's config.json as a dict, or {} when there is none."""
    path = os.path.join(run_dir, "config.json") if run_dir else None
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def run_record(config, image_shape, devices=None, num_processes=1):
    """config.json contents: the options plus what is needed to reproduce and load the run."""
    record = dataclasses.asdict(config)
    record.update(
        image_shape=[int(d) for d in image_shape],
        backend=keras.backend.backend(),
        devices=devices,
        num_processes=num_processes,
        versions=library_versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return record


def library_versions():
    versions = {"keras_vae": keras_vae.__version__, "keras": keras.__version__,
                "python": platform.python_version(), "numpy": np.__version__}
    backend = keras.backend.backend()
    module = __import__(backend)
    versions[backend] = module.__version__
    return versions


def logged_values(history_path, column):
    """The values of `column` in a CSVLogger file, in order ([] without file or column).

    Empty cells and CSVLogger's "NA" (e.g. val_* columns of a run without validation) are skipped.
    """
    if not os.path.exists(history_path):
        return []
    with open(history_path) as f:
        cells = [row.get(column) for row in csv.DictReader(f)]
    return [float(cell) for cell in cells if cell and cell != "NA"]


def best_logged_value(history_path, column):
    """The lowest `column` in a CSVLogger file, or None (no file, no rows)."""
    values = logged_values(history_path, column)
    return min(values) if values else None


def last_logged_value(history_path, column):
    """The last `column` in a CSVLogger file, or None (no file, no rows)."""
    values = logged_values(history_path, column)
    return values[-1] if values else None
