"""Build coloured MNIST (32x32x3 PNGs in class subfolders, seeded) from an MNIST .npz.

The digits are tinted and placed on coloured backgrounds (keras_vae.data.coloured_mnist
says how); the folder has train/ and test/ subfolders, each with 0/ ... 9/, which
`keras-vae train --dataset FOLDER` reads as labelled splits.

examples:
  # all 60,000 + 10,000 images (about a minute on 2 CPU cores)
  python benchmarks/make_coloured_mnist.py data/mnist.npz data/coloured_mnist

  # a small copy for a quick run
  python benchmarks/make_coloured_mnist.py data/mnist.npz data/coloured_mnist_small \\
      --train-count 5000 --test-count 1000 --seed 1
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_vae.data.coloured_mnist import build_coloured_mnist  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mnist", help="MNIST .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("out", help="folder to create (must not exist)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the colours and offsets")
    parser.add_argument("--train-count", type=int, help="first N training images only")
    parser.add_argument("--test-count", type=int, help="first N test images only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        counts = build_coloured_mnist(args.mnist, args.out, args.seed, args.train_count,
                                      args.test_count)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"Wrote {counts['train']} training and {counts['test']} test images to "
          f"{args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
