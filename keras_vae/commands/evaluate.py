"""Measure a trained VAE on its test split: ELBO, importance-sampled NLL, pictures.

A model trained on binarized images (--dynamic-binarization or --binarize) is
measured on a binarized test set. On grey images a Bernoulli decoder's
"NLL" is a cross-entropy, and is reported as one, without bits/dim.

Writes metrics.json (nats per example, and bits per dimension) and
test_reconstructions.png, test_samples.png, latent_space.png and
interpolation.png into the run directory (or --out).
"""

import argparse
import json
import os
import sys

from keras_vae.commands.quiet import add_verbose_option
from keras_vae.commands.quiet import add_backend_option
from keras_vae.commands.quiet import start_keras

EXAMPLES = """
examples:
  keras-vae evaluate runs/digits
  keras-vae evaluate runs/mnist --num-samples 5000 --backend tensorflow
  keras-vae evaluate runs/mnist --num-samples 500 --max-images 1000   # quick look
  keras-vae evaluate model.keras --dataset mnist --data-dir data/tfds --out eval/
"""


PROG = "keras-vae evaluate"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a run directory (uses its model.keras) or a .keras file")
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="importance samples K for the NLL (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=100, help="test images per batch")
    parser.add_argument("--max-images", type=int,
                        help="measure only N test images, evenly spaced through the split "
                             "(quicker, noisier; default: all)")
    parser.add_argument("--dataset", help="dataset to test on (default: the run's own)")
    parser.add_argument("--data-dir", help="TFDS data directory (default: the run's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="where to write metrics.json and pictures")
    add_backend_option(parser)
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.batch_size < 1:
        parser.error("--num-samples and --batch-size must be at least 1")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    start_keras(args)
    from keras_vae.evaluation.evaluate import evaluate_run

    try:
        metrics = evaluate_run(args.model, args.out, args.dataset, args.data_dir,
                               args.num_samples, args.batch_size, args.seed,
                               max_images=args.max_images)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(json.dumps(metrics, indent=2))
    out = args.out or (args.model if os.path.isdir(args.model) else os.path.dirname(args.model))
    if "nll" in metrics:
        print(f"\nTest ELBO {metrics['elbo']:.2f} nats, NLL {metrics['nll']:.2f} nats "
              f"(K = {metrics['num_samples']}), {metrics['bits_per_dim']:.4f} bits/dim")
    else:
        print(f"\nTest ELBO {metrics['elbo']:.2f} nats, cross-entropy "
              f"{metrics['cross_entropy']:.2f} nats (K = {metrics['num_samples']}).\n"
              "The test images are grey and the decoder is Bernoulli, so this is a "
              "cross-entropy, not a negative log-likelihood, and has no bits/dim. Train with "
              "--dynamic-binarization or --binarize to measure an NLL.")
    print(f"Pictures in {os.path.abspath(out)}: test_reconstructions.png, test_samples.png, "
          "latent_space.png, interpolation.png")


if __name__ == "__main__":
    main()
