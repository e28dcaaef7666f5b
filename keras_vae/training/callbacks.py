"""The Keras callbacks of a training run besides resume's: the run's clocks, peak memory,
averaged (EMA) weights, checkpoints, TensorBoard, and stopping at a step boundary on
SIGINT or SIGTERM."""

import contextlib
import importlib.util
import os
import resource
import signal
import threading
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


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM (`StopOnSignal`); the run directory resumes it.

    `str()` is the one line `keras-vae train` prints; `exit_status` is 128 + the signal
    (130 for SIGINT, 143 for SIGTERM). `epoch` counts from 1 as Keras' progress bar does;
    `step` is the number of training steps done in it (of `steps`); `epoch_done` says that
    the epoch was complete and committed. `together`: every process of a multi-process run
    stopped at this same step. `sender`: the process that got the signal, when another one.
    """

    def __init__(self, signum, epoch=None, step=None, steps=None, epoch_done=False,
                 last_epoch=False, at_once=False, together=False, sender=None):
        super().__init__(signum)
        self.signum, self.epoch, self.step, self.steps = signum, epoch, step, steps
        self.epoch_done, self.last_epoch, self.at_once = epoch_done, last_epoch, at_once
        self.together, self.sender = together, sender

    @property
    def exit_status(self):
        return 128 + self.signum

    def __str__(self):
        name = signal.Signals(self.signum).name
        why = (f"a second signal, {name}" if self.at_once else name) + (
            f" on process {self.sender}" if self.sender is not None else "")
        if self.epoch is None:
            return f"stopped before training began ({why}); run the same command again to resume"
        if self.epoch_done:
            then = ("to write the final files" if self.last_epoch
                    else f"to resume from epoch {self.epoch + 1}")
            return f"stopped after epoch {self.epoch} ({why}); run the same command again {then}"
        where = f"step {self.step}" + (f" of {self.steps}" if self.steps else "")
        return (f"stopped {'at once ' if self.at_once else ''}at epoch {self.epoch}, {where} "
                f"({why}); run the same command again to resume from the start of epoch "
                f"{self.epoch}")


class StopOnSignal(keras.callbacks.Callback):
    """Stops `fit` at the next step boundary on SIGINT (Ctrl-C) or SIGTERM, keeping the run
    resumable, and raises `TrainingStopped` out of `fit` (or, for a complete epoch, from
    `raise_if_stopped()` after it).

    Within `handling_signals()` a signal only sets a flag. The next `on_train_batch_end` sets
    Keras' `model.stop_training`, so `fit` leaves its loop after that step. What Keras does
    next would treat the part of the epoch as a whole one (validation, then `on_epoch_end`:
    checkpoints, the history row, the backup's commit), so this callback, first in the list,
    raises `TrainingStopped` at `on_test_begin` or `on_epoch_end` instead: nothing of the
    unfinished epoch is written, and the run resumes after the last committed epoch, exactly
    as an uninterrupted run would have gone on. A signal in the last step of an epoch, or
    during its validation, stops after that epoch is committed. A second signal does what the
    handler before `handling_signals()` does (`keras-vae train`'s prints `at_once_line()` and
    exits; Python's default raises KeyboardInterrupt for SIGINT and ends the process for SIGTERM).

    `agree` (several processes): called at every check with this process's signal (0 for
    none), returns (signal, process) on which every process stops at this same check, or
    (0, None) to go on (`keras_vae.training.devices.StopAgreement`).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    #: The instance handling signals now (None outside `handling_signals()`), and how many fits
    #: handling signals have ended without being stopped, in this process.
    running = None
    fits_ended = 0

    def __init__(self, agree=None):
        super().__init__()
        self.agree = agree
        self.requested = 0  # the signal this process got
        self.stopped = None  # the TrainingStopped once training stops
        self.epoch, self.step = None, 0
        self.previous = {}

    @contextlib.contextmanager
    def handling_signals(self):
        """Within the block (around `fit`), SIGINT and SIGTERM stop training at the next step
        boundary; the handlers before it are restored after it. Outside the main thread
        (where Python cannot handle signals) it changes nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self.previous = {signum: signal.signal(signum, self._on_signal)
                         for signum in self.SIGNALS}
        StopOnSignal.running = self
        try:
            yield self
            if self.stopped is None:
                StopOnSignal.fits_ended += 1
        finally:
            StopOnSignal.running = None
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum, frame):
        if not (self.requested or self.stopped is not None):
            self.requested = signum
            return
        previous = self.previous.get(signum)  # a second signal: as without this callback
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def at_once_line(self, signum):
        """The line for a stop at once on `signum`, now: where training was."""
        return str(self._stop(signum, at_once=True))

    def _stop(self, signum, at_once=False, sender=None):
        steps = self.params.get("steps") if self.params else None
        epoch_done = bool(steps) and self.step == steps and not at_once
        return TrainingStopped(
            signum, epoch=None if self.epoch is None else self.epoch + 1, step=self.step,
            steps=steps, epoch_done=epoch_done, at_once=at_once, sender=sender,
            last_epoch=epoch_done and self.params.get("epochs") == self.epoch + 1,
            together=self.agree is not None and not at_once)

    def _agreed(self):
        """The signal to stop on now (0: go on), and the process that got it (None: this one)."""
        if self.agree is None:
            return self.requested, None
        return self.agree(self.requested)

    def _check(self):
        signum, sender = self._agreed()
        if signum:
            self.stopped = self._stop(signum, sender=sender)
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.step = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step = batch + 1
        if self.stopped is None:
            self._check()

    def on_test_begin(self, logs=None):
        if self.stopped is not None and not self.stopped.epoch_done:
            raise self.stopped  # no validation for part of an epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped is None:  # a signal during validation: stop after this epoch
            self.step = self.params.get("steps") or self.step
            self._check()
        elif not self.stopped.epoch_done:
            raise self.stopped  # nothing of an unfinished epoch is written

    def raise_if_stopped(self):
        """After `fit`: raises the `TrainingStopped` of a stop after a complete epoch."""
        if self.stopped is not None:
            raise self.stopped
