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

import contextlib
import hashlib
import json
import os
import sys
import threading

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

    together = True  # every process stops with it, at the same point


class StartupFailed(RuntimeError):
    """Process 0 could not start the run (its run directory's checks); every process stops
    with its reason."""

    together = True


def multi_process_requested():
    """Whether this process is one of several (KERAS_DISTRIBUTION_NUM_PROCESSES, or cluster detection)."""
    return NUM_PROCESSES_VARIABLE in os.environ or os.environ.get(CLUSTER_VARIABLE) == "1"


def initialize_processes():
    """Joins JAX's distributed runtime when the environment asks for several processes.

    Calls `jax.distributed.initialize` itself rather than `keras.distribution.initialize()` to
    pass a short heartbeat timeout: when a process dies (even by kill -9) the coordination
    service notices within $KERAS_VAE_HEARTBEAT_TIMEOUT_SECONDS (default 10) and ends the
    others with an error, instead of leaving them blocked in a collective. JAX ends them with
    a fatal log message and a C++ stack trace; `keras_vae.training.launcher.guard_stderr`
    turns that into one line saying which process stopped answering and how to resume.
    Returns (process index, process count); (0, 1) for a single process. Must run before
    JAX computes.
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
    # JAX's preemption service would take SIGTERM for itself; keras-vae handles SIGTERM and
    # SIGINT itself, every process stopping at the same step (StopAgreement).
    jax.config.update("jax_enable_preemption_service", False)
    from keras_vae.training.launcher import guard_stderr

    guard_stderr(os.environ.get(PROCESS_ID_VARIABLE, "?"), heartbeat)
    # else: JAX's cluster detection (SLURM, Open MPI, ...). Joining waits for every process;
    # it runs in a thread so that a signal meanwhile is handled at once.
    _in_a_thread(jax.distributed.initialize, **kwargs)
    return jax.process_index(), jax.process_count()


def _in_a_thread(function, **kwargs):
    """`function(**kwargs)`, run in a thread while this one waits for it in short slices, so
    that Python's signal handlers (which run in the main thread, between its bytecodes, not
    during a long call into C++) can stop the process meanwhile."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function(**kwargs)
        except BaseException as error:  # handed to the caller
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


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


#: Keys and barriers of this library in JAX's coordination service (its key-value store).
_START_KEY = "keras_vae/start"
_STOP_KEYS = "keras_vae/stop/"
_STOP_BARRIER = "keras_vae/stop_check"
_WAIT_MS = 3_600_000  # a process that died is noticed by the heartbeat long before


def _client():
    from jax._src import distributed

    return distributed.global_state.client


@contextlib.contextmanager
def start_shared():
    """On process 0 of several: the outcome of its start-up checks (the run directory's lock,
    a finished run, changed options), run in the block, reaches every process.

    The block gets a function to call once the checks have passed; the others are waiting
    for it (`wait_for_process_zero`) before they train. If the block raises before that,
    the others receive the reason, and the error becomes a `StartupFailed` with the same
    message, so that every process stops with it, together. One process: nothing is shared.
    """
    if process_count() == 1:
        yield lambda: None
        return
    shared = []

    def started(reason=None):
        if not shared:
            _client().key_value_set(_START_KEY, "ok" if reason is None else "failed " + reason)
            shared.append(reason)

    try:
        yield started
    except Exception as error:
        if shared:
            raise
        started(str(error) or type(error).__name__)
        raise StartupFailed(str(error)) from error


def wait_for_process_zero():
    """On a process other than 0: waits until process 0 has checked its run directory; raises
    `StartupFailed` with process 0's reason if it cannot start."""
    outcome = _in_a_thread(_client().blocking_key_value_get, key=_START_KEY,
                           timeout_in_ms=_WAIT_MS)
    if outcome != "ok":
        raise StartupFailed(f"process 0 cannot start this run: {outcome.split(' ', 1)[-1]}")


class StopAgreement:
    """Which step every process of a run stops at after a signal (`StopOnSignal`'s `agree`).

    A signal may reach the processes at different steps, or only one of them (a scheduler
    preempting one host), but in data-parallel training every process must leave `fit` after
    the same step, or the others wait forever in the next step's all-reduce. Every process
    calls this at the same points (each step's end and each epoch's end): check j. A process
    that got a signal first writes "j signal" under its own key in JAX's coordination service,
    then every process waits at one barrier and reads every key. A key with j' <= j was
    written before its writer reached barrier j, so after that barrier every process reads
    it: all of them decide to stop at the same check, the first j that has such a key.
    The cost is one barrier and one read, host to coordinator, per step (no device work).
    """

    def __init__(self):
        self.check = 0
        self.sent = False

    def __call__(self, signum):
        client = _client()
        if signum and not self.sent:
            client.key_value_set(f"{_STOP_KEYS}{process_index()}", f"{self.check} {signum}")
            self.sent = True
        client.wait_at_barrier(_STOP_BARRIER, _WAIT_MS)
        votes = []
        for key, value in client.key_value_dir_get(_STOP_KEYS):
            check, sent = (int(word) for word in value.split())
            if check <= self.check:
                votes.append((int(key.rsplit("/", 1)[1]), sent))
        self.check += 1
        if not votes:
            return 0, None
        mine = [vote for vote in votes if vote[0] == process_index()]
        sender, sent = (mine or sorted(votes))[0]
        return sent, None if mine else sender


def stop_agreement():
    """A `StopAgreement` in a run of several processes, else None."""
    return StopAgreement() if process_count() > 1 else None


def leave(status, together=False):
    """Ends this process of a multi-process run now, with exit `status`.

    together: every process is stopping at this same point (a signal, a start-up check, a
    mismatch), so each leaves JAX's distributed runtime properly first; its shutdown
    barrier keeps the coordination service on process 0 up until all have left, so that
    no process sees it vanish. Then it exits as usual (open files, TensorBoard's included,
    are flushed). Otherwise (a peer failed) JAX's shutdown barrier would wait for the
    missing process, and the process exits at once.
    """
    import jax

    sys.stdout.flush()
    sys.stderr.flush()
    if together:
        if jax.distributed.is_initialized():
            with contextlib.suppress(Exception):
                jax.distributed.shutdown()
        sys.exit(status)
    os._exit(status)
