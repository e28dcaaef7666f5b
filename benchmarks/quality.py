"""Model quality against training time: the test NLL of runs' checkpoints, side by side.

Train with --checkpoint-every (see docs/model-quality.md), then this script measures
every checkpoints/epoch_NNNN.keras and each run's best model.keras on the same --images
test images (evenly spaced through the test split) with K importance samples, reads
each epoch's training time, CPU time and peak memory from history.csv, and prints one Markdown
table: run, model class, trained parameters, epoch, minutes of training (wall), CPU-minutes
of training (user + system time of the training process: comparable between runs that shared
their cores with other work; "?" for runs made before history.csv had cpu_seconds), peak RSS
of training, test ELBO and test NLL ± standard error in nats per example, and bits/dim.
Every row uses the same images and seed, so the differences between rows are less
noisy than each row's error suggests.
For the headline number, run keras-vae evaluate with K = 5000 on the whole test set.

examples:
  python benchmarks/quality.py runs/mnist_iwae
  python benchmarks/quality.py runs/mnist-vae runs/mnist-hvae --num-samples 1000 --images 10000
  python benchmarks/quality.py runs/mnist_iwae --num-samples 5000 --images 10000   # slow
"""

import argparse
import glob
import math
import os
import re
import sys
import time

from common import machine_line
from common import markdown_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run directories trained with --checkpoint-every; several runs "
                             "(e.g. the single-latent and the hierarchical model) side by side")
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="importance samples K per image (default: 1000)")
    parser.add_argument("--images", type=int, default=1000,
                        help="N test images, evenly spaced through the split (default: 1000)")
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default="tensorflow",
                        help="Keras backend for the measurement (default: tensorflow, the "
                             "fastest for importance sampling on CPU here)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.images < 1:
        parser.error("--num-samples and --images must be at least 1")
    for run in args.runs:
        if not os.path.isfile(os.path.join(run, "history.csv")):
            parser.error(f"{run} has no history.csv; is it a run directory?")
    return args


def checkpoints(run_dir):
    """[(epoch, path)] for checkpoints/epoch_NNNN.keras, in epoch order, then the best model."""
    found = []
    for path in glob.glob(os.path.join(run_dir, "checkpoints", "epoch_*.keras")):
        match = re.search(r"epoch_(\d+)\.keras$", path)
        if match:
            found.append((int(match.group(1)), path))
    found.sort()
    best = os.path.join(run_dir, "model.keras")
    if os.path.exists(best):
        found.append(("best", best))
    return found


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows, measured, notes = [], "nll", []
    for run in args.runs:
        run_rows, measured, note = measure_run(run, args)
        rows += run_rows
        notes.append(note)
    print(f"\n### Test log-likelihood against training time: {', '.join(args.runs)}\n")
    print(f"{machine_line()}; measured on the {backend_name(args.backend)} backend\n")
    print("\n".join(notes) + "\n")
    column = "test NLL" if measured == "nll" else "test cross-entropy (grey images, not an NLL)"
    print(markdown_table(["run", "model", "parameters", "epoch", "training min",
                          "training CPU min", "peak RSS MiB", "test ELBO", column, "bits/dim"],
                         rows))


def measure_run(run, args):
    """The table rows of one run's checkpoints, the measured quantity, and a line about the run."""
    from keras_vae.evaluation.evaluate import measure
    from keras_vae.evaluation.evaluate import spread_subset
    from keras_vae.evaluation.evaluate import test_images
    from keras_vae.training.run_directory import load_vae
    from keras_vae.training.run_directory import logged_values
    from keras_vae.training.run_directory import read_run_config

    history = os.path.join(run, "history.csv")
    minutes = [seconds / 60 for seconds in logged_values(history, "elapsed_seconds")]
    cpu_minutes = [seconds / 60 for seconds in logged_values(history, "cpu_seconds")]
    peaks = logged_values(history, "peak_rss_mib")
    val_losses = logged_values(history, "val_loss")
    # model.keras holds the best validation epoch, or the last one for a run without validation.
    best_epoch = 1 + val_losses.index(min(val_losses)) if val_losses else len(minutes) or None
    best_label = "best" if val_losses else "last"
    config = read_run_config(run)
    points = checkpoints(run)
    if not points:
        sys.exit(f"error: no checkpoints/epoch_*.keras or model.keras in {run}")

    rows, images, measured = [], None, "nll"
    for epoch, path in points:
        started = time.perf_counter()
        vae = load_vae(path)
        if images is None:
            images = test_images(vae, config.get("dataset", "digits"), config.get("data_dir"),
                                 seed=args.seed, binarized=config.get("binarize", False))[0]
            images = spread_subset(images, args.images)
        metrics = measure(vae, images, args.num_samples, seed=args.seed, verbose=False)
        measured = "nll" if "nll" in metrics else "cross_entropy"  # see keras_vae.core.likelihood.is_likelihood
        number = best_epoch if epoch == "best" else epoch
        known = number and number <= len(minutes)
        trained = f"{minutes[number - 1]:.1f}" if known else "?"
        cpu = f"{cpu_minutes[number - 1]:.1f}" if known and number <= len(cpu_minutes) else "?"
        peak = f"{peaks[number - 1]:,.0f}" if known and number <= len(peaks) else "?"
        label = f"{number} ({best_label})" if epoch == "best" else str(epoch)
        bits = f"{metrics['bits_per_dim']:.3f}" if "bits_per_dim" in metrics else "–"
        rows.append([os.path.basename(os.path.normpath(run)), type(vae).__name__,
                     f"{trainable_parameters(vae):,}", label, trained, cpu, peak,
                     f"{metrics['elbo']:.2f}",
                     f"{metrics[measured]:.2f} ± {metrics[measured + '_standard_error']:.2f}", bits])
        print(f"{run} epoch {label}: {measured} {metrics[measured]:.2f} nats "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    note = (f"- `{run}`: {describe_run(config)}. Test: {len(images)} test images evenly spaced "
            f"through the split, K = {args.num_samples} importance samples, nats per example.")
    return rows, measured, note


def trainable_parameters(model):
    """The number of trained weights (the KL weight and step counter are not counted)."""
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


def backend_name(backend):
    return {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}[backend]


def describe_run(config):
    """One line about a run from its config.json."""
    if not config:
        return "unknown (no config.json)"
    if config.get("model") == "hierarchical":
        shape = (f"{config.get('num_resolutions')} resolutions, "
                 if config.get("architecture") == "conv" else "")
        return (f"hierarchical {config.get('architecture')}, {shape}{config.get('num_groups')} "
                f"groups of {config.get('latent_dim')}, width {config.get('width') or 'default'}, "
                f"{config.get('likelihood')}, lr {config.get('lr')} {config.get('lr_schedule')}, "
                f"batch {config.get('batch_size')}, {config.get('epochs')} epochs planned, "
                f"{ema_text(config)}backend {config.get('backend')}")
    widths = config.get("conv_filters") if config.get("architecture") == "conv" else None
    hidden = "×".join(str(units) for units in (widths or config.get("hidden_units", [])))
    if config.get("gated"):
        hidden += " gated"
    objective = f"{config.get('objective')} K = {config.get('num_samples')}"
    if config.get("sticking_the_landing"):
        objective += " (sticking the landing)"
    if config.get("prior") == "mixture":
        objective += f", mixture prior of {config.get('prior_components')}"
    return (f"{config.get('architecture')} {hidden}, latent {config.get('latent_dim')}, "
            f"{likelihood_text(config)}, {objective}, lr {config.get('lr')} {config.get('lr_schedule')}, "
            f"{config.get('epochs')} epochs, {ema_text(config)}backend {config.get('backend')}")


def likelihood_text(config):
    """The single-latent run's p(x|z): "bernoulli", "discretized_logistic (scale: decoder)", ...

    A run saved before --logistic-scale existed had one scale per pixel."""
    from keras_vae.models.options import with_options_saved_before

    config = with_options_saved_before(config)
    likelihood = config.get("likelihood", "bernoulli")
    if likelihood == "discretized_logistic":
        return f"{likelihood} (scale: {config.get('logistic_scale')})"
    if likelihood == "logistic_mixture":
        return f"{likelihood} of {config.get('mixture_components')}"
    return likelihood


def ema_text(config):
    """"EMA 0.999, " for a run that averaged its weights, else ""."""
    return f"EMA {config['ema']:g}, " if config.get("ema") else ""


if __name__ == "__main__":
    main()
