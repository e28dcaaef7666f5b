"""Training a VAE from a `TrainConfig` into a run directory.

A run directory holds everything about one run:
    config.json         every option, the backend and the library versions
    model.keras         the model with the best validation loss (without a
                        validation split: the model after the last epoch)
    last.keras          the model after the last epoch
    history.csv         per-epoch metrics (nats per example), elapsed_seconds and peak_rss_mib
    checkpoints/        epoch_NNNN.keras every `checkpoint_every` epochs (when set)
    logs/               TensorBoard logs
    backup/             the state of an unfinished run (keras_vae.training.resume); gone when it is done
    samples.png, reconstructions.png
"""

import contextlib
import dataclasses
import math
import os
import numpy as np

import keras

import keras_vae
from keras_vae.core.files import write_json
from keras_vae.data.options import ImageOptions
from keras_vae.models.options import HierarchicalOptions
from keras_vae.models.options import ModelOptions
from keras_vae.models.options import check_model_choice
from keras_vae.models.options import hierarchical_kwargs
from keras_vae.models.pictures import save_reconstructions
from keras_vae.models.pictures import save_samples
from keras_vae.training import resume
from keras_vae.training.callbacks import ElapsedTime
from keras_vae.training.callbacks import PeakMemory
from keras_vae.training.callbacks import best_model_checkpoint
from keras_vae.training.callbacks import periodic_checkpoint
from keras_vae.training.callbacks import tensorboard_logs
from keras_vae.training.devices import use_all_devices
from keras_vae.training.inputs import load_training_data
from keras_vae.training.run_directory import last_logged_value
from keras_vae.training.run_directory import run_record


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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite and training was stopped."""


def build_model(config, input_shape, learning_rate=None, class_names=None):
    """The config's model (a `VAE`, or a `HierarchicalVAE` for model="hierarchical") with its
    options and seed, on images of `input_shape` (H, W, C), compiled with Adam
    (learning_rate defaults to config.lr); class-conditional on `class_names` when given."""
    if config.model == "hierarchical":
        vae = keras_vae.HierarchicalVAE(input_shape=input_shape, **hierarchical_kwargs(config),
                                        seed=config.seed)
    else:
        classes = {} if not class_names else dict(num_classes=len(class_names),
                                                  class_names=class_names)
        vae = keras_vae.VAE(input_shape=input_shape, **config.model_kwargs(), seed=config.seed,
                            **classes)
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
    resumes after the last completed epoch (see `keras_vae.training.resume`). A
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
        resume.check_resumable(config, config_path)
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
        PeakMemory(),
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
