"""Tests for keras_vae.core.images: grid layout, PNG encoding and atomic writes."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from keras_vae.core import files as files_module
from keras_vae.core.images import encode_png, image_grid, save_png, to_uint8


def _batch(n, h=3, w=2, c=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, h, w, c)).astype(np.float32)


def test_grid_layout_grayscale():
    x = _batch(5, h=3, w=2)
    grid = image_grid(x, ncols=2, padding=1, pad_value=1.0)
    # 3 rows of (3 + 1) + 1, 2 columns of (2 + 1) + 1
    assert grid.shape == (13, 7) and grid.dtype == np.uint8
    expected = np.rint(x * 255).astype(np.uint8)[..., 0]
    for i in range(5):
        r, c = divmod(i, 2)
        top, left = 1 + r * 4, 1 + c * 3
        np.testing.assert_array_equal(grid[top : top + 3, left : left + 2], expected[i])
    # padding lines and the unused last cell are pad_value
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all()
    assert (grid[9:12, 4:6] == 255).all()


def test_grid_rgb_default_columns_and_no_padding():
    x = _batch(9, h=2, w=2, c=3)
    grid = image_grid(x, padding=0)
    assert grid.shape == (6, 6, 3)  # ceil(sqrt(9)) = 3 columns
    np.testing.assert_array_equal(grid[2:4, 4:6], np.rint(x[5] * 255).astype(np.uint8))


def test_grid_clips_out_of_range_values_and_caps_ncols():
    x = np.array([-3.0, 0.5, 7.0, np.nan], dtype=np.float32).reshape(4, 1, 1, 1)
    grid = image_grid(x, ncols=10, padding=0)
    np.testing.assert_array_equal(grid, [[0, 128, 255, 0]])
    assert to_uint8(np.float32(0.5)) == 128


@pytest.mark.parametrize(
    "bad, kwargs",
    [
        (np.zeros((0, 2, 2, 1)), {}),
        (np.zeros((2, 2)), {}),
        (np.zeros((1, 2, 2, 2)), {}),
        (np.zeros((1, 2, 2, 1)), {"ncols": 0}),
        (np.zeros((1, 2, 2, 1)), {"padding": -1}),
    ],
)
def test_grid_rejects_bad_input(bad, kwargs):
    with pytest.raises(ValueError):
        image_grid(bad, **kwargs)


def test_encode_png_round_trip_and_determinism():
    gray = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    rgb = np.random.default_rng(1).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    for picture, mode in ((gray, "L"), (rgb, "RGB")):
        data = encode_png(picture)
        assert data == encode_png(picture.copy())
        with Image.open(io.BytesIO(data)) as img:
            assert img.mode == mode and img.size == (picture.shape[1], picture.shape[0])
            np.testing.assert_array_equal(np.asarray(img), picture)
    # float input is read as [0, 1]
    with Image.open(io.BytesIO(encode_png(np.full((2, 2), 1.0)))) as img:
        assert np.asarray(img).tolist() == [[255, 255], [255, 255]]
    with pytest.raises(ValueError):
        encode_png(np.zeros((2, 2, 2), dtype=np.uint8))


def test_save_png_writes_grid_or_picture(tmp_path):
    x = _batch(4, h=3, w=3)
    out = save_png(x, tmp_path / "grid.png", ncols=4)
    with Image.open(out) as img:
        np.testing.assert_array_equal(np.asarray(img), image_grid(x, ncols=4))
    save_png(image_grid(x), tmp_path / "pic.png")
    assert (tmp_path / "pic.png").read_bytes() == encode_png(image_grid(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "pic.png"]


def test_save_png_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous contents")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_png(_batch(2), target)
    assert target.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == ["out.png"]  # no temporary file left behind


def test_save_png_encoding_error_creates_nothing(tmp_path):
    with pytest.raises(ValueError):
        save_png(np.zeros((2, 2, 5)), tmp_path / "bad.png")
    assert os.listdir(tmp_path) == []


def test_scale_enlarges_the_grid_by_nearest_neighbour():
    images = np.random.default_rng(0).random((3, 4, 5, 1)).astype(np.float32)
    grid = image_grid(images, ncols=2)
    np.testing.assert_array_equal(image_grid(images, ncols=2, scale=3),
                                  np.repeat(np.repeat(grid, 3, axis=0), 3, axis=1))
    with pytest.raises(ValueError, match="scale must be >= 1"):
        image_grid(images, scale=0)
