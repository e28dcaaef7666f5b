"""Coloured MNIST: MNIST digits tinted and placed on coloured backgrounds, as a folder of PNGs.

A reproducible, offline RGB dataset for image-folder training (`keras_vae.data.image_folder`)
and for the discretized likelihood: 8-bit 32×32×3 images, built from an MNIST `.npz`
(x_train, y_train, x_test, y_test; `keras.datasets.mnist` saves one) with a seed.

Each 28×28 digit is placed at a random offset (0–4 pixels down and right) in a 32×32
frame; pixel = background·(1 − a) + foreground·a, a = the digit's grey level / 255, with
the foreground colour drawn per image from [128, 255]³ and the background from [0, 127]³
(so the digit always stands out). Everything is drawn from `numpy.random.default_rng(seed)`
in image order, train first.

Layout written: OUT/train/0 … OUT/train/9 and OUT/test/0 … OUT/test/9, one PNG per image,
named by its index in the MNIST split. The folder is built beside OUT and renamed into
place at the end, so OUT is either complete or absent.
"""

import os
import shutil

import numpy as np
from PIL import Image

SIZE = 32
DIGIT = 28


def colour_digits(digits, rng):
    """Coloured 32×32×3 uint8 images from (N, 28, 28) uint8 digits, drawn from `rng`."""
    count = len(digits)
    foreground = rng.integers(128, 256, size=(count, 1, 1, 3)).astype(np.float32)
    background = rng.integers(0, 128, size=(count, 1, 1, 3)).astype(np.float32)
    offsets = rng.integers(0, SIZE - DIGIT + 1, size=(count, 2))
    alpha = np.zeros((count, SIZE, SIZE, 1), np.float32)
    for i, (top, left) in enumerate(offsets):
        alpha[i, top : top + DIGIT, left : left + DIGIT, 0] = digits[i] / np.float32(255)
    return np.rint(background * (1.0 - alpha) + foreground * alpha).astype(np.uint8)


def build_coloured_mnist(mnist_path, out_dir, seed=0, train_count=None, test_count=None):
    """Writes coloured MNIST as a folder of PNGs with class subfolders; returns {split: count}.

    Args:
        mnist_path: an `.npz` with x_train, y_train, x_test, y_test (uint8 digits, int labels).
        out_dir: the folder to create; it must not exist.
        seed: the seed of the colours and offsets.
        train_count, test_count: use only the first that many images of each split (None: all).
    """
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} already exists; choose another folder or remove it")
    if not os.path.isfile(mnist_path):
        raise FileNotFoundError(f"No such MNIST .npz file: {mnist_path}")
    with np.load(mnist_path) as archive:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
        if missing:
            raise ValueError(f"{mnist_path} lacks {sorted(missing)}; it needs x_train, y_train, "
                             "x_test and y_test")
        splits = {"train": (archive["x_train"][:train_count], archive["y_train"][:train_count]),
                  "test": (archive["x_test"][:test_count], archive["y_test"][:test_count])}
    rng = np.random.default_rng(seed)
    partial = out_dir.rstrip(os.sep) + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    counts = {}
    for split, (digits, labels) in splits.items():
        if digits.ndim != 3 or digits.shape[1:] != (DIGIT, DIGIT):
            raise ValueError(f"{mnist_path}: x_{split} must be (N, 28, 28), got {digits.shape}")
        images = colour_digits(digits, rng)
        for label in np.unique(labels):
            os.makedirs(os.path.join(partial, split, str(int(label))))
        for index, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(os.path.join(partial, split, str(int(label)), f"{index:05d}.png"))
        counts[split] = len(images)
    os.replace(partial, out_dir)
    return counts
