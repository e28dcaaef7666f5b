"""The training batches of in-memory arrays, in an order drawn from the seed and the epoch:
`ProcessBatches`, and `DataOrderByEpoch`, the callback that tells them the epoch.

The order of the rows in epoch e is a permutation drawn from `np.random.default_rng([seed, e])`,
so it depends on nothing that happened before: a run resumed after epoch e reads the batches
that the uninterrupted run would have read, and its weights end the same.

In multi-process data-parallel training every process runs the same `model.fit`, and Keras'
JAX trainer joins the processes' batches into one global batch
(`jax.make_array_from_process_local_data`, process 0's rows first). So process p of P must be
fed rows [p·b, (p+1)·b) of every global batch of B = P·b rows, in the same order on every
process; `ProcessBatches` gives each process those rows, so a run on P processes sees exactly
the global batches of a single-process run with the same seed.
"""

import math

import numpy as np

import keras

from keras_vae.data.batches import epoch_order


class ProcessBatches(keras.utils.PyDataset):
    """This process's rows of each global batch of `arrays` (tuples of equal-length arrays).

    Item i is a tuple with each array's rows [p·b, (p+1)·b) of global batch i, where B =
    `batch_size`, b = B / `num_processes` and p = `process_index`; the last global batch may be
    shorter (its length must split evenly across the processes). With `shuffle`, the order of
    the rows is drawn for every epoch from (`seed`, the epoch), which `set_epoch` sets
    (`DataOrderByEpoch`).
    """

    def __init__(self, arrays, batch_size, process_index=0, num_processes=1, shuffle=False,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        self.arrays = tuple(arrays)
        self.num_rows = len(self.arrays[0])
        if any(len(a) != self.num_rows for a in self.arrays):
            raise ValueError("the arrays of a dataset must have the same number of rows")
        if batch_size % num_processes or (self.num_rows % batch_size) % num_processes:
            raise ValueError(f"batches of {batch_size} rows (the last one of "
                             f"{self.num_rows % batch_size or batch_size}) must split evenly "
                             f"across {num_processes} processes")
        self.batch_size = int(batch_size)
        self.process_index = int(process_index)
        self.num_processes = int(num_processes)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.order = None

    def __len__(self):
        return math.ceil(self.num_rows / self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        if self.order is None:  # drawn when the epoch's first batch is read
            self.order = (epoch_order(self.num_rows, self.seed, self.epoch) if self.shuffle
                          else np.arange(self.num_rows))
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        local = len(rows) // self.num_processes
        rows = rows[self.process_index * local : (self.process_index + 1) * local]
        return tuple(a[rows] for a in self.arrays)

    def set_epoch(self, epoch):
        """The batches of epoch `epoch` (counted from 0) come next."""
        self.epoch, self.order = int(epoch), None


class DataOrderByEpoch(keras.callbacks.Callback):
    """Tells a dataset with `set_epoch` (`ProcessBatches`, a streamed `ImageFolderBatches`)
    which epoch begins, counted as Keras does: a resumed run starts at its initial epoch."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
