"""Datasets: the built-in digits, .npz files and TFDS directories."""

import os

import numpy as np
import pytest

from keras_vae.data.datasets import binarize
from keras_vae.data.datasets import load_dataset
from keras_vae.evaluation.evaluate import spread_subset


def test_digits_split_is_fixed_stratified_and_scaled():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1437, 8, 8, 1) and test.images.shape == (360, 8, 8, 1)
    assert train.images.dtype == np.float32 and train.images.min() == 0.0 and train.images.max() == 1.0
    # The split partitions scikit-learn's 1,797 digits, 20 % of each class in the test part.
    from sklearn.datasets import load_digits

    original = load_digits()
    class_counts = np.bincount(original.target)
    np.testing.assert_array_equal(np.bincount(train.labels) + np.bincount(test.labels), class_counts)
    assert np.all(np.abs(np.bincount(test.labels) - 0.2 * class_counts) <= 1)
    together = np.concatenate([train.images, test.images]).reshape(1797, 64) * 16
    assert sorted(map(bytes, together.astype(np.uint8))) == sorted(
        map(bytes, original.data.astype(np.uint8)))
    np.testing.assert_array_equal(train.images, load_dataset("digits", "train").images)
    # Levels 0..16 of the original data, divided by 16.
    np.testing.assert_allclose(np.unique(train.images * 16), np.arange(17))


def test_npz_with_uint8_images_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(10, 6, 6), dtype=np.uint8)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x_train, x_test=x_train[:3], y_train=np.arange(10), y_test=np.arange(3))
    data = load_dataset(str(path), "train")
    assert data.images.shape == (10, 6, 6, 1)
    np.testing.assert_allclose(data.images[..., 0], x_train / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.labels, np.arange(10))
    assert load_dataset(str(path), "test").images.shape == (3, 6, 6, 1)


def test_npz_with_float_images_and_no_labels(tmp_path):
    x = np.random.default_rng(0).random((4, 5, 5, 3)).astype("float32")
    np.savez(tmp_path / "f.npz", x_train=x, x_test=x)
    data = load_dataset(str(tmp_path / "f.npz"), "test")
    np.testing.assert_array_equal(data.images, x)
    assert data.labels is None


def test_npz_errors_say_what_is_wrong(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"no 'x_train' array \(it has \['images'\]\)"):
        load_dataset(str(tmp_path / "bad.npz"), "train")
    np.savez(tmp_path / "range.npz", x_train=np.full((2, 4, 4), 3.0), x_test=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\], got \[3, 3\]"):
        load_dataset(str(tmp_path / "range.npz"), "train")
    with pytest.raises(FileNotFoundError, match="No such .npz file"):
        load_dataset(str(tmp_path / "missing.npz"), "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("digits", "validation")


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match=r"Unknown dataset 'not_a_dataset'.*'digits'.*\.npz.*mnist"):
        load_dataset("not_a_dataset", "train")


def test_tfds_dataset_that_is_not_prepared_says_how_to_prepare_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build fashion_mnist"):
        load_dataset("fashion_mnist", "train", data_dir=str(tmp_path))


def test_static_binarization_is_seeded_and_unbiased():
    images = np.full((200, 8, 8, 1), 0.3, "float32")
    first, second = binarize(images, seed=1), binarize(images, seed=1)
    np.testing.assert_array_equal(first, second)
    assert set(np.unique(first)) == {0.0, 1.0}
    assert abs(first.mean() - 0.3) < 0.01


def test_mnist_npz_has_the_official_split(shared_data_dir):
    train = load_dataset(os.path.join(shared_data_dir, "mnist.npz"), "train")
    test = load_dataset(os.path.join(shared_data_dir, "mnist.npz"), "test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert 0.0 == train.images.min() and train.images.max() == 1.0
    assert set(np.unique(test.labels)) == set(range(10))


def test_mnist_from_a_prepared_tfds_directory_matches_the_npz(shared_data_dir):
    tfds_test = load_dataset("mnist", "test", data_dir=os.path.join(shared_data_dir, "tfds"))
    npz_test = load_dataset(os.path.join(shared_data_dir, "mnist.npz"), "test")
    assert tfds_test.images.shape == (10000, 28, 28, 1)
    # Same images, possibly in another order: compare order-free statistics.
    np.testing.assert_allclose(np.sort(tfds_test.images.sum(axis=(1, 2, 3))),
                               np.sort(npz_test.images.sum(axis=(1, 2, 3))), rtol=1e-5)
    np.testing.assert_array_equal(np.bincount(tfds_test.labels), np.bincount(npz_test.labels))


def test_a_test_subset_is_spread_evenly_through_the_split():
    images = np.arange(10_000)
    subset = spread_subset(images, 1000)
    assert len(subset) == 1000 and len(set(subset)) == 1000
    assert subset[0] == 0 and subset[-1] == 9_999
    assert set(np.diff(subset)) <= {10, 11}  # both halves of an ordered split equally
    assert np.sum(subset >= 5_000) == 500
    assert spread_subset(images, None) is images and spread_subset(images, 20_000) is images
