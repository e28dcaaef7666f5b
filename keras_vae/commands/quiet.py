"""The preamble of the commands that use Keras: the backend, and quiet frameworks.

`add_backend_option` and `add_verbose_option` declare ``--backend`` and ``--verbose``;
`start_keras` chooses the backend, sets torch's threads and OpenMP's wait policy
(`keras_vae.commands.threads`) and imports the frameworks quietly, before Keras.

The frameworks' start-up log lines stay out of the commands' output unless ``--verbose``.

TensorFlow 2.21 writes lines such as "Could not find cuda drivers on your machine"
and "oneDNN custom operations are on" through C++ absl logging while it is imported,
before ``TF_CPP_MIN_LOG_LEVEL`` or Python's ``absl.logging`` can reach them. So
`quiet_frameworks` sends file descriptor 2 to the null device while TensorFlow is
imported, then gives it back: everything written to stderr afterwards, the commands'
own errors included, shows as before. It changes no computation (``TF_ENABLE_ONEDNN_OPTS``
is left alone).
"""

import contextlib
import importlib.util
import os
import sys

from keras_vae.commands.threads import set_torch_threads


BACKENDS = ("tensorflow", "jax", "torch")


def add_backend_option(parser, help="Keras backend (default: $KERAS_BACKEND, else tensorflow)"):
    """``--backend``: the Keras backend of this process."""
    parser.add_argument("--backend", choices=BACKENDS, help=help)


def start_keras(args, backend=None):
    """Sets the Keras backend (``backend``, else ``args.backend``, else $KERAS_BACKEND), torch's
    threads and OpenMP's wait policy (`keras_vae.commands.threads`), and imports the frameworks
    quietly unless ``args.verbose``; call before importing Keras."""
    backend = backend or getattr(args, "backend", None)
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    try:
        set_torch_threads()
    except ValueError as exc:  # a malformed $KERAS_VAE_TORCH_THREADS: one line, exit status 2
        print(f"keras-vae: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    quiet_frameworks(args.verbose)


def add_verbose_option(parser):
    """``--verbose``: show the frameworks' own log lines."""
    parser.add_argument("--verbose", action="store_true",
                        help="show the frameworks' own log lines (TensorFlow, absl) on stderr")


@contextlib.contextmanager
def stderr_discarded():
    """Within the block, whatever the process writes to file descriptor 2 is discarded."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def quiet_frameworks(verbose=False):
    """Imports TensorFlow (when installed) with its log lines discarded; call before Keras.

    With ``verbose`` it does nothing, and the frameworks log as they do by default.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's later C++ messages
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    with stderr_discarded():
        import tensorflow  # noqa: F401
    import absl.logging  # TensorFlow's Python-side absl warnings

    absl.logging.set_verbosity(absl.logging.ERROR)
