"""Training a VAE from a `TrainConfig` into a run directory.

A run directory holds everything about one run:
    config.json         every option, the backend and the library versions
    model.keras         the model with the best validation loss (without a
                        validation split: the model after the last epoch)
    last.keras          the model after the last epoch
    history.csv         per-epoch metrics (nats per example), elapsed_seconds, cpu_seconds
                        and peak_rss_mib
    checkpoints/        epoch_NNNN.keras every `checkpoint_every` epochs (when set)
    logs/               TensorBoard logs
    backup/             the state of an unfinished run (keras_vae.training.resume); gone when it is done
    samples.png, reconstructions.png

In a multi-process data-parallel run (`keras_vae.training.devices`) only process 0 writes the
run directory; the other processes write nothing and, when resuming, receive process 0's
restored state from it.
"""

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import numpy as np

import keras

import keras_vae
from keras_vae.core.files import write_json
from keras_vae.core.options import OptionError
from keras_vae.data.options import ImageOptions
from keras_vae.models.options import HierarchicalOptions
from keras_vae.models.options import ModelOptions
from keras_vae.models.options import check_model_choice
from keras_vae.models.options import hierarchical_kwargs
from keras_vae.models.pictures import save_reconstructions
from keras_vae.models.pictures import save_samples
from keras_vae.training import resume
from keras_vae.training.callbacks import AveragedWeights
from keras_vae.training.callbacks import ElapsedTime
from keras_vae.training.callbacks import PeakMemory
from keras_vae.training.callbacks import StopOnSignal
from keras_vae.training.callbacks import best_model_checkpoint
from keras_vae.training.callbacks import periodic_checkpoint
from keras_vae.training.callbacks import tensorboard_logs
from keras_vae.training import devices as device_lib
from keras_vae.training.devices import use_all_devices
from keras_vae.training.inputs import load_training_data
from keras_vae.training.run_directory import last_logged_value
from keras_vae.training.run_directory import run_record
from keras_vae.training.shards import DataOrderByEpoch
from keras_vae.training.shards import ProcessBatches


@dataclasses.dataclass
class TrainConfig(ImageOptions, HierarchicalOptions, ModelOptions):
    """Every option of a training run; saved, flat, as the run's config.json.

    The model's options are the fields of `ModelOptions` (and, for
    `model="hierarchical"`, of `HierarchicalOptions`), and an image folder's those of
    `ImageOptions`, inherited (converted and checked on construction: an option the
    chosen model does not take raises `OptionError`); the fields below are the run's own.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    binarize: bool = False
    val_fraction: float = 0.1
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    ema: float = 0.0  # > 0: evaluate and save the weights' moving average with this momentum
    seed: int = 0
    data_parallel: bool = False
    steps_per_execution: int = 1
    checkpoint_every: int = 0
    out: str = "runs/digits"
    overwrite: bool = False
    verbose: int | str = "auto"
    conditional: bool = False  # a class-conditional VAE on the dataset's labels (keras_vae.models.conditioning)

    def __post_init__(self):
        ModelOptions.__post_init__(self)
        HierarchicalOptions.__post_init__(self)
        ImageOptions.__post_init__(self)
        check_model_choice(self)
        if not 0.0 <= self.ema < 1.0:
            raise OptionError("ema", "0 (off) or a momentum in (0, 1), e.g. 0.999", self.ema)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite and training was stopped."""


def build_model(config, input_shape, learning_rate=None, class_names=None):
    """The config's model (a `VAE`, or a `HierarchicalVAE` for model="hierarchical") with its
    options and seed, on images of `input_shape` (H, W, C), compiled with Adam
    (learning_rate defaults to config.lr; with config.ema, Adam keeps the weights' exponential
    moving average, `use_ema`); class-conditional on `class_names` when given."""
    if config.model == "hierarchical":
        vae = keras_vae.HierarchicalVAE(input_shape=input_shape, **hierarchical_kwargs(config),
                                        seed=config.seed)
    else:
        classes = {} if not class_names else dict(num_classes=len(class_names),
                                                  class_names=class_names)
        vae = keras_vae.VAE(input_shape=input_shape, **config.model_kwargs(), seed=config.seed,
                            **classes)
    averaging = dict(use_ema=True, ema_momentum=config.ema) if config.ema else {}
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate or config.lr,
                                                **averaging),
                steps_per_execution=config.steps_per_execution)
    return vae


def learning_rate_schedule(config, steps_per_epoch):
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.lr, config.epochs * steps_per_epoch)
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")


def train(config, extra_callbacks=()):
    """Trains with `model.fit` and Keras callbacks; returns the trained VAE.

    Running the same config again after an interruption, even `kill -9`,
    resumes after the last completed epoch (see `keras_vae.training.resume`). A
    resumed run must have the same options (FileExistsError names those that
    differ); `config.overwrite` starts afresh instead. Raises TrainingDiverged
    on NaN loss, and `keras_vae.training.callbacks.TrainingStopped` (a KeyboardInterrupt)
    when SIGINT or SIGTERM stopped it at a step boundary.
    """
    if device_lib.multi_process_requested():
        if not config.data_parallel:
            raise ValueError(f"{device_lib.NUM_PROCESSES_VARIABLE} is set: several processes "
                             "train one model only with --data-parallel")
        device_lib.initialize_processes()
        device_lib.check_same_options(dict(json.loads(json.dumps(dataclasses.asdict(config))),
                                           backend=keras.backend.backend()))
        if not device_lib.is_writer():
            device_lib.wait_for_process_zero()  # its start-up checks; StartupFailed names them
            return _train(config, extra_callbacks, writer=False)
    with device_lib.start_shared() as started:  # several processes: the checks' outcome to all
        os.makedirs(config.out, exist_ok=True)
        with resume.run_lock(config.out):
            return _train(config, extra_callbacks, started=started)


class ShareProcessZeroState(keras.callbacks.Callback):
    """Restores a multi-process run from process 0's backup on every process.

    Only process 0 has the run directory. At the start of training it broadcasts the
    committed epoch and the bytes of its backup's weights file (model and optimizer state,
    noise seed included) with JAX's `broadcast_one_to_all`; every process then loads them
    from a temporary file at the same time, since placing values on the devices of several
    processes is itself a collective operation.
    """

    def __init__(self, backup=None, averaged_weights=None):
        super().__init__()
        self.backup = backup  # process 0's DurableBackupAndRestore (restore=False); None elsewhere
        self.averaged_weights = averaged_weights  # the run's AveragedWeights (EMA) or None

    def on_train_begin(self, logs=None):
        from jax.experimental import multihost_utils

        epoch, path = self.backup.committed_weights() if self.backup else (0, None)
        data = np.fromfile(path, np.uint8) if path else np.zeros(0, np.uint8)
        header = multihost_utils.broadcast_one_to_all(np.asarray([epoch, len(data)], np.int64))
        epoch, size = int(header[0]), int(header[1])
        if not size:
            return
        if len(data) != size:
            data = np.zeros(size, np.uint8)
        data = np.asarray(multihost_utils.broadcast_one_to_all(data), np.uint8)
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        with tempfile.TemporaryDirectory() as folder:
            weights = os.path.join(folder, "restored.weights.h5")
            data.tofile(weights)
            model.load_weights(weights)
        model._initial_epoch = epoch
        if self.averaged_weights is not None:
            self.averaged_weights.restored_averaged()
        print(f"Resuming after epoch {epoch} (process 0's backup, on every process)")


def _train(config, extra_callbacks, writer=True, started=lambda: None):
    """Trains in `config.out`; with writer=False (a multi-process run's processes but 0)
    trains without reading or writing the run directory. `started()` is called once the run
    directory has passed its checks."""
    keras.utils.set_random_seed(config.seed)
    if not writer:
        return _train_without_writing(config, extra_callbacks)
    run_dir = config.out
    history_path = os.path.join(run_dir, "history.csv")
    config_path = os.path.join(run_dir, "config.json")
    multi_process = config.data_parallel and device_lib.process_count() > 1
    averaged = AveragedWeights() if config.ema else None
    backup = resume.DurableBackupAndRestore(os.path.join(run_dir, resume.BACKUP_DIR),
                                            restore=not multi_process, averaged_weights=averaged)
    if config.overwrite:
        resume.clear_run(run_dir)
    resume.remove_leftovers(run_dir)
    resuming = os.path.isdir(backup.backup_dir)
    if not resuming and os.path.exists(os.path.join(run_dir, "model.keras")):
        raise FileExistsError(
            f"{run_dir} already holds a finished run; choose another --out or pass --overwrite"
        )
    if resuming and os.path.exists(config_path):
        resume.check_resumable(config, config_path)
    if not resuming:
        with contextlib.suppress(FileNotFoundError):
            os.remove(history_path)
        os.makedirs(backup.backup_dir)  # marks the run unfinished until everything is written
    backup.saved_epoch()  # an unreadable backup stops the run here
    started()

    data = _training_inputs(config)
    if not os.path.exists(config_path):
        write_json(run_record(config, data.image_shape, data.devices, data.num_processes),
                   config_path)
    resume.keep_history_before(history_path, backup.saved_epoch())

    vae = build_model(config, data.image_shape,
                      learning_rate_schedule(config, data.steps_per_epoch), data.class_names)
    validating = data.x_val is not None
    # At each epoch's end Keras calls these in order: the averaged weights (EMA) go into the
    # model first, so that every checkpoint holds them; the backup commits the epoch last.
    callbacks = [
        *([averaged] if averaged else []),
        ElapsedTime(last_logged_value(history_path, "elapsed_seconds") or 0.0,
                    last_logged_value(history_path, "cpu_seconds") or 0.0),
        PeakMemory(),
        keras.callbacks.TerminateOnNaN(),
        *best_model_checkpoint(run_dir, history_path, validating),
        keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "last.keras")),
        *periodic_checkpoint(config),
        keras.callbacks.CSVLogger(history_path, append=True),
        *tensorboard_logs(run_dir),
        *extra_callbacks,
        DataOrderByEpoch(data.x_train),
        backup,
        *([ShareProcessZeroState(backup, averaged)] if multi_process else []),
    ]
    _fit(vae, data, config, callbacks, config.verbose)
    if multi_process:
        _report_replicas(vae)
    if not validating:
        vae.save(os.path.join(run_dir, "model.keras"))  # the last epoch's model, saved once
    if data.num_processes > 1:
        # The other processes have left the step; pictures come from a copy of the
        # model on this process alone.
        keras.distribution.set_distribution(None)
        vae = keras.models.load_model(os.path.join(run_dir, "last.keras"))
    save_samples(vae, os.path.join(run_dir, "samples.png"), seed=config.seed)
    if data.streaming:
        x_shown, y_shown = (data.x_val if validating else data.x_train)[0][0], None  # a batch
    else:
        x_shown, y_shown = data.shown
    save_reconstructions(vae, x_shown, os.path.join(run_dir, "reconstructions.png"),
                         labels=y_shown if config.conditional else None)
    resume.discard_backup(run_dir)  # the run is finished
    return vae


def _train_without_writing(config, extra_callbacks):
    """A multi-process run's process other than 0: the same training, nothing written."""
    data = _training_inputs(config)
    vae = build_model(config, data.image_shape,
                      learning_rate_schedule(config, data.steps_per_epoch), data.class_names)
    averaged = AveragedWeights() if config.ema else None
    callbacks = [*([averaged] if averaged else []), keras.callbacks.TerminateOnNaN(),
                 *extra_callbacks, DataOrderByEpoch(data.x_train),
                 ShareProcessZeroState(averaged_weights=averaged)]
    _fit(vae, data, config, callbacks, verbose=0)
    _report_replicas(vae)
    return vae


def _report_replicas(vae):
    digest = device_lib.check_replicas_agree(vae)
    print(f"Process {device_lib.process_index()} of {device_lib.process_count()}: weights "
          f"identical on every process (sha256 {digest[:16]})")


def _fit(vae, data, config, callbacks, verbose):
    # SIGINT or SIGTERM stops training at a step boundary (every process at the same one),
    # raising TrainingStopped; the run directory keeps the last committed epoch.
    stopper = StopOnSignal(device_lib.stop_agreement() if config.data_parallel else None)
    with stopper.handling_signals():
        history = vae.fit(
            data.x_train,
            epochs=config.epochs,
            validation_batch_size=(config.batch_size if isinstance(data.x_val, np.ndarray)
                                   else None),
            validation_data=data.validation_data,
            callbacks=[stopper, *callbacks],
            verbose=verbose,
            # The training batches shuffle themselves, in an order drawn from the seed and the
            # epoch (DataOrderByEpoch), so that a resumed run reads the batches an uninterrupted
            # one would, and every process of a data-parallel run the same global batches.
            shuffle=False,
        )
    stopper.raise_if_stopped()  # stopped at an epoch's end: committed, but not finished
    if not all(math.isfinite(loss) for loss in history.history.get("loss", [])):
        raise TrainingDiverged(
            "Training stopped: the loss became NaN or infinite. Try a lower --lr, "
            "a KL warm-up (--kl-warmup-steps), or check the data."
        )
    return history


@dataclasses.dataclass
class _Inputs:
    """What fit reads, as this process sees it."""

    x_train: object  # a PyDataset of this process's share of each training batch
    x_val: object  # validation images: an array, or a PyDataset (streamed, or multi-process)
    y_val: object
    class_names: object
    image_shape: tuple
    steps_per_epoch: int
    streaming: bool
    devices: list | None
    num_processes: int
    shown: tuple = (None, None)  # (images, labels) for the reconstruction picture

    @property
    def validation_data(self):
        if self.x_val is None or not isinstance(self.x_val, np.ndarray):
            return self.x_val
        return (self.x_val,) if self.y_val is None else (self.x_val, self.y_val)


def _training_inputs(config):
    """The training and validation inputs; in a multi-process run, this process's share."""
    devices = use_all_devices(config.batch_size) if config.data_parallel else None
    process_index, num_processes = device_lib.process_index(), device_lib.process_count()
    if devices is None:
        process_index, num_processes = 0, 1
    y_train = y_val = class_names = None
    if config.conditional:
        (x_train, y_train), val, class_names = load_training_data(config, with_labels=True)
        x_val, y_val = val if val is not None else (None, None)
    else:
        x_train, x_val = load_training_data(config, drop_last=bool(devices),
                                            process_index=process_index,
                                            num_processes=num_processes)
    validating = x_val is not None
    streaming = not isinstance(x_train, np.ndarray)
    if streaming:
        return _Inputs(x_train, x_val, y_val, class_names, x_train.image_shape, len(x_train),
                       streaming, devices, num_processes)
    if devices:
        # Every batch, the last one included, must split evenly across the devices.
        x_train = x_train[: len(x_train) - len(x_train) % len(devices)]
        y_train = None if y_train is None else y_train[: len(x_train)]
        if validating:
            x_val = x_val[: len(x_val) - len(x_val) % len(devices)]
            y_val = None if y_val is None else y_val[: len(x_val)]
    shard = dict(process_index=process_index, num_processes=num_processes)
    train_arrays = (x_train,) if y_train is None else (x_train, y_train)
    batches = ProcessBatches(train_arrays, config.batch_size, shuffle=True, seed=config.seed,
                             **shard)
    inputs = _Inputs(batches, x_val, y_val, class_names, x_train.shape[1:], len(batches),
                     streaming, devices, num_processes,
                     shown=(x_val, y_val) if validating else (x_train, y_train))
    if num_processes > 1 and validating:
        val_arrays = (x_val,) if y_val is None else (x_val, y_val)
        inputs.x_val, inputs.y_val = ProcessBatches(val_arrays, config.batch_size, **shard), None
    return inputs
