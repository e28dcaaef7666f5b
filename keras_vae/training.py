"""Training a VAE from a `TrainConfig` into a run directory.

A run directory holds everything about one run:
    config.json         every option, the backend and the library versions
    model.keras         the model with the best validation loss (without a
                        validation split: the model after the last epoch)
    last.keras          the model after the last epoch
    history.csv         per-epoch metrics (nats per example) and elapsed_seconds
    checkpoints/        epoch_NNNN.keras every `checkpoint_every` epochs (when set)
    logs/               TensorBoard logs
    backup/             the state of an unfinished run (keras_vae.resume); gone when it is done
    samples.png, reconstructions.png
"""

import contextlib
import csv
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import time

import numpy as np

import keras

import keras_vae
from keras_vae import conditioning
from keras_vae import resume
from keras_vae.data import binarize
from keras_vae.data import image_folder_split
from keras_vae.data import is_image_folder
from keras_vae.data import load_dataset
from keras_vae.options import ImageOptions
from keras_vae.options import ModelOptions
from keras_vae.pictures import save_reconstructions
from keras_vae.pictures import save_samples
from keras_vae.core.files import write_json


@dataclasses.dataclass
class TrainConfig(ImageOptions, ModelOptions):
    """Every option of a training run; saved, flat, as the run's config.json.

    The model's options are the fields of `ModelOptions`, and an image folder's
    those of `ImageOptions`, inherited (converted and checked on construction);
    the fields below are the run's own.
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
    seed: int = 0
    data_parallel: bool = False
    steps_per_execution: int = 1
    checkpoint_every: int = 0
    out: str = "runs/digits"
    overwrite: bool = False
    verbose: int | str = "auto"
    conditional: bool = False  # a class-conditional VAE on the dataset's labels (keras_vae.conditioning)

    def __post_init__(self):
        ModelOptions.__post_init__(self)
        ImageOptions.__post_init__(self)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite and training was stopped."""


class ElapsedTime(keras.callbacks.Callback):
    """Adds `elapsed_seconds` (wall time of training so far) to each epoch's logs.

    Put it before CSVLogger so the column lands in history.csv. A resumed run
    starts counting from `previous_seconds`.
    """

    def __init__(self, previous_seconds=0.0):
        super().__init__()
        self.previous_seconds = previous_seconds

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["elapsed_seconds"] = self.previous_seconds + time.perf_counter() - self.started


def load_training_data(config, drop_last=False, with_labels=False):
    """Train and validation images for a config: (x_train, x_val).

    With `with_labels` (a class-conditional run): ((x_train, y_train), (x_val, y_val),
    class_names), the labels int32 (N,), split with their images; in memory only.

    Each is float32 (N, H, W, C) in memory, or, for an image folder whose decoded
    images exceed `config.memory_budget_mb`, a `keras_vae.image_batches.ImageFolderBatches`
    streaming batches of `config.batch_size` from disk (shuffled each epoch; with
    `drop_last`, without the last partial batch). The validation images are a seeded
    `val_fraction` of the training split; with val_fraction 0, x_val is None and
    training uses the whole split.
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
            return stream_image_folder(config, files, drop_last)
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


def stream_image_folder(config, files, drop_last=False):
    """(x_train, x_val) as `ImageFolderBatches` over an image folder's training files.

    The validation files are a seeded `val_fraction` of them, as for in-memory data.
    """
    from keras_vae.image_batches import ImageFolderBatches

    if config.binarize:
        raise ValueError("--binarize draws the binary images once, in memory; a folder larger "
                         "than --memory-budget-mb streams, so use --dynamic-binarization")
    print(f"{config.dataset}: {len(files)} training images of {files.image_shape} take "
          f"{files.decoded_bytes / 1e6:.0f} MB decoded, more than --memory-budget-mb "
          f"{config.memory_budget_mb:g}: streaming them from disk, batch by batch")
    order = np.random.default_rng(config.seed).permutation(len(files))
    num_val = 0 if config.val_fraction == 0.0 else max(1, int(round(config.val_fraction * len(files))))
    x_train = ImageFolderBatches(files.subset(np.sort(order[num_val:])), config.batch_size,
                                 shuffle=True, seed=config.seed, drop_last=drop_last)
    if not num_val:
        return x_train, None
    x_val = ImageFolderBatches(files.subset(np.sort(order[:num_val])), config.batch_size,
                               drop_last=drop_last,
                               binarize_seed=config.seed if config.dynamic_binarization else None)
    return x_train, x_val


def build_model(config, input_shape, learning_rate=None, class_names=None):
    """A VAE for the config's model options and seed, on images of `input_shape` (H, W, C),
    compiled with Adam (learning_rate defaults to config.lr); class-conditional on
    `class_names` when given."""
    classes = {} if not class_names else dict(num_classes=len(class_names), class_names=class_names)
    vae = keras_vae.VAE(input_shape=input_shape, **config.model_kwargs(), seed=config.seed, **classes)
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate or config.lr),
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
    resumes after the last completed epoch (see `keras_vae.resume`). A
    resumed run must have the same options (FileExistsError names those that
    differ); `config.overwrite` starts afresh instead. Raises TrainingDiverged
    on NaN loss.
    """
    os.makedirs(config.out, exist_ok=True)
    with resume.run_lock(config.out):
        return _train(config, extra_callbacks)


def _train(config, extra_callbacks):
    keras.utils.set_random_seed(config.seed)
    run_dir = config.out
    history_path = os.path.join(run_dir, "history.csv")
    config_path = os.path.join(run_dir, "config.json")
    backup = resume.DurableBackupAndRestore(os.path.join(run_dir, resume.BACKUP_DIR))
    if config.overwrite:
        resume.clear_run(run_dir)
    resume.remove_leftovers(run_dir)
    resuming = os.path.isdir(backup.backup_dir)
    if not resuming and os.path.exists(os.path.join(run_dir, "model.keras")):
        raise FileExistsError(
            f"{run_dir} already holds a finished run; choose another --out or pass --overwrite"
        )
    if resuming and os.path.exists(config_path):
        check_resumable(config, config_path)
    if not resuming:
        with contextlib.suppress(FileNotFoundError):
            os.remove(history_path)
        os.makedirs(backup.backup_dir)  # marks the run unfinished until everything is written

    devices = use_all_devices(config.batch_size) if config.data_parallel else None
    y_train = y_val = class_names = None
    if config.conditional:
        (x_train, y_train), val, class_names = load_training_data(config, with_labels=True)
        x_val, y_val = val if val is not None else (None, None)
    else:
        x_train, x_val = load_training_data(config, drop_last=bool(devices))
    validating = x_val is not None
    streaming = not isinstance(x_train, np.ndarray)
    if devices and not streaming:
        # Every batch, the last one included, must split evenly across the devices.
        x_train = x_train[: len(x_train) - len(x_train) % len(devices)]
        y_train = None if y_train is None else y_train[: len(x_train)]
        if validating:
            x_val = x_val[: len(x_val) - len(x_val) % len(devices)]
            y_val = None if y_val is None else y_val[: len(x_val)]
    image_shape = x_train.image_shape if streaming else x_train.shape[1:]
    if not os.path.exists(config_path):
        write_json(run_record(config, image_shape, devices), config_path)
    resume.keep_history_before(history_path, backup.saved_epoch())

    steps_per_epoch = len(x_train) if streaming else math.ceil(len(x_train) / config.batch_size)
    vae = build_model(config, image_shape, learning_rate_schedule(config, steps_per_epoch),
                      class_names)
    # At each epoch's end Keras calls these in order; the backup commits the epoch last.
    callbacks = [
        ElapsedTime(last_logged_value(history_path, "elapsed_seconds") or 0.0),
        keras.callbacks.TerminateOnNaN(),
        *best_model_checkpoint(run_dir, history_path, validating),
        keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "last.keras")),
        *periodic_checkpoint(config),
        keras.callbacks.CSVLogger(history_path, append=True),
        *tensorboard_logs(run_dir),
        *extra_callbacks,
        backup,
    ]
    val_data = (x_val,) if y_val is None else (x_val, y_val)
    history = vae.fit(
        x_train,
        y_train,
        epochs=config.epochs,
        batch_size=None if streaming else config.batch_size,
        validation_data=(x_val if streaming else val_data) if validating else None,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    if not all(math.isfinite(loss) for loss in history.history.get("loss", [])):
        raise TrainingDiverged(
            "Training stopped: the loss became NaN or infinite. Try a lower --lr, "
            "a KL warm-up (--kl-warmup-steps), or check the data."
        )
    if not validating:
        vae.save(os.path.join(run_dir, "model.keras"))  # the last epoch's model, saved once
    save_samples(vae, os.path.join(run_dir, "samples.png"), seed=config.seed)
    shown = x_val if validating else x_train
    if streaming:
        shown = shown[0][0]  # the first batch
    shown_labels = (y_val if validating else y_train) if config.conditional else None
    save_reconstructions(vae, shown, os.path.join(run_dir, "reconstructions.png"), labels=shown_labels)
    resume.discard_backup(run_dir)  # the run is finished
    return vae


def tensorboard_logs(run_dir):
    """[TensorBoard] writing logs/ when TensorFlow is installed (Keras' callback needs it), else []."""
    if importlib.util.find_spec("tensorflow") is None:
        print("TensorFlow is not installed: no TensorBoard logs (history.csv has every epoch).")
        return []
    return [keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False)]


def check_resumable(config, config_path):
    """Raises FileExistsError naming the options in which `config` differs from the interrupted run's."""
    with open(config_path) as f:
        saved = json.load(f)
    options = dict(dataclasses.asdict(config), backend=keras.backend.backend())
    changes = resume.changed_options(saved, options)
    if changes:
        raise FileExistsError(
            f"{config.out} holds an interrupted run with other options ({'; '.join(changes)}). "
            "Run the same command to resume it, pass --overwrite to start afresh, or choose "
            "another --out."
        )


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


def use_all_devices(batch_size):
    """Data-parallel training over every device, via Keras' own distribution API (JAX).

    Multi-host: set KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and
    KERAS_DISTRIBUTION_PROCESS_ID on every host; `keras.distribution.initialize()` reads them.
    Returns the devices the batch is split across.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "data-parallel training runs on the JAX backend (keras.distribution); "
            f"this process uses {keras.backend.backend()!r}. Use --backend jax."
        )
    if "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ:
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise ValueError(
            f"--batch-size {batch_size} must divide evenly across the {len(devices)} devices"
        )
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    print(f"Data-parallel training on {len(devices)} devices: {', '.join(devices)}")
    return devices


def run_record(config, image_shape, devices=None):
    """config.json contents: the options plus what is needed to reproduce and load the run."""
    record = dataclasses.asdict(config)
    record.update(
        image_shape=[int(d) for d in image_shape],
        backend=keras.backend.backend(),
        devices=devices,
        versions=library_versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return record


def library_versions():
    versions = {"keras_vae": keras_vae.__version__, "keras": keras.__version__,
                "python": platform.python_version(), "numpy": np.__version__}
    backend = keras.backend.backend()
    module = __import__(backend)
    versions[backend] = module.__version__
    return versions


def logged_values(history_path, column):
    """The values of `column` in a CSVLogger file, in order ([] without file or column).

    Empty cells and CSVLogger's "NA" (e.g. val_* columns of a run without validation) are skipped.
    """
    if not os.path.exists(history_path):
        return []
    with open(history_path) as f:
        cells = [row.get(column) for row in csv.DictReader(f)]
    return [float(cell) for cell in cells if cell and cell != "NA"]


def best_logged_value(history_path, column):
    """The lowest `column` in a CSVLogger file, or None (no file, no rows)."""
    values = logged_values(history_path, column)
    return min(values) if values else None


def last_logged_value(history_path, column):
    """The last `column` in a CSVLogger file, or None (no file, no rows)."""
    values = logged_values(history_path, column)
    return values[-1] if values else None
