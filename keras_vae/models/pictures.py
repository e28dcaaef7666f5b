"""Pictures a person would rather look at than read: grids, latent space, interpolation.

Every function writes one PNG, atomically.
"""

import numpy as np

from keras_vae.core.files import atomic_path
from keras_vae.core.images import image_grid
from keras_vae.core.images import save_png


# Small images (8×8 digits) are enlarged so that a tile is at least this many pixels.
MIN_TILE_PIXELS = 32


def save_grid(images, path, ncols=None):
    """Tiles float images (N, H, W, C) in [0, 1] into one PNG, enlarging small ones."""
    scale = max(1, -(-MIN_TILE_PIXELS // images.shape[1]))
    save_png(image_grid(images, ncols=ncols, scale=scale), path)


def save_samples(vae, path, n=64, seed=0):
    """A grid of n images decoded from z ~ N(0, I); for a class-conditional model, one row
    per class (`save_class_grid`)."""
    if getattr(vae, "conditional", False):
        return save_class_grid(vae, path, seed=seed)
    save_grid(vae.sample(n, seed=seed), path)


def save_class_grid(vae, path, per_class=10, seed=0, temperature=1.0):
    """A class-conditional model's samples, one row per class, the same z in each column:
    row y holds the means of p(x|z_j, y), j = 1..per_class."""
    from keras_vae.models.conditioning import class_grid_inputs

    z, labels = class_grid_inputs(vae, per_class, seed, temperature)
    save_grid(vae.decode(z, labels=labels), path, ncols=per_class)


def save_reconstructions(vae, images, path, n=32, labels=None):
    """Originals (odd rows) above their reconstructions (even rows), 8 per row."""
    images = images[:n]
    reconstructions = vae.reconstruct(images, labels=None if labels is None else labels[:n])
    rows = []
    for start in range(0, len(images), 8):
        rows += [images[start : start + 8], reconstructions[start : start + 8]]
    save_grid(np.concatenate(rows), path, ncols=8)


def save_interpolation(vae, start_image, end_image, path, steps=10, labels=None):
    """Decodes z_mean linearly interpolated between two images' posteriors, one row.

    A class-conditional model takes the two images' `labels`; the row decodes with the
    first image's label, so it shows the change of style within that class.
    """
    pair = None if labels is None else np.asarray(labels)[:2]
    z_mean, _ = vae.encode(np.stack([start_image, end_image]), labels=pair)
    weights = np.linspace(0.0, 1.0, steps)[:, None]
    z = (1.0 - weights) * z_mean[0] + weights * z_mean[1]
    row_labels = None if pair is None else np.full(steps, pair[0])
    row = np.concatenate([start_image[None], vae.decode(z, labels=row_labels), end_image[None]])
    save_grid(row, path, ncols=len(row))


def save_latent_space(vae, images, labels, path):
    """Scatter of the posterior means, coloured by label (first two dims, or PCA when D > 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A class-conditional model's posterior q(z|x, y) is given each image's label.
    z_mean, _ = vae.encode(images, labels=labels if getattr(vae, "conditional", False) else None)
    if z_mean.shape[1] > 2:
        centered = z_mean - z_mean.mean(axis=0)
        _, _, components = np.linalg.svd(centered, full_matrices=False)
        points, axis_names = centered @ components[:2].T, ("PC 1", "PC 2")
    else:
        points = np.pad(z_mean, ((0, 0), (0, 2 - z_mean.shape[1])))
        axis_names = ("z 1", "z 2")
    figure, axes = plt.subplots(figsize=(6, 5), dpi=120)
    colours = labels if labels is not None else "tab:blue"
    scatter = axes.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=4, alpha=0.7)
    if labels is not None:
        figure.colorbar(scatter, ax=axes, label="label")
    axes.set_xlabel(axis_names[0])
    axes.set_ylabel(axis_names[1])
    axes.set_title(f"Posterior means of {len(images)} test images")
    figure.tight_layout()
    with atomic_path(path) as temp_path:
        figure.savefig(temp_path, format="png")
    plt.close(figure)
