"""Sample metrics: the Fréchet distance against closed forms, precision/recall/density/coverage
against a hand-counted example, and the classifier-based metrics on real images."""

import os

import numpy as np
import pytest

from keras_vae.evaluation.sample_metrics import FeatureClassifier
from keras_vae.evaluation.sample_metrics import Reference
from keras_vae.evaluation.sample_metrics import frechet_distance
from keras_vae.evaluation.sample_metrics import precision_recall
from keras_vae.evaluation.sample_metrics import sample_metrics


def test_frechet_distance_of_one_dimension_is_the_mean_and_spread_gap():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, (500, 1)), rng.normal(-0.5, 0.5, (800, 1))
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_a_scaled_and_shifted_copy():
    """b = c·a + t has Σ_b = c²Σ_a, so FD = ‖(c − 1)μ_a + t‖² + (1 − c)² tr Σ_a."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6)) + rng.normal(size=6)
    c, t = 1.7, rng.normal(size=6)
    b = c * a + t
    expected = (np.sum(((c - 1) * a.mean(axis=0) + t) ** 2)
                + (1 - c) ** 2 * np.trace(np.cov(a, rowvar=False)))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_precision_recall_density_coverage_on_a_hand_counted_example():
    # Reference 0, 1, 2, 3 (k = 1: every ball has radius 1); samples 0.5 (radius 9.5), 10 and
    # 10.5 (radius 0.5).
    reference, samples = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [10], [10.5]])
    values = precision_recall(reference, samples, nearest_k=1)
    assert values["precision"] == pytest.approx(1 / 3)  # only 0.5 lies in a reference ball
    assert values["recall"] == 1.0  # every reference point lies within 9.5 of 0.5
    assert values["density"] == pytest.approx(2 / 3)  # 0.5 lies in 2 balls (of 0 and 1): 2 / 3
    assert values["coverage"] == 0.5  # 0 and 1 have a sample within their radius, 2 and 3 not


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, digits_data):
    train, test = digits_data
    return FeatureClassifier.train_or_load(train, test, epochs=20,
                                           path=str(tmp_path_factory.mktemp("c") / "c.keras"))


@pytest.fixture(scope="module")
def digits_data():
    from keras_vae.data.datasets import load_dataset

    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_the_test_split_against_itself_is_perfect_and_noise_is_not(classifier, digits_data):
    _, test = digits_data
    assert classifier.accuracy > 0.9
    reference = Reference.of(classifier, test.images)
    same = sample_metrics(test.images, reference)
    assert same["frechet_distance"] == pytest.approx(0.0, abs=1e-3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    probabilities = classifier.probabilities(test.images)
    assert same["confident_share"] == pytest.approx(np.mean(probabilities.max(axis=1) > 0.9))
    labels = np.bincount(test.labels, minlength=10) / len(test.labels)
    np.testing.assert_allclose(same["class_shares"], labels, atol=0.05)  # an accurate classifier
    assert same["rarest_class_share"] == min(same["class_shares"])

    noise = np.random.default_rng(0).random(test.images.shape).astype(np.float32)
    other = sample_metrics(noise, reference)
    assert other["frechet_distance"] > 10 * max(same["frechet_distance"], 1.0)
    assert other["recall"] < 0.2 and other["coverage"] < 0.2
    # Density counts the reference balls around each sample (about 1 for the test set itself);
    # noise lands in a few large balls of the sparse features, well under half of that.
    assert other["density"] < 0.5 * same["density"]
    assert other["num_images"] == len(test.images)


def test_the_classifier_is_cached_and_reloaded(classifier, digits_data, tmp_path, monkeypatch):
    train, test = digits_data
    reloaded = FeatureClassifier.train_or_load(train, test, path=classifier.path)
    np.testing.assert_allclose(reloaded.features(test.images[:50]),
                               classifier.features(test.images[:50]), rtol=1e-5, atol=1e-6)
    # The default cache is named after the data: unlabelled data is refused with a message.
    monkeypatch.setenv("KERAS_VAE_CACHE", str(tmp_path))
    unlabelled = type(train)(train.images, None)
    with pytest.raises(ValueError, match="labelled dataset"):
        FeatureClassifier.train_or_load(unlabelled, test)
    assert not os.listdir(tmp_path)
