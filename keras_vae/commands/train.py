"""Train a VAE with model.fit and write a run directory.

The run directory gets config.json, model.keras (best validation loss),
last.keras, history.csv, TensorBoard logs, samples.png and reconstructions.png.
Ctrl-C (SIGINT) or SIGTERM stops training at the next step boundary, with one line
saying where, and exit status 130 or 143 (a second one stops at once). Run the same
command again after an interruption (a signal, a crash, even kill -9) to continue
after the last completed epoch; --overwrite starts afresh.
"""

import argparse
import contextlib
import dataclasses
import os
import signal
import sys

from keras_vae.commands.quiet import add_verbose_option
from keras_vae.commands.quiet import add_backend_option
from keras_vae.commands.quiet import start_keras
from keras_vae.data.options import IMAGE_OPTION_NAMES
from keras_vae.models.options import OPTION_NAMES
from keras_vae.data.options import ImageOptions
from keras_vae.models.options import HIERARCHICAL_OPTION_NAMES
from keras_vae.models.options import HierarchicalOptions
from keras_vae.models.options import ModelOptions
from keras_vae.models.options import check_model_choice
from keras_vae.core.options import OptionError

EXAMPLES = """
examples:
  # the built-in 8×8 digits (no network, no files), about 10 s
  keras-vae train --out runs/digits

  # MNIST through TFDS (--download fetches it once), dynamically binarized, on JAX
  keras-vae train --backend jax --dataset mnist --data-dir data/tfds --download \\
      --dynamic-binarization --latent-dim 50 --epochs 100 --out runs/mnist-tfds

  # IWAE, a learned mixture prior, gated layers, all 60k images (docs/model-quality.md)
  keras-vae train --backend jax --dataset data/mnist.npz --dynamic-binarization \\
      --val-fraction 0 --latent-dim 50 --hidden-units 512 512 512 --gated --objective iwae \\
      --num-samples 5 --prior mixture --kl-warmup-steps 5000 --epochs 140 \\
      --lr-schedule cosine --out runs/mnist

  # your own images: a folder of PNG/JPEG files, class subfolders as labels
  keras-vae train --dataset photos/ --image-size 32 32 --color-mode rgb \\
      --architecture conv --likelihood discretized_logistic --out runs/photos

  # class-conditional: p(x|y) on the labels; then keras-vae generate decoder.onnx --label 7
  keras-vae train --dataset data/mnist.npz --conditional --dynamic-binarization --out runs/cvae

  # or a .npz with x_train, x_test (uint8 0-255 or float 0-1)
  keras-vae train --dataset my_images.npz --architecture conv --out runs/mine

  # a hierarchical VAE (top-down groups of latents) on binarized MNIST, and on 8-bit photos
  keras-vae train --model hierarchical --num-groups 4 --latent-dim 32 --width 256 \
      --dataset data/mnist.npz --dynamic-binarization --grad-clip 200 --out runs/mnist-hvae
  keras-vae train --model hierarchical --architecture conv --num-resolutions 3 --num-groups 6 \
      --likelihood logistic_mixture --dataset data/photo_patches --out runs/photos-hvae

  # data-parallel over all devices (JAX); here 2 virtual CPU devices
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
      keras-vae train --backend jax --data-parallel --out runs/dp

  # data-parallel across 2 local processes (JAX's distributed runtime); for several
  # hosts, set KERAS_DISTRIBUTION_* on each instead (docs/scaling-out.md)
  keras-vae train --backend jax --num-processes 2 --out runs/mp

  # watch it: tensorboard --logdir runs/mnist/logs
"""


PROG = "keras-vae train"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="digits",
                      help="'digits' (built in), a path to a .npz, a folder of images, or a "
                           "TFDS name (default: digits)")
    data.add_argument("--data-dir", help="TFDS data directory holding the prepared dataset")
    data.add_argument("--download", action="store_true", help="let TFDS download the dataset")
    data.add_argument("--binarize", action="store_true",
                      help="binarize the training data once (seeded); see --dynamic-binarization")
    data.add_argument("--conditional", action="store_true",
                      help="a class-conditional VAE, p(x|y) for the dataset's labels y (digits, "
                           "a .npz with y_train, class subfolders, a labelled TFDS dataset); "
                           "sample a class with keras-vae generate --label")
    data.add_argument("--val-fraction", type=float, default=0.1,
                      help="fraction of the training split held out for validation; 0 trains "
                           "on all of it and keeps the last epoch as model.keras (default: 0.1)")

    add_model_options(parser.add_argument_group(
        "hierarchical model (--model hierarchical; it also reads --latent-dim, --architecture, "
        "--likelihood, --mixture-components, --decoder-std, --beta, --kl-warmup-steps, "
        "--dynamic-binarization)"),
        HierarchicalOptions)
    add_model_options(parser.add_argument_group("image folders"), ImageOptions)
    add_model_options(parser.add_argument_group("model"))

    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=30)
    training.add_argument("--batch-size", type=int, default=128)
    training.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    training.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    training.add_argument("--ema", type=float, default=0.0, metavar="MOMENTUM",
                          help="keep an exponential moving average of the weights (Adam's "
                               "use_ema, e.g. 0.999): validation, model.keras, checkpoints and "
                               "everything that loads them use the averaged weights "
                               "(default: 0, off)")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--data-parallel", action="store_true",
                          help="split each batch across all devices (JAX backend; "
                               "keras.distribution.DataParallel)")
    training.add_argument("--num-processes", type=int, default=0, metavar="N",
                          help="start N local processes of one data-parallel run (JAX; implies "
                               "--data-parallel), their output prefixed by rank; for several "
                               "hosts see docs/scaling-out.md (default: this process only)")
    training.add_argument("--steps-per-execution", type=int, default=1, metavar="N",
                          help="training steps per compiled call (Keras compile's "
                               "steps_per_execution; JAX and TensorFlow): fewer round trips "
                               "on a GPU, the same math (default: 1)")
    training.add_argument("--checkpoint-every", type=int, default=0, metavar="EPOCHS",
                          help="also save checkpoints/epoch_NNNN.keras every EPOCHS epochs, "
                               "e.g. for benchmarks/quality.py (default: off)")
    add_backend_option(training)
    training.add_argument("--out", default="runs/digits", help="run directory (default: runs/digits)")
    training.add_argument("--overwrite", action="store_true",
                          help="start afresh in --out, replacing a finished or interrupted run")
    training.add_argument("--quiet", action="store_true", help="one line per epoch, no progress bar")
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "steps_per_execution"):
        if getattr(args, name) < 1:
            parser.error(f"{flag(name)} must be at least 1")
    try:  # the model options are checked by their declaration
        options = ModelOptions(**{name: getattr(args, name) for name in OPTION_NAMES})
        images = ImageOptions(**{name: getattr(args, name) for name in IMAGE_OPTION_NAMES})
        hierarchy = HierarchicalOptions(**{name: getattr(args, name)
                                           for name in HIERARCHICAL_OPTION_NAMES})
        # converted: "--decoder-std 0.5" gives 0.5
        for converted in (options.model_kwargs(), dataclasses.asdict(images),
                          dataclasses.asdict(hierarchy)):
            vars(args).update(converted)
        check_model_choice(args)
    except OptionError as error:
        parser.error(f"{flag(error.option)} must be {error.requirement}")
    if not 0.0 <= args.ema < 1.0:
        parser.error("--ema must be 0 (off) or a momentum in (0, 1), e.g. 0.999")
    if args.checkpoint_every < 0:
        parser.error("--checkpoint-every must be 0 (off) or a number of epochs")
    if args.num_processes < 0:
        parser.error("--num-processes must be at least 1")
    if args.num_processes:
        backend = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
        if backend != "jax":
            parser.error(f"--num-processes runs on the JAX backend (--backend jax); Keras has no "
                         f"multi-process distribution for {backend!r}")
        if "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ:
            parser.error("--num-processes starts the processes itself: unset "
                         "KERAS_DISTRIBUTION_NUM_PROCESSES, or run without --num-processes")
    return args


def without_option(argv, name):
    """`argv` without the option `name` and its value (`--name V` or `--name=V`)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            kept.append(arg)
    return kept


def flag(name):
    """The command-line flag of an option: latent_dim -> --latent-dim."""
    return "--" + name.replace("_", "-")


def add_model_options(group, options=ModelOptions):
    """One flag per field of `options` (`ModelOptions`, `ImageOptions`), with its default,
    help text and choices.

    A bool option (default False) is a switch; a tuple takes one or more
    integers; a number that also takes words (--decoder-std learned) is read as
    text and converted by `ModelOptions`.
    """
    for field in dataclasses.fields(options):
        default, choices, text = field.default, field.metadata["choices"], field.metadata["help"]
        if isinstance(default, bool):
            group.add_argument(flag(field.name), action="store_true", help=text)
            continue
        if isinstance(default, tuple):
            kind, shown = dict(type=int, nargs="+"), " ".join(map(str, default)) or "none"
            default = list(default)
        elif isinstance(default, str):
            kind, shown = dict(choices=choices), default
        else:
            kind, shown = dict(type=str if choices else type(default)), str(default)
        group.add_argument(flag(field.name), default=default, help=f"{text} (default: {shown})",
                           **kind)


def train_config(args):
    """The `keras_vae.training.TrainConfig` of parsed arguments (this imports Keras)."""
    from keras_vae.training.run import TrainConfig

    options = {k: v for k, v in vars(args).items()
               if k not in ("backend", "quiet", "verbose", "num_processes")}
    return TrainConfig(**options, verbose=2 if args.quiet else "auto")


def _multi_process():
    from keras_vae.training.devices import multi_process_requested

    return multi_process_requested()


# Words in the errors of JAX's collectives and coordination service when a peer is gone.
PEER_FAILURE_SIGNS = ("Gloo", "NCCL", "Connection closed", "Connection reset", "heartbeat",
                      "coordination service", "barrier", "DEADLINE_EXCEEDED", "UNAVAILABLE")


def stop(message, status=1, together=False):
    """Exits with `message` on standard error and exit `status`.

    One of several processes exits at once (`keras_vae.training.devices.leave`). together:
    every process stops at this same point (a signal, a failed start-up check, options that
    differ), so they leave JAX's distributed runtime together first; otherwise (this process
    failed alone, or lost a peer) it skips JAX's shutdown barrier, which would wait for the
    others, and they stop when JAX's coordination service sees this process gone.
    """
    if not _multi_process():
        if status == 1:
            sys.exit(message)
        print(message, file=sys.stderr, flush=True)
        sys.exit(status)
    if not together and any(sign in message for sign in PEER_FAILURE_SIGNS):
        from keras_vae.training.launcher import REMEDY

        message += ("\nerror: another process of this run stopped or became unreachable, so "
                    f"this one stops too; {REMEDY}")
    print(_with_rank(message), file=sys.stderr, flush=True)
    from keras_vae.training.devices import leave

    leave(status, together)


def _interrupt(signum, frame):
    """SIGINT or SIGTERM outside the training steps (starting up, writing the final files) or a
    second one during them: prints one line and exits now, with 128 + the signal.

    Any moment is safe (the run directory survives kill -9 at any moment), and exiting from
    the handler, rather than raising into whatever code runs (an import, a library's
    `except:`), always ends the process.
    """
    global _line_printed
    if not _line_printed:
        _line_printed = True
        callbacks = sys.modules.get("keras_vae.training.callbacks")
        running = callbacks.StopOnSignal.running if callbacks else None
        name = signal.Signals(signum).name
        if running is not None:
            line = running.at_once_line(signum)
        elif callbacks is not None and callbacks.StopOnSignal.fits_ended:
            line = (f"stopped after training, while writing the final files ({name}); run the "
                    "same command again to finish")
        else:
            line = f"stopped before training began ({name}); run the same command again to resume"
        # Straight to the file descriptors: the interrupted code may be writing to the same
        # buffered stream, which Python's buffers refuse to re-enter.
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.write(2, (_with_rank(line) + "\n").encode())
    os._exit(128 + signum)


_line_printed = False  # the one line about a signal is out; a later signal exits silently


def _with_rank(line):
    """`line`, followed by "[process i]" in one of several processes (known from the
    environment, as `keras_vae.training.devices.multi_process_requested` knows it, without
    importing Keras)."""
    if ("KERAS_DISTRIBUTION_NUM_PROCESSES" not in os.environ
            and os.environ.get("KERAS_VAE_CLUSTER_DETECTION") != "1"):
        return line
    jax = sys.modules.get("jax")
    rank = (jax.process_index() if jax is not None and jax.distributed.is_initialized()
            else os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "?"))
    return f"{line} [process {rank}]"


def stopped(interruption):
    """Exits after a stop at a step boundary (`TrainingStopped`) with its one line and
    128 + the signal."""
    global _line_printed
    _line_printed = True
    if sys.stdout.isatty():
        print(flush=True)  # after a progress bar's line
    stop(str(interruption), interruption.exit_status, together=interruption.together)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.num_processes:
        from keras_vae.training.launcher import launch

        train_args = without_option(argv, "--num-processes")
        if "--data-parallel" not in train_args:
            train_args.append("--data-parallel")
        if "--backend" not in train_args:
            train_args += ["--backend", "jax"]
        sys.exit(launch(args.num_processes, train_args))
    # Until training begins (and once it has ended) SIGINT and SIGTERM stop at once; during
    # training they stop at the next step boundary (keras_vae.training.callbacks.StopOnSignal).
    previous = {signum: signal.signal(signum, _interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        start_keras(args)
        from keras_vae.training.run import train

        config = train_config(args)
        vae = train(config)
    except KeyboardInterrupt as interruption:  # TrainingStopped: stopped at a step boundary
        if not hasattr(interruption, "exit_status"):
            raise
        stopped(interruption)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        stop(f"error: {error}", together=getattr(error, "together", False))
    except BaseException:
        if _multi_process():
            import traceback

            traceback.print_exc()
            stop("error: this process failed (above)")
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    from keras_vae.training.devices import is_writer

    if not is_writer():
        print(f"\nTraining done; process 0 wrote the run directory ({vae.count_params()} weights)")
        return
    print(f"\nRun directory: {os.path.abspath(config.out)}")
    print(f"  pictures: {os.path.join(config.out, 'samples.png')}, "
          f"{os.path.join(config.out, 'reconstructions.png')}")
    print(f"  next: keras-vae evaluate {config.out}")


if __name__ == "__main__":
    main()
