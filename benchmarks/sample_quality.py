"""Samples judged by number: Fréchet distance, precision/recall/density/coverage, the share
confidently classified and the class balance, for models' samples against the test split.

A small CNN is trained on the dataset's labels once and cached (`keras_vae.evaluation.
sample_metrics`; $KERAS_VAE_CACHE or ~/.cache/keras_vae); its 128 penultimate features are
the space the distances are measured in. Each run's model draws --samples images (the pixel
means p(x|z), z from the prior at each --temperatures value; for a HierarchicalVAE every group's
prior σ is scaled), which are compared with the whole test split. The first row is the floor:
as many training images, which a perfect model's samples would match.

Prints one Markdown table: run, model, temperature, FD (lower is better), precision, recall,
density, coverage, the share of samples whose top class has probability above --confidence,
the rarest and commonest class shares, and every class's share.

examples:
  python benchmarks/sample_quality.py --data data/mnist.npz runs/mnist runs/mnist-hvae
  python benchmarks/sample_quality.py --data data/mnist.npz runs/mnist-hvae \\
      --temperatures 1.0 0.9 0.8 0.7 0.6 --json runs/mnist-hvae/sample_metrics.json
"""

import argparse
import json
import os
import sys

import numpy as np

from common import machine_line
from common import markdown_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="run directories (their model.keras) or .keras files")
    parser.add_argument("--data", required=True,
                        help="a labelled dataset: .npz with x_train, y_train, x_test, y_test, "
                             "'digits', a TFDS name or a folder with class subfolders")
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--samples", type=int, default=10000, help="samples per row (default: 10000)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                        help="prior temperatures, one row each (default: 1)")
    parser.add_argument("--confidence", type=float, default=0.9,
                        help="a sample counts as confidently classified above this "
                             "probability (default: 0.9)")
    parser.add_argument("--nearest-k", type=int, default=5,
                        help="k of the k-nearest-neighbour balls of precision/recall (default: 5)")
    parser.add_argument("--classifier-epochs", type=int, default=3)
    parser.add_argument("--classifier", help="the classifier's file (default: cached by data)")
    parser.add_argument("--no-floor", action="store_true", help="leave out the training-images row")
    parser.add_argument("--json", help="also write every row's metrics to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.samples < 10 or not 0 < args.confidence < 1:
        parser.error("--samples must be at least 10 and --confidence in (0, 1)")
    if not args.runs and args.no_floor:
        parser.error("nothing to measure: give a RUN, or leave out --no-floor")
    if any(t < 0 for t in args.temperatures):
        parser.error("--temperatures must be non-negative")
    return args


def row(name, model, temperature, metrics):
    shares = metrics["class_shares"]
    return [name, model, "" if temperature is None else f"{temperature:g}",
            f"{metrics['frechet_distance']:.2f}", f"{metrics['precision']:.3f}",
            f"{metrics['recall']:.3f}", f"{metrics['density']:.3f}", f"{metrics['coverage']:.3f}",
            f"{100 * metrics['confident_share']:.1f} %",
            f"{100 * metrics['rarest_class_share']:.1f} %",
            f"{100 * metrics['commonest_class_share']:.1f} %",
            " ".join(f"{100 * share:.0f}" for share in shares)]


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from keras_vae.data.datasets import load_dataset
    from keras_vae.evaluation.sample_metrics import FeatureClassifier
    from keras_vae.evaluation.sample_metrics import Reference
    from keras_vae.evaluation.sample_metrics import sample_metrics
    from keras_vae.training.run_directory import load_vae

    train = load_dataset(args.data, "train", args.data_dir)
    test = load_dataset(args.data, "test", args.data_dir)
    classifier = FeatureClassifier.train_or_load(train, test, path=args.classifier,
                                                 epochs=args.classifier_epochs, seed=args.seed)
    reference = Reference.of(classifier, test.images)
    measure = dict(nearest_k=args.nearest_k, confidence=args.confidence)
    rows, results = [], []
    if not args.no_floor:
        pick = np.random.default_rng(args.seed).choice(len(train), min(args.samples, len(train)),
                                                       replace=False)
        metrics = sample_metrics(train.images[np.sort(pick)], reference, **measure)
        rows.append(row("training images (the floor)", "", None, metrics))
        results.append(dict(run="training images", **metrics))
    for run in args.runs:
        model = load_vae(run)
        if tuple(model.image_shape) != tuple(test.images.shape[1:]):
            sys.exit(f"error: {run} models {model.image_shape} images, not the "
                     f"{test.images.shape[1:]} images of {args.data}")
        if getattr(model, "conditional", False):
            sys.exit(f"error: {run} is class-conditional; measure unconditional models")
        name = os.path.basename(os.path.normpath(run))
        for temperature in args.temperatures:
            samples = model.sample(args.samples, seed=args.seed, temperature=temperature)
            metrics = sample_metrics(samples, reference, **measure)
            rows.append(row(name, type(model).__name__, temperature, metrics))
            results.append(dict(run=run, temperature=temperature, **metrics))
            print(f"{name} T={temperature:g}: FD {metrics['frechet_distance']:.2f}",
                  file=sys.stderr, flush=True)
    print(f"\n{machine_line()}")
    print(f"\nClassifier: a small Keras CNN ({classifier.path}), {args.classifier_epochs} epochs, "
          f"test accuracy {100 * classifier.accuracy:.2f} %; features: its 128 penultimate "
          f"units. Reference: the {len(test.images):,} test images. {args.samples:,} samples "
          f"per row, seed {args.seed}; precision/recall with k = {args.nearest_k}.\n")
    print(markdown_table(["run", "model", "T", "FD", "precision", "recall", "density",
                          "coverage", f"p(class) > {args.confidence:g}", "rarest class",
                          "commonest class", "share of each class, %"], rows))
    if args.json:
        from keras_vae.core.files import write_json

        write_json(dict(classifier_accuracy=classifier.accuracy, rows=results), args.json)


if __name__ == "__main__":
    main()
