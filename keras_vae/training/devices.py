"""Data-parallel training over every device of one or several processes (Keras' distribution API).

One process: `keras.distribution.DataParallel` over its devices splits each batch across them.

Several processes (hosts, or local processes standing in for them): each process first joins
JAX's distributed runtime (`jax.distributed.initialize`: Gloo collectives on CPU, NCCL on GPU),
then the same `DataParallel` spans the devices of every process. Keras' auto-sharding is turned
off (`auto_shard_dataset=False`): it only shards a `tf.data.Dataset`, and this library's inputs
are NumPy arrays and `keras.utils.PyDataset`s. Instead every process is fed its own slice of each
global batch (`keras_vae.training.shards`) and Keras' JAX trainer assembles the global batch with
`jax.make_array_from_process_local_data`. The gradient all-reduce is XLA's, inside the jitted
step; nothing here communicates except the start-up checks below (JAX's own collectives).
"""

import hashlib
import json
import os

import numpy as np

import keras

#: Environment variables read on every process (Keras' own names).
ADDRESSES_VARIABLE = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_PROCESSES_VARIABLE = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID_VARIABLE = "KERAS_DISTRIBUTION_PROCESS_ID"
#: Seconds without a heartbeat after which JAX's coordination service declares a process dead
#: and stops the others (JAX's default is 100).
HEARTBEAT_VARIABLE = "KERAS_VAE_HEARTBEAT_TIMEOUT_SECONDS"
DEFAULT_HEARTBEAT_SECONDS = 10
#: Seconds a process waits at start for all the others to join before giving up.
INIT_TIMEOUT_VARIABLE = "KERAS_VAE_INIT_TIMEOUT_SECONDS"
DEFAULT_INIT_TIMEOUT_SECONDS = 300
#: Set to 1 to let JAX find the processes from the cluster's own variables (SLURM, Open MPI, ...).
CLUSTER_VARIABLE = "KERAS_VAE_CLUSTER_DETECTION"
# Options that may differ between the processes of one run: "out" is only written by
# process 0, and paths and verbosity are local matters.
OPTIONS_FREE_ACROSS_PROCESSES = ("out", "verbose", "data_dir", "download")
_CONFIG_BYTES = 16384


class ProcessMismatch(ValueError):
    """The processes of one run were started with different options."""


def multi_process_requested():
    """Whether this process is one of several (KERAS_DISTRIBUTION_NUM_PROCESSES, or cluster detection)."""
    return NUM_PROCESSES_VARIABLE in os.environ or os.environ.get(CLUSTER_VARIABLE) == "1"


def initialize_processes():
    """Joins JAX's distributed runtime when the environment asks for several processes.

    Calls `jax.distributed.initialize` itself rather than `keras.distribution.initialize()` to
    pass a short heartbeat timeout: when a process dies (even by kill -9) the coordination
    service notices within $KERAS_VAE_HEARTBEAT_TIMEOUT_SECONDS (default 10) and ends the
    others with an error, instead of leaving them blocked in a collective. Returns
    (process index, process count); (0, 1) for a single process. Must run before JAX computes.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "multi-process data-parallel training runs on the JAX backend (keras.distribution); "
            f"this process uses {keras.backend.backend()!r}, and Keras {keras.__version__} has no "
            "multi-process distribution for it. Use --backend jax."
        )
    import jax

    if not multi_process_requested():
        return 0, 1
    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    heartbeat = int(os.environ.get(HEARTBEAT_VARIABLE, DEFAULT_HEARTBEAT_SECONDS))
    kwargs = dict(heartbeat_timeout_seconds=heartbeat, initialization_timeout=int(
        os.environ.get(INIT_TIMEOUT_VARIABLE, DEFAULT_INIT_TIMEOUT_SECONDS)))
    if NUM_PROCESSES_VARIABLE in os.environ:
        addresses = os.environ.get(ADDRESSES_VARIABLE, "")
        num_processes = int(os.environ[NUM_PROCESSES_VARIABLE])
        if not addresses:
            raise ValueError(f"{NUM_PROCESSES_VARIABLE} is set: set {ADDRESSES_VARIABLE} too "
                             "(host:port of every process, the first one the coordinator)")
        if "," in addresses and len(addresses.split(",")) != num_processes:
            raise ValueError(f"{ADDRESSES_VARIABLE} lists {len(addresses.split(','))} addresses "
                             f"but {NUM_PROCESSES_VARIABLE} is {num_processes}")
        if PROCESS_ID_VARIABLE not in os.environ:
            raise ValueError(f"{NUM_PROCESSES_VARIABLE} is set: set {PROCESS_ID_VARIABLE} too "
                             f"(0 to {num_processes - 1}, a different one for each process)")
        kwargs.update(coordinator_address=addresses.split(",")[0], num_processes=num_processes,
                      process_id=int(os.environ[PROCESS_ID_VARIABLE]))
    jax.distributed.initialize(**kwargs)  # else: JAX's cluster detection (SLURM, Open MPI, ...)
    return jax.process_index(), jax.process_count()


def process_index():
    import jax

    return jax.process_index() if keras.backend.backend() == "jax" else 0


def process_count():
    import jax

    return jax.process_count() if keras.backend.backend() == "jax" else 1


def is_writer():
    """Whether this process writes the run directory (process 0 of a multi-process run)."""
    return process_index() == 0


def check_same_options(options):
    """Raises ProcessMismatch naming the options in which this run's processes differ.

    `options` is a JSON-able dict (the run's config). Every process all-gathers every other's
    options (a fixed-size buffer, with JAX's `process_allgather`) and compares them, so every
    process stops, with the same message, before training starts.
    """
    if process_count() == 1:
        return
    from jax.experimental import multihost_utils

    shared = {k: v for k, v in options.items() if k not in OPTIONS_FREE_ACROSS_PROCESSES}
    text = json.dumps(shared, sort_keys=True).encode()
    if len(text) > _CONFIG_BYTES - 32:
        text = json.dumps({"sha256": hashlib.sha256(text).hexdigest()}).encode()
    buffer = np.zeros(_CONFIG_BYTES, np.uint8)
    buffer[: len(text)] = np.frombuffer(text, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buffer))
    records = [json.loads(bytes(row).rstrip(b"\0")) for row in gathered]
    differences = []
    for index, record in enumerate(records[1:], start=1):
        for name in sorted(set(records[0]) | set(record)):
            if records[0].get(name) != record.get(name):
                differences.append(f"{name}: {records[0].get(name)!r} on process 0, "
                                   f"{record.get(name)!r} on process {index}")
    if differences:
        raise ProcessMismatch("the processes of this run were started with different options ("
                              + "; ".join(differences) + "); start every process with the same "
                              "command")


def check_replicas_agree(model):
    """Checks that every process ends with the same weights and optimizer state.

    Each process hashes its own copy (the replicas on its devices) and all-gather the
    hashes; raises RuntimeError if they differ. Returns the hash (hex), printed by the caller.
    """
    from jax.experimental import multihost_utils

    digest = hashlib.sha256()
    variables = [*model.variables, *(model.optimizer.variables if model.optimizer else [])]
    for variable in variables:
        value = variable.value
        for shard in value.addressable_shards:
            digest.update(np.ascontiguousarray(np.asarray(shard.data)).tobytes())
            break  # replicated: one local copy stands for this process
    mine = np.frombuffer(digest.digest(), np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(mine))
    if any((row != gathered[0]).any() for row in gathered):
        raise RuntimeError("the processes ended with different weights: " + ", ".join(
            bytes(row).hex()[:16] for row in gathered))
    return digest.hexdigest()


def use_all_devices(batch_size):
    """Data-parallel training over every device of every process (Keras' `DataParallel`).

    Call `initialize_processes()` first when several processes take part. Each process then
    feeds its own `batch_size / process_count()` rows of every global batch of `batch_size`
    rows (auto-sharding off). Returns the global devices the batch is split across.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "data-parallel training runs on the JAX backend (keras.distribution); "
            f"this process uses {keras.backend.backend()!r}. Use --backend jax."
        )
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise ValueError(
            f"--batch-size {batch_size} must divide evenly across the {len(devices)} devices"
        )
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
    processes = process_count()
    where = f" of {processes} processes" if processes > 1 else ""
    print(f"Data-parallel training on {len(devices)} devices{where}: {', '.join(devices)}")
    return devices
