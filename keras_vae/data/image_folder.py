"""A folder of PNG, JPEG, BMP or GIF files as a dataset: read into memory, or streamed from disk.

Layout, as `keras.utils.image_dataset_from_directory` reads it:

* class subfolders (``cats/``, ``dogs/``, ...): each subfolder is a class, labelled
  0, 1, ... in sorted order of the folder names; files anywhere below a class folder
  belong to it, and files directly in the top folder are ignored;
* a flat folder of files: no labels.

Splits: a folder with both ``train/`` and ``test/`` subfolders gives those (each laid out
as above); any other folder is split once, by file, with a fixed seed
(`SPLIT_SEED`): `TEST_FRACTION` of the files (at least one) are the test split,
the rest the training split. Files are listed in sorted path order before the split,
so the split depends only on the file names.

Only files whose names end in ``.png``, ``.jpg``, ``.jpeg``, ``.bmp`` or ``.gif``
(any case) are read; other files (``.txt``, ``.DS_Store``, ...) are ignored.

Pixels: every image is decoded with Pillow to 8 bits per channel, ``grayscale`` (one
channel, Pillow's "L" conversion) or ``rgb`` (three; an alpha channel is dropped; a GIF
gives its first frame), and scaled to float32 [0, 1] as ``uint8 / 255``, so the values lie
on the 256-level grid a discretized likelihood needs. With ``color_mode="auto"``
every file must have the same channel count (grey modes "1", "L", "LA", "I", "F" and
palettes of greys only give one, all others three).

Size: with ``image_size=(H, W)`` each image is centre-cropped to the aspect ratio H:W
(the largest centred crop), then resized to H×W with Pillow's bilinear filter (which
averages over the source pixels when shrinking), the policy of
``image_dataset_from_directory(crop_to_aspect_ratio=True)``. Without it every file must
have the same size.

Problems are found before training starts, from the file headers (which Pillow reads
without decoding the pixels): a file Pillow cannot open, a size or a channel count that
differs from the first file's, or a folder without images is a ValueError naming the
file. A file whose header is fine but whose pixels cannot be decoded (truncated) is a
ValueError naming it when it is read.

Memory: `ImageFiles.decoded_bytes` is what the split takes decoded, as float32. When that
fits in the memory budget, `keras_vae.training` reads the whole split into one array;
otherwise it streams it, batch by batch, through
`keras_vae.data.batches.ImageFolderBatches` (a `keras.utils.PyDataset`), which holds
only the batches in flight. This module itself needs NumPy and Pillow only.
"""

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

from keras_vae.data.options import COLOR_MODES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TEST_FRACTION = 0.1
SPLIT_SEED = 0
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# Files named in one error message; the message gives the count of the rest.
NAMED_FILES = 5


@dataclass
class ImageFiles:
    """The image files of one split, checked, and how to decode them.

    Attributes:
        paths: the files, in sorted order.
        labels: (N,) int64 class indices, or None for a flat folder.
        class_names: the class folders' names, label i is class_names[i]; () without labels.
        image_shape: (H, W, C) of a decoded image.
        resize: whether images are centre-cropped and resized to (H, W).
    """

    paths: list
    labels: np.ndarray | None
    class_names: tuple
    image_shape: tuple
    resize: bool = False

    def __len__(self):
        return len(self.paths)

    @property
    def decoded_bytes(self):
        """Bytes of the whole split decoded as float32 (N, H, W, C)."""
        return len(self.paths) * math.prod(self.image_shape) * 4

    def read(self, indices=None):
        """Decodes the files at `indices` (default: all): float32 (B, H, W, C) in [0, 1]."""
        indices = range(len(self.paths)) if indices is None else indices
        images = np.empty((len(indices),) + tuple(self.image_shape), np.float32)
        for row, index in enumerate(indices):
            images[row] = read_image(self.paths[index], self.image_shape, self.resize) / np.float32(255)
        return images

    def subset(self, indices):
        """The same files' subset at `indices` (an ImageFiles)."""
        labels = None if self.labels is None else self.labels[indices]
        return ImageFiles([self.paths[i] for i in indices], labels, self.class_names,
                          self.image_shape, self.resize)


def scan(root, split="train", image_size=None, color_mode="auto"):
    """The files of one split of an image folder, checked from their headers.

    Args:
        root: the folder.
        split: "train" or "test".
        image_size: (H, W) to centre-crop and resize to, or None to keep the files' size.
        color_mode: "auto", "grayscale" or "rgb".

    Returns:
        ImageFiles.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: no images, unreadable files, mixed sizes or channel counts (naming
            the files), or a bad option.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {COLOR_MODES}, got {color_mode!r}")
    if image_size is not None:
        image_size = tuple(int(d) for d in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be two positive integers (H W), got {image_size}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"No such image folder: {root}")
    split_dirs = [os.path.join(root, name) for name in ("train", "test")]
    if all(os.path.isdir(d) for d in split_dirs):
        paths, labels, class_names = list_images(os.path.join(root, split))
        where = os.path.join(root, split)
    else:
        paths, labels, class_names = list_images(root)
        where = root
        if paths:  # the whole folder, so that both splits get one shape
            image_shape = check_headers(paths, image_size, color_mode)
        if len(paths) >= 2:
            order = np.random.default_rng(SPLIT_SEED).permutation(len(paths))
            num_test = max(1, int(round(TEST_FRACTION * len(paths))))
            chosen = np.sort(order[:num_test] if split == "test" else order[num_test:])
            paths = [paths[i] for i in chosen]
            labels = None if labels is None else labels[chosen]
        elif paths:
            raise ValueError(f"{root} holds one image; a training and a test split need at least 2")
    if not paths:
        raise ValueError(
            f"{where} holds no images ({', '.join(IMAGE_EXTENSIONS)} files, in class subfolders "
            "or directly in the folder)")
    if where != root:
        image_shape = check_headers(paths, image_size, color_mode)
    return ImageFiles(paths, labels, class_names, image_shape, resize=image_size is not None)


def list_images(folder):
    """(paths, labels or None, class names) of the images in one folder; see the module docstring."""
    entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    class_dirs = [entry for entry in entries if entry.is_dir()]
    if class_dirs:
        paths, labels = [], []
        for label, class_dir in enumerate(class_dirs):
            found = []
            for directory, subdirs, files in os.walk(class_dir.path, followlinks=True):
                subdirs.sort()
                found += [os.path.join(directory, f) for f in sorted(files) if _is_image_name(f)]
            paths += found
            labels += [label] * len(found)
        return paths, np.asarray(labels, np.int64), tuple(d.name for d in class_dirs)
    paths = [entry.path for entry in entries if entry.is_file() and _is_image_name(entry.name)]
    return paths, None, ()


def _is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def check_headers(paths, image_size=None, color_mode="auto"):
    """(H, W, C) of the decoded images, after checking every file's header.

    Raises ValueError naming the files Pillow cannot open, or the first file whose size
    (without image_size) or channel count (with color_mode "auto") differs from the first
    file's.
    """
    unreadable, first = [], None
    for path in paths:
        try:
            with Image.open(path) as image:
                size, channels = image.size, channel_count(image)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            unreadable.append(f"{path} ({type(error).__name__}: {error})"
                              if len(unreadable) < NAMED_FILES else path)
            continue
        if first is None:
            first = (path, size, channels)
            continue
        if image_size is None and size != first[1]:
            raise ValueError(
                f"{path} is {size[1]}x{size[0]} (HxW) but {first[0]} is {first[1][1]}x{first[1][0]}: "
                "images of mixed sizes need --image-size H W (centre-crop to the aspect ratio, "
                "then resize)")
        if color_mode == "auto" and channels != first[2]:
            raise ValueError(
                f"{path} has {channels} channel(s) but {first[0]} has {first[2]}: choose "
                "--color-mode grayscale or rgb to convert every image to one")
    if unreadable:
        more = len(unreadable) - NAMED_FILES
        raise ValueError(
            f"{len(unreadable)} of {len(paths)} files cannot be read as images: "
            + "; ".join(unreadable[:NAMED_FILES]) + (f"; and {more} more" if more > 0 else "")
            + ". Remove or replace them.")
    height, width = image_size if image_size is not None else (first[1][1], first[1][0])
    channels = {"grayscale": 1, "rgb": 3}.get(color_mode, first[2])
    return (int(height), int(width), channels)


def channel_count(image):
    """1 for a grey PIL image (a grey mode, or a palette of greys only, as GIFs of grey images have), else 3."""
    if image.mode in GREY_MODES:
        return 1
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or []
        if all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3)):
            return 1
    return 3


def read_image(path, image_shape, resize=False):
    """One file decoded to uint8 (H, W, C) of `image_shape`; ValueError naming a bad file."""
    height, width, channels = image_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if resize:
                image = crop_and_resize(image, height, width)
            pixels = np.asarray(image, np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot decode the image ({error})") from None
    if pixels.shape[:2] != (height, width):
        raise ValueError(f"{path} is {pixels.shape[0]}x{pixels.shape[1]} (HxW), not {height}x{width}; "
                         "pass --image-size H W to resize every image")
    return pixels.reshape(height, width, channels)


def crop_and_resize(image, height, width):
    """The largest centred crop of a PIL image with aspect ratio height:width, resized to it."""
    w, h = image.size
    if w * height > h * width:  # too wide: crop the sides
        crop_w = max(1, round(h * width / height))
        left = (w - crop_w) // 2
        box = (left, 0, left + crop_w, h)
    else:  # too tall (or exact): crop top and bottom
        crop_h = max(1, round(w * height / width))
        top = (h - crop_h) // 2
        box = (0, top, w, top + crop_h)
    return image.crop(box).resize((width, height), Image.Resampling.BILINEAR)
