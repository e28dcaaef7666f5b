"""Anomaly scores of a Keras VAE, and the images to score.

`keras_scores` is `keras_vae.core.anomaly.score_images` with the model's Keras
networks: the same noise as `keras_vae.serving.scoring.onnx_scores`, so a run
directory and its exported files give the same scores up to the export's parity.

`load_images` reads the images to score: the built-in digits, a ``.npz`` (any array
by ``key``, or ``x_<split>``), a folder of image files (every image in it, named by
its path; a folder with ``train/`` and ``test/`` gives the split's), or a TensorFlow
Datasets name. Other sources plug in with `register_loader`. Keras is never imported here
at module level, so the ONNX scoring path runs without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
import numpy as np
from keras_vae.data.datasets import binarize as binarize_images
from keras_vae.data.datasets import load_dataset, to_unit_float


@dataclass
class ScoreImages:
    """Images to score, float32 (N, H, W, C) in [0, 1], with a name for reports.

    Attributes:
        images: the pixels.
        names: one name per image (file names, for a folder), or None to use the index.
        labels: (N,) labels where the source has them, else None.
        description: e.g. ``"data/mnist.npz x_test"``: what a threshold was set on.
    """

    images: np.ndarray
    names: list[str] | None
    labels: np.ndarray | None
    description: str


#: (accepts(source) -> bool, load(source, split, key, data_dir) -> ScoreImages), tried in order
#: before the built-in sources.
Loader = Callable[[str, str, "str | None", "str | None"], ScoreImages]


_LOADERS: list[tuple[Callable[[str], bool], Loader]] = []


def labels_to_score(labels: np.ndarray | None, conditional: bool, description: str) -> np.ndarray | None:
    """The labels a model scores images with: theirs for a class-conditional model (which scores
    −log p(x|y)), None for an unconditional one.

    Raises ValueError, saying so, when a conditional model meets images without labels.
    """
    if not conditional:
        return None
    if labels is None:
        raise ValueError(f"this model is class-conditional: it scores -log p(x|y), which needs each "
                         f"image's label, and {description} has none (a .npz needs y_<split> "
                         "beside x_<split>; an image folder, one subfolder per class)")
    return np.asarray(labels)


def register_loader(accepts: Callable[[str], bool], load: Loader) -> None:
    """Add an image source: ``load`` is used for every ``source`` that ``accepts`` returns True for.

    ``load(source, split, key, data_dir)`` returns `ScoreImages` (``names`` may carry
    file names, which the CSV then shows in place of the index).
    """
    _LOADERS.insert(0, (accepts, load))


def load_images(source: str, split: str = "test", key: str | None = None,
                data_dir: str | None = None, binarize: bool = False, seed: int = 0,
                max_images: int | None = None) -> ScoreImages:
    """The images of ``source``: "digits", a ``.npz`` path, or a TFDS name.

    Args:
        source: the dataset.
        split: "train" or "test" (a ``.npz``: the ``x_<split>`` array).
        key: a ``.npz`` array to read in place of ``x_<split>``.
        data_dir: the TFDS data directory.
        binarize: draw binary images once from the pixel intensities (``seed``), as a
            model trained on binarized images saw them.
        max_images: the first ``max_images`` images only.

    Raises ValueError or FileNotFoundError, naming the problem (no such key,
    an empty dataset, images that are not (N, H, W[, C]) in [0, 1] or uint8).
    """
    for accepts, load in _LOADERS:
        if accepts(source):
            data = load(source, split, key, data_dir)
            break
    else:
        if key is not None:
            data = _load_npz_key(source, key)
        else:
            loaded = load_dataset(source, split, data_dir)
            data = ScoreImages(loaded.images, None, loaded.labels, f"{source} {split}")
    if max_images is not None:
        data = ScoreImages(data.images[:max_images], None if data.names is None
                           else data.names[:max_images],
                           None if data.labels is None else data.labels[:max_images],
                           data.description)
    if len(data.images) == 0:
        raise ValueError(f"{data.description} has no images to score")
    if binarize:
        data = ScoreImages(binarize_images(data.images, seed=seed), data.names, data.labels,
                           data.description + " (binarized)")
    return data


def _load_image_folder(root: str, split: str, key: str | None, data_dir: str | None) -> ScoreImages:
    """Every image of a folder, named by its path in the folder (``train/``/``test/``: the split's)."""
    from keras_vae.data.image_folder import ImageFiles, check_headers, list_images, scan

    if all(os.path.isdir(os.path.join(root, name)) for name in ("train", "test")):
        files = scan(root, split)
        where = f"{root} {split}"
    else:
        paths, labels, class_names = list_images(root)
        if not paths:
            raise ValueError(f"{root} has no images to score")
        files = ImageFiles(paths, labels, class_names, check_headers(paths))
        where = root
    names = [os.path.relpath(path, root) for path in files.paths]
    return ScoreImages(files.read(), names, files.labels, where)


register_loader(lambda source: os.path.isdir(source), _load_image_folder)


def _load_npz_key(path: str, key: str) -> ScoreImages:
    if not path.endswith(".npz") and not os.path.isfile(path):
        raise ValueError(f"--key names an array of a .npz file; {path!r} is not one")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .npz file: {path}")
    with np.load(path) as archive:
        if key not in archive:
            raise ValueError(f"{path} has no {key!r} array (it has {sorted(archive.files)})")
        images = archive[key]
        label_key = "y_" + key[2:] if key.startswith("x_") else None
        labels = archive[label_key] if label_key and label_key in archive else None
    return ScoreImages(to_unit_float(images, source=f"{path}:{key}"), None, labels, f"{path} {key}")
