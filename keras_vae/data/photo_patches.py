"""Photo patches: 32×32 RGB crops of natural photos, an offline natural-image benchmark.

Each photo is split by columns into a training region (its left ``1 − test_fraction``)
and a test region (the rest), so no test crop shares a pixel with a training crop.
Training crops are taken on a grid with stride ``train_stride`` (overlapping crops, many
of them); test crops on a grid with stride ``SIZE`` (no overlap). Everything is
deterministic: no random numbers are drawn.

Layout written: OUT/train/ and OUT/test/, one PNG per crop, named
``<photo>_<row>_<col>.png``; a flat folder per split, which `keras_vae.data.image_folder`
reads as unlabelled train and test splits. The folder is built beside OUT and renamed
into place at the end, so OUT is either complete or absent.

`png_bits_per_dim` gives the baseline a likelihood model must beat: the size of the test
crops as lossless PNG files (Pillow, the highest compression level), in bits per
sub-pixel, counted as the whole files or as their image data (IDAT) alone.

NumPy and Pillow only; the photos themselves are read by the caller
(``benchmarks/make_photo_patches.py`` takes them from scikit-image and matplotlib).
"""

import io
import os
import shutil
import struct

import numpy as np
from PIL import Image

SIZE = 32
TEST_FRACTION = 0.2
TRAIN_STRIDE = 8


def crops(image, stride, size=SIZE):
    """Every size×size crop of ``image`` (H, W, 3) on a grid of ``stride``: [(row, col, crop)]."""
    height, width = image.shape[:2]
    return [(top, left, image[top : top + size, left : left + size])
            for top in range(0, height - size + 1, stride)
            for left in range(0, width - size + 1, stride)]


def split_photo(image, test_fraction=TEST_FRACTION):
    """(training region, test region): the photo's left columns and its right ``test_fraction``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a photo must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    boundary = int(round(image.shape[1] * (1.0 - test_fraction)))
    return image[:, :boundary], image[:, boundary:]


def build_photo_patches(photos, out_dir, test_fraction=TEST_FRACTION, train_stride=TRAIN_STRIDE):
    """Writes the train and test crops of ``photos`` ({name: uint8 (H, W, 3)}); returns {split: count}."""
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} already exists; choose another folder or remove it")
    partial = out_dir.rstrip(os.sep) + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    counts = {"train": 0, "test": 0}
    for split in counts:
        os.makedirs(os.path.join(partial, split))
    for name, photo in photos.items():
        train_region, test_region = split_photo(photo, test_fraction)
        for split, region, stride in (("train", train_region, train_stride),
                                      ("test", test_region, SIZE)):
            for top, left, crop in crops(region, stride):
                Image.fromarray(crop).save(os.path.join(partial, split, f"{name}_{top:04d}_{left:04d}.png"))
                counts[split] += 1
    if not counts["test"]:
        shutil.rmtree(partial)
        raise ValueError(f"no test crop fits: the photos' test regions are narrower than {SIZE} pixels")
    os.replace(partial, out_dir)
    return counts


def png_bits_per_dim(images):
    """Lossless PNG size of uint8 images (N, H, W, C), in bits per sub-pixel: (whole files, IDAT only).

    Each image is encoded on its own with Pillow at compression level 9 (what a PNG of one
    crop costs); the IDAT figure leaves out the fixed headers, the fairer comparison for
    small images.
    """
    file_bytes = idat_bytes = 0
    for image in np.asarray(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=9, optimize=True)
        data = buffer.getvalue()
        file_bytes += len(data)
        idat_bytes += _idat_length(data)
    dims = int(np.prod(np.asarray(images).shape))
    return 8.0 * file_bytes / dims, 8.0 * idat_bytes / dims


def _idat_length(png):
    """The total length of a PNG's IDAT chunks' data, in bytes."""
    position, total = 8, 0
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        if kind == b"IDAT":
            total += length
        position += 12 + length
    return total
