"""A run directory that survives `kill -9` at any moment, and resumes only the run it holds.

How a run directory stays consistent:
- `backup/` exists exactly while a run is unfinished. It is made before anything
  else is written and removed (renamed, then deleted) after everything else.
- Each epoch ends with, in this order: model checkpoints (atomic `VAE.save`),
  the history row (CSVLogger), then the backup (`DurableBackupAndRestore`), whose
  metadata file is the commit point. A resumed run starts after the last
  committed epoch and first drops history rows from later epochs, so every epoch
  is logged exactly once.
- Every file is written to a temporary name and renamed (`keras_vae.core.files`);
  temporaries left by a killed process are removed on the next start.
- One process at a time: the run holds an exclusive lock on `.lock`.
"""

import contextlib
import csv
import dataclasses
import io
import json
import os
import secrets
import shutil

import keras

from keras_vae.core.files import atomic_path
from keras_vae.core.files import remove_stale_temp_files
from keras_vae.core.files import write_json
from keras_vae.core.files import write_text_atomic
from keras_vae.models.options import with_options_saved_before

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

BACKUP_DIR = "backup"
LOCK_FILE = ".lock"
_DISCARDED_BACKUP_PREFIX = f".{BACKUP_DIR}.discarded."
# Options that may differ between an interrupted command and the one that resumes it
# ("out" is the run directory itself, however it is spelled; the memory budget only
# decides whether an image folder is held in memory or streamed).
OPTIONS_FREE_ON_RESUME = ("overwrite", "verbose", "download", "out", "steps_per_execution",
                          "memory_budget_mb")
# What train() writes; --overwrite removes these before starting afresh.
RUN_OUTPUTS = ("history.csv", "model.keras", "last.keras", "config.json", "samples.png",
               "reconstructions.png")
RUN_OUTPUT_DIRS = ("checkpoints", "logs")


class RunInUse(RuntimeError):
    """Another process is training in the same run directory."""


class UnreadableBackup(RuntimeError):
    """The backup of an interrupted run cannot be read."""


@contextlib.contextmanager
def run_lock(run_dir):
    """Holds an exclusive lock on `run_dir` for the block; RunInUse if another process has it.

    The operating system releases the lock when the process dies, even by SIGKILL.
    """
    if fcntl is None:
        yield
        return
    with open(os.path.join(run_dir, LOCK_FILE), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUse(f"another process is training in {run_dir}; wait for it or choose "
                           "another --out") from None
        yield


def remove_leftovers(run_dir):
    """Removes temporary files and discarded backups that a killed process left behind."""
    remove_stale_temp_files(run_dir, os.path.join(run_dir, BACKUP_DIR),
                            os.path.join(run_dir, "checkpoints"))
    for entry in os.scandir(run_dir):
        if entry.is_dir() and entry.name.startswith(_DISCARDED_BACKUP_PREFIX):
            shutil.rmtree(entry.path, ignore_errors=True)


def clear_run(run_dir):
    """Removes what a training run wrote, so that --overwrite starts afresh."""
    discard_backup(run_dir)
    for name in RUN_OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(run_dir, name))
    for name in RUN_OUTPUT_DIRS:
        shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)


def discard_backup(run_dir):
    """Removes `backup/` atomically: renamed first, so a kill never leaves half of it."""
    backup_dir = os.path.join(run_dir, BACKUP_DIR)
    if not os.path.isdir(backup_dir):
        return
    discarded = os.path.join(run_dir, _DISCARDED_BACKUP_PREFIX + secrets.token_hex(6))
    os.replace(backup_dir, discarded)
    shutil.rmtree(discarded, ignore_errors=True)


def changed_options(saved_record, options):
    """The options that differ from an interrupted run's config.json, as "name: old -> new" lines.

    `options` is the new run's options (a dict, as config.json stores them, plus "backend").
    An option the saved run predates counts with the value such a run had, where that matters
    (`keras_vae.models.options.with_options_saved_before`).
    """
    new = json.loads(json.dumps(options))  # tuples become lists, as in config.json
    filled = with_options_saved_before(saved_record)
    changes = []
    for name, value in sorted(new.items()):
        if name in OPTIONS_FREE_ON_RESUME or name not in filled:
            continue
        if filled[name] != value:
            before = "" if name in saved_record else " (the run predates the option)"
            changes.append(f"{name}: {filled[name]!r}{before} -> {value!r}")
    return changes


def keep_history_before(history_path, epoch):
    """Rewrites a CSVLogger file keeping its header and the complete rows of epochs < `epoch`.

    Drops rows from epochs that the resumed run will train again, and a row that a
    kill cut short. Returns the number of rows kept.
    """
    if not os.path.exists(history_path):
        return 0
    with open(history_path, newline="") as f:
        text = f.read()
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    rows = []
    for row in reader:
        if None in row or any(row.get(name) in (None, "") for name in fields):
            continue  # cut short
        try:
            row_epoch = int(row["epoch"])
        except (KeyError, ValueError):
            continue
        if row_epoch < epoch and row_epoch == len(rows):
            rows.append(row)
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text_atomic(history_path, out.getvalue())
    return len(rows)


class DurableBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, safe against a kill at any moment.

    Each save writes the model's and optimizer's state (with EMA: the averaged weights in
    the model, the raw ones in the optimizer's slots) to its own file,
    `epoch_NNNN.weights.h5` (atomically), then `training_metadata.json`
    (atomically) naming that file: this is the commit point. Older state files
    are removed after it. So the directory always holds one complete, loadable
    state. Put it after every other callback, so that an epoch is committed
    only once its checkpoints and history row are written.

    The directory is not deleted at the end of training: `train()` calls
    `discard_backup` when the whole run, pictures included, is done.
    """

    METADATA = "training_metadata.json"

    def __init__(self, backup_dir, restore=True, averaged_weights=None):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.restore = restore  # False: someone else restores (a multi-process run)
        # The run's AveragedWeights callback (EMA), told when a restore puts the averaged
        # weights in the model, as they were when the epoch was backed up.
        self.averaged_weights = averaged_weights

    def saved_epoch(self):
        """The number of epochs the committed state has trained (0 when none is committed)."""
        return self._committed()[0]

    def _committed(self):
        path = os.path.join(self.backup_dir, self.METADATA)
        if not os.path.exists(path):
            return 0, None
        try:
            with open(path) as f:
                metadata = json.load(f)
            epoch, weights = int(metadata["epoch"]), metadata["weights"]
        except (ValueError, KeyError, TypeError) as error:
            raise UnreadableBackup(
                f"{path} is not a backup this version wrote ({error}); pass --overwrite to "
                "start the run afresh") from None
        return epoch, os.path.join(self.backup_dir, weights)

    def on_train_begin(self, logs=None):
        if self.restore:
            self._load_model()

    def committed_weights(self):
        """(epoch, path of the committed weights file or None)."""
        return self._committed()

    def _load_model(self):
        epoch, weights = self._committed()
        if weights is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(weights)
        except Exception as error:  # h5py and Keras raise many kinds
            raise UnreadableBackup(
                f"cannot restore the interrupted run from {weights}: {error}; pass --overwrite "
                "to start the run afresh") from None
        self.model._initial_epoch = epoch
        if self.averaged_weights is not None:
            self.averaged_weights.restored_averaged()

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch_{self._current_epoch:04d}.weights.h5"
        with atomic_path(os.path.join(self.backup_dir, name)) as temp_path:
            self.model.save_weights(temp_path, overwrite=True)
        write_json({"epoch": self._current_epoch, "batch": 0, "weights": name},
                   os.path.join(self.backup_dir, self.METADATA))
        for entry in os.scandir(self.backup_dir):
            if entry.name.endswith(".weights.h5") and entry.name != name and not entry.name.startswith("."):
                os.remove(entry.path)


def check_resumable(config, config_path):
    """Raises FileExistsError naming the options in which `config` differs from the interrupted run's."""
    with open(config_path) as f:
        saved = json.load(f)
    options = dict(dataclasses.asdict(config), backend=keras.backend.backend())
    changes = changed_options(saved, options)
    if changes:
        raise FileExistsError(
            f"{config.out} holds an interrupted run with other options ({'; '.join(changes)}). "
            "Run the same command to resume it, pass --overwrite to start afresh, or choose "
            "another --out."
        )

