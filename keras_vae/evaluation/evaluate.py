"""Measuring a trained VAE on a test split: ELBO, importance-sampled NLL, pictures."""

import math
import os
import time
import numpy as np

import keras

from keras_vae.data.datasets import binarize
from keras_vae.data.datasets import ImageData
from keras_vae.data.datasets import image_folder_split
from keras_vae.data.datasets import is_image_folder
from keras_vae.data.datasets import load_dataset
from keras_vae.models.pictures import save_interpolation
from keras_vae.models.pictures import save_latent_space
from keras_vae.models.pictures import save_reconstructions
from keras_vae.models.pictures import save_samples
from keras_vae.core.files import write_json
from keras_vae.core.likelihood import is_likelihood
from keras_vae.training.run_directory import load_vae
from keras_vae.training.run_directory import read_run_config
from keras_vae.training.run_directory import resolve_model_path


def test_images(vae, dataset, data_dir=None, seed=0, binarized=False, max_images=None):
    """The test split as the model was trained to see it.

    A model trained on binary images, drawn afresh each step (dynamic
    binarization) or once (`binarized=True`, a `--binarize` run), is measured
    on a binarized test set, drawn once with `seed`, as is standard for
    binarized MNIST. An image folder is read at the model's (H, W) and channel
    count (centre-cropped and resized as in training, `keras_vae.data.image_folder`);
    with `max_images`, only that many of its files, evenly spaced, are decoded.
    Returns (images, labels, binarized).
    """
    if is_image_folder(dataset):
        height, width, channels = vae.image_shape
        files = image_folder_split(dataset, "test", (height, width),
                                   "grayscale" if channels == 1 else "rgb")
        if max_images is not None and max_images < len(files):
            files = files.subset(np.linspace(0, len(files) - 1, max_images).round().astype(int))
        data = ImageData(files.read(), files.labels)
    else:
        data = load_dataset(dataset, "test", data_dir)
    if vae.dynamic_binarization or binarized:
        return binarize(data.images, seed=seed), data.labels, True
    return data.images, data.labels, False


def spread_subset(images, count=None):
    """`count` images evenly spaced through `images` (all of them when count is None).

    Spreading the subset out keeps it representative where a dataset is ordered:
    MNIST's test split puts its easier half first, so a trained model scores its first
    1,000 images about 0.8 nats better than the whole set.
    """
    if count is None or count >= len(images):
        return images
    return images[np.linspace(0, len(images) - 1, count).round().astype(int)]


def measure(vae, images, num_samples=1000, batch_size=100, seed=0, verbose=True, labels=None):
    """ELBO and NLL on `images`, in nats per example (and NLL in bits per dimension).

    A class-conditional model needs the images' `labels`: its ELBO and NLL are those of
    log p(x|y), and the metrics say so ("likelihood": "p(x|y)").

    The ELBO is −(reconstruction_loss + kl_loss) from `vae.evaluate` with the
    model's own K; the NLL is −mean log p(x) from `vae.log_likelihood` with
    `num_samples` importance samples. NLL ≤ −ELBO up to sampling noise.

    For grey images under a Bernoulli decoder (`keras_vae.core.likelihood.is_likelihood`
    is False) the same estimate is reported as "cross_entropy", without bits per
    dimension.
    """
    started = time.perf_counter()
    labels = conditional_labels(vae, labels)
    losses = vae.evaluate(images, labels, batch_size=batch_size, return_dict=True, verbose=0)
    elbo = -(losses["reconstruction_loss"] + losses["kl_loss"])
    log_px = vae.log_likelihood(images, labels, num_samples=num_samples, batch_size=batch_size,
                                seed=seed, verbose=verbose)
    nll = float(-np.mean(log_px))
    name = "nll" if is_likelihood(vae.likelihood, images) else "cross_entropy"
    metrics = {
        "elbo": float(elbo),
        "reconstruction_loss": float(losses["reconstruction_loss"]),
        "kl_loss": float(losses["kl_loss"]),
        name: nll,
        f"{name}_standard_error": float(np.std(log_px) / math.sqrt(len(log_px))),
        "num_samples": int(num_samples),
        "num_images": int(len(images)),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if name == "nll":
        metrics["bits_per_dim"] = nll / (int(np.prod(vae.image_shape)) * math.log(2.0))
    if vae.conditional:
        metrics.update(likelihood="p(x|y)", class_names=list(vae.class_names))
    return metrics


def conditional_labels(vae, labels):
    """The labels a class-conditional model is measured with (None for an unconditional one);
    ValueError when a conditional model's test split has none."""
    if not vae.conditional:
        return None
    if labels is None:
        raise ValueError("this model is class-conditional: its test split needs labels, "
                         "and this dataset has none")
    return labels


def evaluate_run(model_path, out_dir=None, dataset=None, data_dir=None, num_samples=1000,
                 batch_size=100, seed=0, verbose=True, max_images=None):
    """Measures a saved model on its test split; writes metrics.json and pictures to out_dir.

    `dataset`/`data_dir` default to those in the run's config.json; `max_images`
    measures only that many test images, evenly spaced through the split (a quicker,
    noisier estimate).
    Returns the metrics dict.
    """
    model_file, run_dir = resolve_model_path(model_path)
    out_dir = out_dir or run_dir or os.path.dirname(os.path.abspath(model_file))
    os.makedirs(out_dir, exist_ok=True)
    config = read_run_config(run_dir)
    dataset = dataset or config.get("dataset", "digits")
    data_dir = data_dir if data_dir is not None else config.get("data_dir")

    vae = load_vae(model_file)
    images, labels, binarized = test_images(vae, dataset, data_dir, seed=seed,
                                            binarized=config.get("binarize", False),
                                            max_images=max_images)
    labels = conditional_labels(vae, labels) if vae.conditional else labels
    metrics = measure(vae, spread_subset(images, max_images), num_samples, batch_size,
                      seed=seed, verbose=verbose,
                      labels=None if not vae.conditional else spread_subset(labels, max_images))
    metrics.update(model=os.path.abspath(model_file), dataset=dataset, test_binarized=binarized,
                   backend=keras.backend.backend())
    write_json(metrics, os.path.join(out_dir, "metrics.json"))

    given = labels if vae.conditional else None
    save_reconstructions(vae, images, os.path.join(out_dir, "test_reconstructions.png"), labels=given)
    save_samples(vae, os.path.join(out_dir, "test_samples.png"), seed=seed)
    save_latent_space(vae, images[:5000], None if labels is None else labels[:5000],
                      os.path.join(out_dir, "latent_space.png"))
    end = _index_of_other_label(labels)
    save_interpolation(vae, images[0], images[end], os.path.join(out_dir, "interpolation.png"),
                       labels=None if given is None else given[[0, end]])
    return metrics


def _index_of_other_label(labels):
    """Index of the first image whose label differs from image 0's (1 without labels)."""
    if labels is None:
        return 1
    different = np.flatnonzero(labels != labels[0])
    return int(different[0]) if len(different) else 1
