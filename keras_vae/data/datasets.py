"""Image datasets as float32 arrays (N, H, W, C) in [0, 1], with labels where there are any.

Four sources, chosen by `name`:
- "digits": scikit-learn's embedded 8×8 digits (no network, no files). Pixel
  values 0–16 are divided by 16. The train/test split is fixed: 20 % of the
  1,797 images, stratified by label, `random_state=0` → 1,437 train / 360 test.
- a path to a `.npz` file with `x_train`, `x_test` (and optionally `y_train`,
  `y_test`): uint8 images in 0–255 or floats in [0, 1]; (N, H, W) or (N, H, W, C).
- a folder of PNG, JPEG, BMP or GIF files, with class subfolders or flat, split
  into train/ and test/ subfolders or by a fixed seed (`keras_vae.data.image_folder`
  says how); 8-bit pixels divided by 255.
- any TensorFlow Datasets image dataset by name ("mnist", "fashion_mnist",
  "binarized_mnist", "cifar10", …), read from `data_dir`.
"""

import os
from dataclasses import dataclass

import numpy as np

from keras_vae.data.options import DEFAULT_MEMORY_BUDGET_MB


SPLITS = ("train", "test")


DIGITS_TEST_FRACTION = 0.2


DIGITS_SPLIT_SEED = 0


@dataclass
class ImageData:
    """Images (N, H, W, C) float32 in [0, 1]; labels (N,) int or None."""

    images: np.ndarray
    labels: np.ndarray | None

    def __len__(self):
        return len(self.images)


def load_dataset(name="digits", split="train", data_dir=None, download=False, image_size=None,
                 color_mode="auto", memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB):
    """Loads one split of a dataset into memory; see the module docstring for the sources.

    Args:
        name: "digits", a path to a `.npz`, a path to an image folder, or a TFDS dataset name.
        split: "train" or "test" (TFDS: any split string TFDS accepts).
        data_dir: TFDS data directory (where `tfds build` prepared the data).
        download: let TFDS download and prepare the data if it is missing.
        image_size: image folders: (H, W) to centre-crop and resize every image to.
        color_mode: image folders: "auto", "grayscale" or "rgb".
        memory_budget_mb: image folders: a split whose decoded float32 images take more
            is refused (ValueError); training streams such a folder instead
            (`image_folder_split`).

    Returns:
        ImageData.
    """
    if name == "digits":
        return _load_digits(split)
    if is_image_folder(name):
        files = image_folder_split(name, split, image_size, color_mode)
        if files.decoded_bytes > memory_budget_mb * 1e6:
            raise ValueError(
                f"{name} ({split}): {len(files)} images of {files.image_shape} take "
                f"{files.decoded_bytes / 1e6:.0f} MB decoded, more than the memory budget of "
                f"{memory_budget_mb:g} MB; raise --memory-budget-mb or use fewer images")
        return ImageData(files.read(), files.labels)
    if name.endswith(".npz") or os.path.isfile(name):
        return _load_npz(name, split)
    return _load_tfds(name, split, data_dir, download)


def is_image_folder(name):
    """True when the dataset name is a directory: an image folder."""
    return isinstance(name, (str, os.PathLike)) and os.path.isdir(name)


def image_folder_split(path, split="train", image_size=None, color_mode="auto"):
    """The checked files of one split of an image folder: a `keras_vae.data.image_folder.ImageFiles`."""
    from keras_vae.data.image_folder import scan

    return scan(path, split, image_size, color_mode)


def binarize(images, seed=0):
    """Static binarization: x ~ Bernoulli(images), drawn once with a fixed seed."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape) < images).astype("float32")


def _load_digits(split):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_split(split)
    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]  # (1797, 8, 8, 1)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target, random_state=DIGITS_SPLIT_SEED,
    )
    if split == "train":
        return ImageData(x_train, y_train)
    return ImageData(x_test, y_test)


def _load_npz(path, split):
    _check_split(split)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .npz file: {path}")
    with np.load(path) as archive:
        key = f"x_{split}"
        if key not in archive:
            raise ValueError(
                f"{path} has no {key!r} array (it has {sorted(archive.files)}); "
                "expected x_train, x_test and optionally y_train, y_test"
            )
        images = archive[key]
        labels = archive[f"y_{split}"] if f"y_{split}" in archive else None
    return ImageData(to_unit_float(images, source=f"{path}:{key}"), labels)


def _load_tfds(name, split, data_dir, download):
    import tensorflow_datasets as tfds

    if name not in tfds.list_builders():
        raise ValueError(
            f"Unknown dataset {name!r}. Choose 'digits' (built in), a path to a .npz file, "
            "or a TensorFlow Datasets image dataset such as 'mnist', 'fashion_mnist', "
            "'binarized_mnist' or 'cifar10'."
        )
    try:
        data = tfds.load(name, split=split, data_dir=data_dir, download=download, batch_size=-1)
    except AssertionError as error:  # TFDS says "Dataset ... not found" this way
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r} ({error}). "
            f"Prepare it once with `tfds build {name} --data_dir DIR` (needs network), "
            "or pass download=True / --download."
        ) from None
    data = tfds.as_numpy(data)
    labels = data.get("label")
    return ImageData(to_unit_float(data["image"], source=f"tfds:{name}/{split}"), labels)


def to_unit_float(images, source="images"):
    """uint8 0–255 or float [0, 1] images -> float32 (N, H, W, C) in [0, 1]."""
    images = np.asarray(images)
    if images.dtype == object:
        raise ValueError(f"{source}: images have mixed shapes; all must share one (H, W, C)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"{source}: expected images (N, H, W) or (N, H, W, C), got shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype("float32") / 255.0
    images = images.astype("float32")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(
            f"{source}: float images must be in [0, 1], got [{images.min():g}, {images.max():g}]"
        )
    return images


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
