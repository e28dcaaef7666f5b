"""Photo patches (`keras_vae.data.photo_patches`): disjoint train and test regions, the folder
layout the image-folder reader takes, and PNG's size in bits per dimension."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from keras_vae.data.image_folder import scan
from keras_vae.data.photo_patches import SIZE, build_photo_patches, crops, png_bits_per_dim, split_photo


def photo(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_test_crops_share_no_pixel_with_training_crops(tmp_path):
    # Each pixel's value is its column, so a crop tells which columns it came from.
    columns = np.broadcast_to(np.arange(200, dtype=np.uint8)[None, :, None], (64, 200, 3)).copy()
    counts = build_photo_patches({"ramp": columns}, str(tmp_path / "patches"), train_stride=8)
    train = scan(str(tmp_path / "patches"), "train").read()
    test = scan(str(tmp_path / "patches"), "test").read()
    assert (len(train), len(test)) == (counts["train"], counts["test"])
    assert train.shape[1:] == test.shape[1:] == (SIZE, SIZE, 3)
    boundary = 160  # 80 % of 200 columns
    assert np.rint(train * 255).max() < boundary <= np.rint(test * 255).min()
    # Training crops every 8 pixels in 64 x 160; test crops tiled without overlap in 64 x 40.
    assert counts == {"train": ((64 - SIZE) // 8 + 1) * ((160 - SIZE) // 8 + 1), "test": 2 * 1}


def test_crops_are_the_photo_pixels_on_the_grid():
    image = photo(70, 90, 0)
    found = crops(image, 16)
    assert [(top, left) for top, left, _ in found] == [(t, l) for t in (0, 16, 32) for l in (0, 16, 32, 48)]
    top, left, crop = found[5]
    np.testing.assert_array_equal(crop, image[top : top + SIZE, left : left + SIZE])


def test_png_bits_per_dim_is_the_size_of_the_files():
    images = np.stack([photo(SIZE, SIZE, seed) for seed in range(3)])
    images[1] = 7  # a flat crop compresses to almost nothing
    whole, idat = png_bits_per_dim(images)
    sizes = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=9, optimize=True)
        sizes.append(len(buffer.getvalue()))
    assert whole == pytest.approx(8 * sum(sizes) / images.size)
    assert 0 < idat < whole
    assert png_bits_per_dim(images[1:2])[0] < 1.0 < png_bits_per_dim(images[:1])[0]


def test_bad_photos_and_an_existing_folder_are_refused(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        split_photo(np.zeros((40, 40), np.uint8))
    with pytest.raises(ValueError, match="no test crop"):
        build_photo_patches({"narrow": photo(40, 60, 0)}, str(tmp_path / "narrow"))
    assert not os.path.exists(tmp_path / "narrow") and not os.path.exists(tmp_path / "narrow.partial")
    os.makedirs(tmp_path / "exists")
    with pytest.raises(FileExistsError):
        build_photo_patches({"p": photo(64, 200, 0)}, str(tmp_path / "exists"))
