"""Each process's slice of every global batch of in-memory arrays: `ProcessBatches`.

In multi-process data-parallel training every process runs the same `model.fit`, and Keras'
JAX trainer joins the processes' batches into one global batch
(`jax.make_array_from_process_local_data`, process 0's rows first). So process p of P must be
fed rows [p·b, (p+1)·b) of every global batch of B = P·b rows, in the same order on every
process. `ProcessBatches` does that for arrays held in memory: it draws the same shuffled order
as Keras' own array adapter (one `np.random.permutation` of the whole split per epoch, from
NumPy's global generator that `keras.utils.set_random_seed` seeds), so a run on P processes
sees exactly the global batches of a single-process run with the same seed.
"""

import math

import numpy as np

import keras


class ProcessBatches(keras.utils.PyDataset):
    """This process's rows of each global batch of `arrays` (tuples of equal-length arrays).

    Item i is a tuple with each array's rows [p·b, (p+1)·b) of global batch i, where B =
    `batch_size`, b = B / `num_processes` and p = `process_index`; the last global batch may be
    shorter (its length must split evenly across the processes). With `shuffle`, the order of
    the rows is drawn afresh for every epoch, the way Keras shuffles arrays.
    """

    def __init__(self, arrays, batch_size, process_index=0, num_processes=1, shuffle=False,
                 **kwargs):
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
        self.order = None

    def __len__(self):
        return math.ceil(self.num_rows / self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        if self.order is None:  # drawn when the epoch's first batch is read, as Keras does
            self.order = (np.random.permutation(self.num_rows) if self.shuffle
                          else np.arange(self.num_rows))
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        local = len(rows) // self.num_processes
        rows = rows[self.process_index * local : (self.process_index + 1) * local]
        return tuple(a[rows] for a in self.arrays)

    def on_epoch_end(self):
        self.order = None
