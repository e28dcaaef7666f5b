"""Image grids and PNG encoding (NumPy + Pillow only).

This module is a stable, dependency-light API shared by the serving code and
by the ``keras_vae`` library for its own pictures:

* ``image_grid`` tiles a batch of float images into one uint8 picture,
* ``encode_png`` turns a uint8 picture into PNG bytes,
* ``save_png`` writes a picture or a batch of images to a PNG file
  atomically.

PNG encoding is deterministic: the same array always gives the same bytes.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from keras_vae.core.files import write_bytes_atomic

__all__ = ["image_grid", "encode_png", "save_png", "to_uint8"]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map float pixel values in [0, 1] to uint8 in [0, 255].

    Values are clipped to [0, 1] first (real-valued Gaussian means can fall
    outside), NaN becomes 0, and the result is rounded to the nearest level.
    The shape is unchanged.
    """
    x = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=0.0)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(
    images: np.ndarray,
    ncols: int | None = None,
    padding: int = 1,
    pad_value: float = 0.0,
    scale: int = 1,
) -> np.ndarray:
    """Tile a batch of images into one picture.

    Args:
        images: float array ``[N, H, W, C]`` with values in [0, 1] (clipped),
            C = 1 (grayscale) or 3 (RGB). ``[N, H, W]`` is read as grayscale.
        ncols: tiles per row; default ``ceil(sqrt(N))``, capped at N.
        padding: pixels of ``pad_value`` between tiles and around the border.
        pad_value: brightness of the padding, in [0, 1].
        scale: enlarge the finished grid this many times (nearest neighbour),
            so that small images such as 8×8 digits are easy to see.

    Returns:
        uint8 array of shape ``[rows*(H+p)+p, ncols*(W+p)+p]`` for grayscale
        or ``[..., ..., 3]`` for RGB, where ``rows = ceil(N / ncols)`` and
        ``p = padding``, each side then multiplied by ``scale``. Unused cells
        of the last row are ``pad_value``.

    Raises:
        ValueError: on an empty batch, a wrong rank, an unsupported channel
            count, or a non-positive ``ncols`` / negative ``padding``.
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise ValueError(f"images must have shape [N, H, W, C]; got shape {x.shape}")
    n, h, w, c = x.shape
    if n == 0:
        raise ValueError("images is empty; need at least one image")
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels; got {c}")
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1; got {ncols}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0; got {padding}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1; got {scale}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)

    fill = to_uint8(np.float32(pad_value))
    grid = np.full(
        (nrows * (h + padding) + padding, ncols * (w + padding) + padding, c),
        fill,
        dtype=np.uint8,
    )
    tiles = to_uint8(x)
    for i in range(n):
        row, col = divmod(i, ncols)
        top = padding + row * (h + padding)
        left = padding + col * (w + padding)
        grid[top : top + h, left : left + w] = tiles[i]
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    return grid[..., 0] if c == 1 else grid


def encode_png(array: np.ndarray) -> bytes:
    """Encode one picture as PNG bytes.

    Args:
        array: ``[H, W]`` (grayscale), ``[H, W, 1]`` or ``[H, W, 3]`` (RGB).
            uint8 is written as is; any other dtype is read as floats in
            [0, 1] and converted with ``to_uint8``.

    Returns:
        The PNG file contents (mode "L" for grayscale, "RGB" for colour).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise ValueError(f"expected an image of shape [H, W] or [H, W, 3]; got {a.shape}")
    if a.size == 0:
        raise ValueError(f"cannot encode an empty image of shape {a.shape}")
    if a.dtype != np.uint8:
        a = to_uint8(a)
    buf = io.BytesIO()
    # uint8 [H, W] becomes mode "L", uint8 [H, W, 3] mode "RGB".
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(
    array_or_images: np.ndarray,
    path: str | os.PathLike,
    ncols: int | None = None,
    padding: int = 1,
) -> Path:
    """Write a picture, or a grid of a batch of images, to a PNG file.

    A 4-D float array ``[N, H, W, C]`` is tiled with ``image_grid``
    (``ncols`` and ``padding`` apply); a 2-D or 3-D array is one picture as
    accepted by ``encode_png``. The file is encoded in memory first and
    then written atomically, so an error never leaves a half-written file.

    Returns:
        The path written.
    """
    a = np.asarray(array_or_images)
    if a.ndim == 4:
        a = image_grid(a, ncols=ncols, padding=padding)
    return write_bytes_atomic(path, encode_png(a))
