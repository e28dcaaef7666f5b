"""Class-conditional VAEs: the checks and conversions of class labels on the Keras side.

A `keras_vae.VAE(num_classes=C)` models log p(x|y) for labels y in 0..C-1:

* the encoder is q(z|x, y) and the decoder p(x|z, y); each sees y as a one-hot
  vector (`keras_vae.models.networks.with_one_hot`), appended to the flattened image
  features (encoder) or to z (decoder), for MLP and conv networks alike;
* the prior stays p(z), N(0, I) or the learned mixture, shared by every class. z then
  carries what the label does not, a digit's style (slant, width, stroke): the same z
  decoded with another label gives the same style in the other class, which is what the
  one-row-per-class pictures and the explorer's class picker show. A per-class prior
  p(z|y) would let z carry the class too, and make the importance-sampled log p(x|y)
  and every sampler depend on the label twice;
* log p(x|y) ≈ log (1/K) Σ_k p(x|z_k, y) p(z_k) / q(z_k|x, y), the estimator of
  `keras_vae.core.likelihood` with the labels passed through.

The label checks that serving shares (names, ranges, the error messages) are
`keras_vae.core.contract.check_labels`.
"""

import numpy as np

from keras import ops

from keras_vae.core import contract


def check_classes(num_classes, class_names):
    """(num_classes, class_names) checked: (None, None), or (C, tuple of C strings).

    Raises ValueError for C < 2, or names that are not C distinct strings.
    """
    if num_classes is None:
        if class_names is not None:
            raise ValueError("class_names is an option of a conditional model: pass num_classes too")
        return None, None
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (or None), got {num_classes!r}")
    num_classes = int(num_classes)
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    class_names = tuple(str(name) for name in class_names)
    if len(class_names) != num_classes or len(set(class_names)) != num_classes:
        raise ValueError(f"class_names must be {num_classes} distinct names, got {list(class_names)}")
    return num_classes, class_names


def split_inputs(vae, inputs):
    """`VAE.call`'s input as (x, labels): labels is None for an unconditional model."""
    if not vae.conditional:
        return inputs, None
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise ValueError("a conditional VAE is called on [images, labels]")
    return inputs[0], ops.cast(ops.reshape(inputs[1], (-1,)), "int32")


def check_batch_labels(vae, labels):
    """The labels of a training batch as int32 (B,), or None for an unconditional model."""
    if not vae.conditional:
        return None
    if labels is None:
        raise ValueError(
            f"this VAE is conditional ({vae.num_classes} classes): train it with fit(x, y), "
            "y the integer labels")
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def check_fit_labels(vae, labels, n, where="y"):
    """`fit`'s y: for a conditional model, (n,) int32 labels in 0..C-1 (ValueError otherwise).

    An unconditional model ignores y, as before.
    """
    if not vae.conditional:
        return labels
    if labels is None:
        raise ValueError(
            f"this VAE is conditional ({vae.num_classes} classes): {where} needs the labels, "
            "as fit(x, y) or validation_data=(x, y)")
    return labels_for(vae, np.asarray(labels), n)


def labels_for(vae, labels, n):
    """Labels for n images: int32 (n,) for a conditional model, None for an unconditional one.

    `labels` is one class for all n (an int or a class name) or n of them; see
    `keras_vae.core.contract.check_labels`. Raises ValueError naming the classes.
    """
    if not vae.conditional:
        if labels is not None:
            raise ValueError("this VAE is unconditional: it takes no labels")
        return None
    if labels is None:
        raise ValueError(
            f"this VAE is conditional: pass labels, one of the classes "
            f"{contract.describe_classes(vae.class_names)}, or one per image")
    return contract.check_labels(labels, n, vae.class_names).astype("int32")


def class_grid_inputs(vae, per_class, seed=0, temperature=1.0):
    """z and labels for one row per class, the same z in every row: ((C·per_class, D), (C·per_class,))."""
    z = vae.sample_latents(per_class, seed=seed, temperature=temperature)
    labels = np.repeat(np.arange(vae.num_classes), per_class)
    return np.tile(z, (vae.num_classes, 1)), labels


def training_labels(dataset, labels, class_names=()):
    """The labels of a training split, checked, and the class names: (int32 (N,), names).

    `class_names` are an image folder's (its class subfolders); other datasets' classes
    are named by their index, "0" .. str(C − 1), C = the largest label + 1. Raises
    ValueError with a clear message for a dataset without labels, or labels that are not
    non-negative integers.
    """
    if labels is None:
        raise ValueError(
            f"--conditional trains on the dataset's labels, and {dataset!r} has none: use a "
            ".npz with y_train and y_test, an image folder with class subfolders, 'digits', "
            "or a labelled TFDS dataset")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError(f"{dataset!r}: --conditional needs one non-negative integer label per "
                         f"image, got labels of shape {labels.shape} and dtype {labels.dtype}")
    names = tuple(class_names) or tuple(str(c) for c in range(max(2, int(labels.max()) + 1)))
    if labels.size and labels.max() >= len(names):
        raise ValueError(f"{dataset!r}: label {int(labels.max())} has no class name ({len(names)} classes)")
    return labels.astype("int32"), names


def class_fidelity(sample, classify, num_classes, per_class=1000, seed=0, temperature=1.0):
    """How often a class-conditional model's samples are recognised as the class asked for.

    Args:
        sample: (n, label, seed, temperature) -> n pixel-mean images of class `label`,
            e.g. `lambda n, y, s, t: sampler.sample(n, s, t, labels=y)` for an exported decoder.
        classify: images (n, H, W, C) -> predicted classes (n,).
        num_classes: C; per_class: samples per class; seed: class y draws with seed + y.

    Returns:
        {"per_class": [fraction of class y's samples classified as y, for y = 0..C-1],
         "overall": the mean over all C · per_class samples, "confusion": C × C counts
         (row: class asked for, column: class predicted)}.
    """
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for label in range(num_classes):
        predicted = np.asarray(classify(sample(per_class, label, seed + label, temperature)))
        confusion[label] += np.bincount(predicted.astype(np.int64), minlength=num_classes)[:num_classes]
    per_class = np.diag(confusion) / confusion.sum(axis=1)
    return {"per_class": per_class.tolist(), "overall": float(np.trace(confusion) / confusion.sum()),
            "confusion": confusion.tolist()}
