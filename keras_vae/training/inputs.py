"""The images a training run reads: train and validation splits, in memory or streamed."""

import numpy as np
from keras_vae.models import conditioning
from keras_vae.data.datasets import binarize
from keras_vae.data.datasets import image_folder_split
from keras_vae.data.datasets import is_image_folder
from keras_vae.data.datasets import load_dataset


def load_training_data(config, drop_last=False, with_labels=False, process_index=0,
                       num_processes=1):
    """Train and validation images for a config: (x_train, x_val).

    With `with_labels` (a class-conditional run): ((x_train, y_train), (x_val, y_val),
    class_names), the labels int32 (N,), split with their images; in memory only.

    Each is float32 (N, H, W, C) in memory, or, for an image folder whose decoded
    images exceed `config.memory_budget_mb`, a `keras_vae.data.batches.ImageFolderBatches`
    streaming batches of `config.batch_size` from disk (shuffled each epoch; with
    `drop_last`, without the last partial batch). The validation images are a seeded
    `val_fraction` of the training split; with val_fraction 0, x_val is None and
    training uses the whole split.

    In-memory data is loaded whole by every process (it fits in memory), and
    `keras_vae.training.shards.ProcessBatches` feeds each process its rows of each batch;
    a streamed folder reads only `process_index`'s files of each batch of `num_processes`.
    """
    if not 0.0 <= config.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    class_names = ()
    if is_image_folder(config.dataset):
        files = image_folder_split(config.dataset, "train", config.image_size or None,
                                   config.color_mode)
        class_names = files.class_names
        if files.decoded_bytes > config.memory_budget_mb * 1e6:
            if with_labels:
                raise ValueError("--conditional holds the images in memory; this folder is larger "
                                 "than --memory-budget-mb: raise it, or use fewer images")
            return stream_image_folder(config, files, drop_last, process_index, num_processes)
    data = load_dataset(config.dataset, "train", config.data_dir, config.download,
                        **config.image_kwargs())
    images = data.images
    if with_labels:
        labels, class_names = conditioning.training_labels(config.dataset, data.labels, class_names)
    if config.binarize:
        images = binarize(images, seed=config.seed)
    if config.val_fraction == 0.0:
        return ((images, labels), None, class_names) if with_labels else (images, None)
    order = np.random.default_rng(config.seed).permutation(len(images))
    num_val = max(1, int(round(config.val_fraction * len(images))))
    x_train, x_val = images[order[num_val:]], images[order[:num_val]]
    if config.dynamic_binarization:
        # Training sees fresh Bernoulli draws; validate on one fixed draw, as the test set is.
        x_val = binarize(x_val, seed=config.seed)
    if with_labels:
        return (x_train, labels[order[num_val:]]), (x_val, labels[order[:num_val]]), class_names
    return x_train, x_val


def stream_image_folder(config, files, drop_last=False, process_index=0, num_processes=1):
    """(x_train, x_val) as `ImageFolderBatches` over an image folder's training files.

    The validation files are a seeded `val_fraction` of them, as for in-memory data.
    """
    from keras_vae.data.batches import ImageFolderBatches

    if config.binarize:
        raise ValueError("--binarize draws the binary images once, in memory; a folder larger "
                         "than --memory-budget-mb streams, so use --dynamic-binarization")
    print(f"{config.dataset}: {len(files)} training images of {files.image_shape} take "
          f"{files.decoded_bytes / 1e6:.0f} MB decoded, more than --memory-budget-mb "
          f"{config.memory_budget_mb:g}: streaming them from disk, batch by batch")
    order = np.random.default_rng(config.seed).permutation(len(files))
    num_val = 0 if config.val_fraction == 0.0 else max(1, int(round(config.val_fraction * len(files))))
    shard = dict(process_index=process_index, num_processes=num_processes)
    x_train = ImageFolderBatches(files.subset(np.sort(order[num_val:])), config.batch_size,
                                 shuffle=True, seed=config.seed, drop_last=drop_last, **shard)
    if not num_val:
        return x_train, None
    x_val = ImageFolderBatches(files.subset(np.sort(order[:num_val])), config.batch_size,
                               drop_last=drop_last, **shard,
                               binarize_seed=config.seed if config.dynamic_binarization else None)
    return x_train, x_val
