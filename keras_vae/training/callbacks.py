"""The Keras callbacks of a training run besides resume's: the run's clocks, peak memory,
averaged (EMA) weights, checkpoints, TensorBoard."""

import importlib.util
import os
import resource
import time

import keras

from keras_vae.training.run_directory import best_logged_value


class ElapsedTime(keras.callbacks.Callback):
    """Adds the run's two clocks to each epoch's logs, both summed across resumes:

    - `elapsed_seconds`: wall time of training so far;
    - `cpu_seconds`: this process's CPU time (user + system, every thread) spent training so
      far. Two runs that shared their cores with other work compare by it; on idle cores of
      a 2-core machine it approaches twice the wall time.

    Put it before CSVLogger so the columns land in history.csv. A resumed run starts
    counting from `previous_seconds` and `previous_cpu_seconds`.
    """

    def __init__(self, previous_seconds=0.0, previous_cpu_seconds=0.0):
        super().__init__()
        self.previous_seconds = previous_seconds
        self.previous_cpu_seconds = previous_cpu_seconds

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["elapsed_seconds"] = self.previous_seconds + time.perf_counter() - self.started
            logs["cpu_seconds"] = (self.previous_cpu_seconds + time.process_time()
                                   - self.cpu_started)


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras' `SwapEMAWeights(swap_on_epoch=True)`, for an optimizer with `use_ema=True`:
    validation and every callback after it at an epoch's end (checkpoints, the backup) see
    the exponential moving average of the weights; training resumes on the raw weights.

    At an epoch's end the model holds the averaged weights and the optimizer's
    `average` slots the raw ones, so a backup written then keeps both. A run restored from
    such a backup calls `restored_averaged()`, and the next epoch starts by swapping back,
    as it would have without the interruption.
    """

    def __init__(self):
        super().__init__(swap_on_epoch=True)

    def restored_averaged(self):
        """The model was just restored from an epoch's end: it holds the averaged weights."""
        self._ema_weights_in_model = True


class PeakMemory(keras.callbacks.Callback):
    """Adds `peak_rss_mib` (this process's peak resident memory so far, MiB) to each epoch's logs.

    Put it before CSVLogger so the column lands in history.csv.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tensorboard_logs(run_dir):
    """[TensorBoard] writing logs/ when TensorFlow is installed (Keras' callback needs it), else []."""
    if importlib.util.find_spec("tensorflow") is None:
        print("TensorFlow is not installed: no TensorBoard logs (history.csv has every epoch).")
        return []
    return [keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False)]


def best_model_checkpoint(run_dir, history_path, validating):
    """[ModelCheckpoint] keeping the lowest val_loss in model.keras; [] without validation.

    Without validation, train() saves model.keras once, after the last epoch: the
    training loss cannot pick a best epoch, since during a KL warm-up it rises as β does.
    """
    if not validating:
        return []
    return [keras.callbacks.ModelCheckpoint(
        os.path.join(run_dir, "model.keras"),
        monitor="val_loss",
        save_best_only=True,
        initial_value_threshold=best_logged_value(history_path, "val_loss"),
    )]


def periodic_checkpoint(config):
    """[EveryNEpochs] writing checkpoints/epoch_NNNN.keras every config.checkpoint_every epochs."""
    if config.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {config.checkpoint_every}")
    if not config.checkpoint_every:
        return []
    path = os.path.join(config.out, "checkpoints", "epoch_{epoch:04d}.keras")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return [EveryNEpochs(path, config.checkpoint_every)]


class EveryNEpochs(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that saves after epochs N, 2N, 3N, … (counted from 1), also across resumes."""

    def __init__(self, filepath, every):
        super().__init__(filepath, save_freq="epoch")
        self.every = int(every)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            super().on_epoch_end(epoch, logs)
