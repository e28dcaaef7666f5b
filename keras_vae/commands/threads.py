"""torch's CPU threads in the ``keras-vae`` commands: how many, and how the idle ones wait.

torch runs its CPU kernels on an OpenMP team (GNU libgomp in the PyPI wheels), by default one
thread per core. A thread that reaches the end of a parallel region before the others waits
for them, and unless ``OMP_WAIT_POLICY`` says otherwise libgomp makes it spin first (up to
300,000 polls, milliseconds) and only then sleep. On idle cores the spin is cheap; on cores
that other processes share, the thread being waited for is often not running, and the
spinning one burns the time slice it needs, at every one of the thousands of small parallel
regions of a training step: the conv models trained 20-30 times slower than on TensorFlow.

`set_torch_threads`, called by the commands' preamble (`keras_vae.commands.quiet.start_keras`)
before torch is imported, makes OpenMP's idle threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``)
and, on the torch backend, gives torch `DEFAULT_THREADS` intra-op thread(s). Each is a
default only:

* ``OMP_WAIT_POLICY`` set in the environment (``ACTIVE`` or ``PASSIVE``) is kept;
* ``KERAS_VAE_TORCH_THREADS=N`` gives torch N threads, and ``0`` leaves torch its own
  choice (one per core, or ``OMP_NUM_THREADS``);
* ``OMP_NUM_THREADS`` set in the environment (and no ``KERAS_VAE_TORCH_THREADS``) is left to
  torch, which reads it itself.

This module imports nothing heavy; torch is imported only on the torch backend, to set its
thread count.
"""

import os

#: The environment variable that overrides torch's intra-op thread count in keras-vae.
THREADS_VARIABLE = "KERAS_VAE_TORCH_THREADS"

#: torch's intra-op threads when neither $KERAS_VAE_TORCH_THREADS nor $OMP_NUM_THREADS is set.
DEFAULT_THREADS = 1

#: OpenMP's wait policy when $OMP_WAIT_POLICY is not set: idle threads sleep instead of spinning.
WAIT_POLICY = "PASSIVE"


def torch_threads(environ=None):
    """The intra-op thread count keras-vae gives torch, or None to leave torch its own choice.

    ``$KERAS_VAE_TORCH_THREADS`` (a whole number ≥ 0; 0 means torch's own choice) wins;
    otherwise ``$OMP_NUM_THREADS``, when set, is left to torch (None); otherwise
    `DEFAULT_THREADS`. Raises ValueError for a value that is not a whole number ≥ 0.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(THREADS_VARIABLE, "").strip()
    if value:
        try:
            count = int(value)
        except ValueError:
            count = -1
        if count < 0:
            raise ValueError(f"{THREADS_VARIABLE} must be a whole number ≥ 0 (0: torch's own "
                             f"choice), not {value!r}")
        return count or None
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None
    return DEFAULT_THREADS


def set_wait_policy(environ=None):
    """Sets ``OMP_WAIT_POLICY`` to `WAIT_POLICY` unless it is set; returns the value in force.

    OpenMP reads it once, when its library loads (with torch): call before torch is imported.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("OMP_WAIT_POLICY", "").strip():
        environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return environ["OMP_WAIT_POLICY"]


def set_torch_threads(backend=None):
    """The commands' thread settings: OpenMP's wait policy always, torch's thread count when
    ``backend`` (default: $KERAS_BACKEND) is torch. Call before Keras and torch are imported.

    Returns the thread count set, or None when torch keeps its own.
    """
    count = torch_threads()  # a malformed $KERAS_VAE_TORCH_THREADS fails before anything changes
    set_wait_policy()
    if (backend or os.environ.get("KERAS_BACKEND")) != "torch" or count is None:
        return None
    import torch

    torch.set_num_threads(count)
    return count
