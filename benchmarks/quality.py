"""Model quality against training time: the test NLL of a run's checkpoints.

Train with --checkpoint-every (see docs/model-quality.md), then this script measures
every checkpoints/epoch_NNNN.keras and the run's best model.keras on the same --images
test images (evenly spaced through the test split) with K importance samples, reads
each epoch's training time from history.csv, and prints a Markdown table: epoch,
minutes of training, test ELBO and test NLL ± standard error, in nats per example.
Every row uses the same images and seed, so the differences between rows are less
noisy than each row's error suggests.
For the headline number, run keras-vae evaluate with K = 5000 on the whole test set.

examples:
  python benchmarks/quality.py runs/mnist_iwae
  python benchmarks/quality.py runs/mnist_iwae --num-samples 5000 --images 10000   # slow
"""

import argparse
import glob
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
    parser.add_argument("run", help="a run directory trained with --checkpoint-every")
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
    if not os.path.isfile(os.path.join(args.run, "history.csv")):
        parser.error(f"{args.run} has no history.csv; is it a run directory?")
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
    from keras_vae.training.run_directory import load_vae
    from keras_vae.evaluation.evaluate import measure
    from keras_vae.training.run_directory import read_run_config
    from keras_vae.evaluation.evaluate import spread_subset
    from keras_vae.evaluation.evaluate import test_images
    from keras_vae.training.run_directory import logged_values

    history = os.path.join(args.run, "history.csv")
    minutes = [seconds / 60 for seconds in logged_values(history, "elapsed_seconds")]
    val_losses = logged_values(history, "val_loss")
    # model.keras holds the best validation epoch, or the last one for a run without validation.
    best_epoch = 1 + val_losses.index(min(val_losses)) if val_losses else len(minutes) or None
    best_label = "best" if val_losses else "last"
    config = read_run_config(args.run)
    points = checkpoints(args.run)
    if not points:
        sys.exit(f"error: no checkpoints/epoch_*.keras or model.keras in {args.run}")

    rows, images = [], None
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
        trained = f"{minutes[number - 1]:.1f}" if number and number <= len(minutes) else "?"
        label = f"{number} ({best_label})" if epoch == "best" else str(epoch)
        rows.append([label, trained, f"{metrics['elbo']:.2f}",
                     f"{metrics[measured]:.2f} ± {metrics[measured + '_standard_error']:.2f}"])
        print(f"epoch {label}: {measured} {metrics[measured]:.2f} nats "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    print(f"\n### Test NLL against training time: {args.run}\n")
    print(f"{machine_line()}; measured on the {backend_name(args.backend)} backend\n")
    print(f"Training: {describe_run(config)}. Test: {len(images)} test images "
          f"evenly spaced through the split, "
          f"K = {args.num_samples} importance samples, nats per example.\n")
    column = "test NLL" if measured == "nll" else "test cross-entropy (grey images, not an NLL)"
    print(markdown_table(["epoch", "training min", "test ELBO", column], rows))


def backend_name(backend):
    return {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}[backend]


def describe_run(config):
    """One line about a run from its config.json."""
    if not config:
        return "unknown (no config.json)"
    hidden = "×".join(str(units) for units in config.get("hidden_units", []))
    if config.get("gated"):
        hidden += " gated"
    objective = f"{config.get('objective')} K = {config.get('num_samples')}"
    if config.get("sticking_the_landing"):
        objective += " (sticking the landing)"
    if config.get("prior") == "mixture":
        objective += f", mixture prior of {config.get('prior_components')}"
    return (f"{config.get('architecture')} {hidden}, latent {config.get('latent_dim')}, "
            f"{objective}, lr {config.get('lr')} {config.get('lr_schedule')}, "
            f"{config.get('epochs')} epochs, backend {config.get('backend')}")


if __name__ == "__main__":
    main()
