"""How recognisable a model's MNIST samples are: a classifier's confidence and the class balance.

Trains a small CNN on MNIST (or loads it from OUT/classifier.keras), draws --samples images
from each run's model at --temperature (the pixel means p(x|z), z from the prior; for a
HierarchicalVAE every group from its prior), and prints one Markdown table: the share of
samples the classifier gives one class with probability above --confidence, and the smallest
and largest share of samples that any class gets (a model that covers the ten digits evenly
gives each about 10 %).

examples:
  python benchmarks/sample_quality.py --data data/mnist.npz runs/mnist runs/mnist-hvae
  python benchmarks/sample_quality.py --data data/mnist.npz runs/mnist-hvae --temperature 0.8
"""

import argparse
import os
import sys

import numpy as np

from common import machine_line
from common import markdown_table
from common import mnist_classifier


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or .keras files)")
    parser.add_argument("--data", required=True, help="MNIST .npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--out", default="runs/sample_quality",
                        help="where the classifier is kept (default: runs/sample_quality)")
    parser.add_argument("--samples", type=int, default=10000, help="samples per run (default: 10000)")
    parser.add_argument("--temperature", type=float, default=1.0, help="prior temperature (default: 1)")
    parser.add_argument("--confidence", type=float, default=0.9,
                        help="a sample counts as recognised above this probability (default: 0.9)")
    parser.add_argument("--classifier-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.samples < 10 or not 0 < args.confidence < 1:
        parser.error("--samples must be at least 10 and --confidence in (0, 1)")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.makedirs(args.out, exist_ok=True)
    from keras_vae.data.datasets import load_dataset
    from keras_vae.training.run_directory import load_vae

    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    probabilities, accuracy = mnist_classifier(os.path.join(args.out, "classifier.keras"), train,
                                               test, args.classifier_epochs, args.seed)
    rows = []
    for run in args.runs:
        model = load_vae(run)
        if tuple(model.image_shape) != (28, 28, 1):
            sys.exit(f"error: {run} models {model.image_shape} images, not 28×28×1 MNIST")
        samples = model.sample(args.samples, seed=args.seed, temperature=args.temperature)
        predicted = probabilities(samples)
        confident = float(np.mean(predicted.max(axis=1) > args.confidence))
        shares = np.bincount(predicted.argmax(axis=1), minlength=10) / len(samples)
        rows.append([os.path.basename(os.path.normpath(run)), type(model).__name__,
                     f"{100 * confident:.1f} %", f"{100 * shares.min():.1f} %",
                     f"{100 * shares.max():.1f} %", " ".join(f"{100 * s:.0f}" for s in shares)])
    print(f"\n{machine_line()}")
    print(f"\nClassifier: a small Keras CNN, {args.classifier_epochs} epochs, test accuracy "
          f"{100 * accuracy:.2f} %. {args.samples:,} samples per run at temperature "
          f"{args.temperature:g}, seed {args.seed}.\n")
    print(markdown_table(["run", "model", f"samples with p(class) > {args.confidence:g}",
                          "rarest class", "commonest class", "share of each class 0-9, %"], rows))


if __name__ == "__main__":
    main()
