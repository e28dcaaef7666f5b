"""An image folder streamed from disk as Keras batches: `ImageFolderBatches`.

The folder's files are found, checked and decoded by `keras_vae.data.image_folder`, which
needs only NumPy and Pillow (so that `keras-vae score` reads image folders in a serving
install); this module adds the `keras.utils.PyDataset` that training reads them through.
"""

import math

import numpy as np

import keras


def epoch_order(num_rows, seed, epoch):
    """The order of `num_rows` training rows in epoch `epoch` (from 0) of a run seeded with
    `seed`: the same whatever happened before, so a resumed run reads what it would have."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_rows)


class ImageFolderBatches(keras.utils.PyDataset):
    """Batches of an image folder's files, decoded from disk as Keras asks for them.

    A `keras.utils.PyDataset` (which every Keras backend reads, without TensorFlow's
    tf.data or another loader): item i is the tuple (x,), x float32 (B, H, W, C) in
    [0, 1]. With `shuffle`, the order of the files in each epoch is drawn from (`seed`,
    the epoch), which `set_epoch` sets (`keras_vae.training.shards.DataOrderByEpoch`), so a
    resumed run reads the batches the uninterrupted one would have; dynamic binarization happens in the model's training step, so each step
    still draws fresh binary images. With `binarize_seed`, each batch is binarized with a
    fixed draw (seeded by the batch's index), as a validation set of a dynamically
    binarized run must be.

    In multi-process data-parallel training, `process_index` p of `num_processes` P reads
    only its rows [p·b, (p+1)·b) of every global batch of `batch_size` B = P·b files (the
    shuffled order is the same on every process, from the same seed), so each file is
    decoded by exactly one process.

    Only the batches in flight are in memory: with the default `workers=1` Keras reads
    one batch at a time, in the training loop; with more `workers` (threads, keyword
    arguments of `keras.utils.PyDataset`) it prepares up to `max_queue_size` ahead.
    """

    def __init__(self, files, batch_size, shuffle=False, seed=0, drop_last=False,
                 binarize_seed=None, process_index=0, num_processes=1, **kwargs):
        super().__init__(**kwargs)
        if batch_size % num_processes:
            raise ValueError(f"batches of {batch_size} images must split evenly across "
                             f"{num_processes} processes")
        self.process_index = int(process_index)
        self.num_processes = int(num_processes)
        self.files = files
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.binarize_seed = binarize_seed
        self.seed = int(seed)
        self.set_epoch(0)

    def __len__(self):
        count = len(self.files) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        indices = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        if len(indices) % self.num_processes:
            raise ValueError(f"the last batch of {len(indices)} images does not split evenly "
                             f"across {self.num_processes} processes")
        local = len(indices) // self.num_processes
        mine = slice(self.process_index * local, (self.process_index + 1) * local)
        images = self.files.read(indices[mine])
        if self.binarize_seed is not None:
            # The global batch's draw, so that it does not depend on the number of processes.
            rng = np.random.default_rng([self.binarize_seed, index])
            images = (rng.random((len(indices), *images.shape[1:]))[mine] < images).astype(np.float32)
        return (images,)

    def set_epoch(self, epoch):
        """The batches of epoch `epoch` (counted from 0) come next."""
        self.order = (epoch_order(len(self.files), self.seed, epoch) if self.shuffle
                      else np.arange(len(self.files)))

    @property
    def image_shape(self):
        return tuple(self.files.image_shape)
