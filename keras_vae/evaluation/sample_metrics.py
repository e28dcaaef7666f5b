"""Samples judged by number: the Fréchet distance, precision, recall, density and coverage of
a set of images against a reference set (the test split), in the feature space of a small
classifier trained on the dataset's labels, plus how confidently it classifies them and how
evenly they cover the classes.

- **Fréchet distance** (FD; the FID of Heusel et al. 2017, with this project's classifier in
  place of Inception): the distance between Gaussians fitted to the two sets of features,
  ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½). Lower is better; it depends on the feature
  extractor, so numbers compare only between rows measured with the same classifier.
- **Precision, recall, density, coverage** (Kynkäänniemi et al. 2019; Naeem et al. 2020): the
  share of samples inside the k-nearest-neighbour balls of the reference features (fidelity),
  the share of reference images inside the samples' balls (diversity), and their counted and
  covering variants, computed by the `prdc` package.
- **Confident share**: samples that the classifier gives one class with probability above a
  threshold (0.9); **class shares**: how often each class is predicted (a model that covers ten
  classes evenly gives each about 10 %).

`FeatureClassifier.train_or_load` trains the classifier once and caches it (no downloads):
by default in `$KERAS_VAE_CACHE` or `~/.cache/keras_vae`, under a name that depends on the
training images and labels, so another dataset gets its own.
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import warnings

import numpy as np

import keras

#: The layer whose activations are the features (128 units, before the class layer).
FEATURE_LAYER = "features"
#: Bumped whenever the classifier's architecture or training changes, so caches are rebuilt.
CLASSIFIER_VERSION = 1
DEFAULT_NEAREST_K = 5
DEFAULT_CONFIDENCE = 0.9


def cache_dir():
    """Where trained classifiers are kept: $KERAS_VAE_CACHE, or ~/.cache/keras_vae."""
    return os.environ.get("KERAS_VAE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_vae")


@dataclasses.dataclass
class FeatureClassifier:
    """A small CNN classifier of the dataset's images; its penultimate layer gives the features.

    `model` maps (N, H, W, C) images in [0, 1] to class probabilities; `feature_model` to the
    (N, 128) features. `accuracy` is its accuracy on the test split it was checked with.
    """

    model: keras.Model
    accuracy: float
    path: str

    def __post_init__(self):
        self.feature_model = keras.Model(self.model.inputs,
                                         self.model.get_layer(FEATURE_LAYER).output)

    def probabilities(self, images, batch_size=1000):
        """(N, classes) class probabilities."""
        return np.asarray(self.model.predict(np.asarray(images, np.float32),
                                             batch_size=batch_size, verbose=0))

    def features(self, images, batch_size=1000):
        """(N, 128) float32 features."""
        return np.asarray(self.feature_model.predict(np.asarray(images, np.float32),
                                                     batch_size=batch_size, verbose=0), np.float32)

    @classmethod
    def train_or_load(cls, train, test, path=None, epochs=3, seed=0, verbose=0):
        """The classifier of `train` (an `ImageData` with labels), loaded from `path` (default:
        a file in `cache_dir()` named after the data, epochs and seed) or trained there
        (`epochs` of Adam); its accuracy is measured on `test`.
        """
        if train.labels is None or test.labels is None:
            raise ValueError("sample metrics need a labelled dataset: the classifier whose "
                             "features they use is trained on the labels")
        name = f"classifier-{data_digest(train, epochs, seed)}.keras"
        path = path or os.path.join(cache_dir(), name)
        if os.path.exists(path):
            model = keras.models.load_model(path)
        else:
            model = build_classifier(train.images.shape[1:], int(train.labels.max()) + 1, seed)
            model.fit(train.images, train.labels, epochs=epochs, batch_size=128, verbose=verbose)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            from keras_vae.core.files import atomic_path

            with atomic_path(path) as temp_path:
                model.save(temp_path)
        predicted = np.argmax(model.predict(test.images, batch_size=1000, verbose=0), axis=1)
        return cls(model, float(np.mean(predicted == test.labels)), path)


def build_classifier(image_shape, num_classes, seed=0):
    """Conv 32 → pool → conv 64 → pool → dense 128 (`features`) → dropout → softmax (3×3
    convolutions with "same" padding, so images from 8×8 up fit)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(tuple(image_shape)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu", name=FEATURE_LAYER),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def data_digest(data, epochs, seed):
    """A short name for a classifier: its training data (images and labels), epochs, seed and
    version."""
    digest = hashlib.sha256(f"v{CLASSIFIER_VERSION} {data.images.shape} {epochs} {seed}".encode())
    digest.update(np.ascontiguousarray(data.images[:: max(1, len(data.images) // 1000)]).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


def frechet_distance(features_a, features_b):
    """The Fréchet distance between Gaussians fitted to two (N, F) feature sets:
    ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), with unbiased covariances."""
    from scipy import linalg

    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # features with dead units have singular covariances
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.all(np.isfinite(root)):  # nudge the diagonals, as FID's reference code does
            offset = np.eye(len(cov_a)) * 1e-6
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                 - 2.0 * np.trace(root))


def precision_recall(reference_features, sample_features, nearest_k=DEFAULT_NEAREST_K):
    """{precision, recall, density, coverage} of the samples against the reference (`prdc`)."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        values = compute_prdc(np.asarray(reference_features, np.float32),
                              np.asarray(sample_features, np.float32), nearest_k=nearest_k)
    return {name: float(value) for name, value in values.items()}


@dataclasses.dataclass
class Reference:
    """The reference set's features (e.g. the test split's), computed once for every model."""

    classifier: FeatureClassifier
    features: np.ndarray

    @classmethod
    def of(cls, classifier, images):
        return cls(classifier, classifier.features(images))


def sample_metrics(images, reference, nearest_k=DEFAULT_NEAREST_K,
                   confidence=DEFAULT_CONFIDENCE):
    """The metrics of (N, H, W, C) `images` in [0, 1] (samples' pixel means) against a
    `Reference`: a dict with `frechet_distance`, `precision`, `recall`, `density`, `coverage`,
    `confident_share` (probability of the top class above `confidence`), `class_shares`
    (list, one share per class), `rarest_class_share`, `commonest_class_share`, `num_images`.
    """
    images = np.asarray(images, np.float32)
    classifier = reference.classifier
    probabilities = classifier.probabilities(images)
    features = classifier.features(images)
    shares = np.bincount(probabilities.argmax(axis=1),
                         minlength=probabilities.shape[1]) / len(images)
    return {
        "frechet_distance": frechet_distance(reference.features, features),
        **precision_recall(reference.features, features, nearest_k),
        "confident_share": float(np.mean(probabilities.max(axis=1) > confidence)),
        "class_shares": [float(share) for share in shares],
        "rarest_class_share": float(shares.min()),
        "commonest_class_share": float(shares.max()),
        "num_images": int(len(images)),
    }
