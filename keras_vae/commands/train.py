"""Train a VAE with model.fit and write a run directory.

The run directory gets config.json, model.keras (best validation loss),
last.keras, history.csv, TensorBoard logs, samples.png and reconstructions.png.
Run the same command again after an interruption (Ctrl-C, a crash, even kill -9)
to continue after the last completed epoch; --overwrite starts afresh.
"""

import argparse
import os
import sys

EXAMPLES = """
examples:
  # the built-in 8×8 digits (no network, no files), about 10 s
  keras-vae train --out runs/digits

  # MNIST through TFDS (--download fetches it once), dynamically binarized, on JAX
  keras-vae train --backend jax --dataset mnist --data-dir data/tfds --download \\
      --dynamic-binarization --latent-dim 50 --epochs 100 --out runs/mnist-tfds

  # IWAE, a learned mixture prior, gated layers, all 60k images (README, "Model quality")
  keras-vae train --backend jax --dataset data/mnist.npz --dynamic-binarization \\
      --val-fraction 0 --latent-dim 50 --hidden-units 512 512 512 --gated --objective iwae \\
      --num-samples 5 --prior mixture --kl-warmup-steps 5000 --epochs 140 \\
      --lr-schedule cosine --out runs/mnist

  # your own images: a .npz with x_train, x_test (uint8 0-255 or float 0-1)
  keras-vae train --dataset my_images.npz --architecture conv --out runs/mine

  # data-parallel over all devices (JAX); here 2 virtual CPU devices
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
      keras-vae train --backend jax --data-parallel --out runs/dp

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
                      help="'digits' (built in), a path to a .npz, or a TFDS name (default: digits)")
    data.add_argument("--data-dir", help="TFDS data directory holding the prepared dataset")
    data.add_argument("--download", action="store_true", help="let TFDS download the dataset")
    data.add_argument("--binarize", action="store_true",
                      help="binarize the training data once (seeded); see --dynamic-binarization")
    data.add_argument("--val-fraction", type=float, default=0.1,
                      help="fraction of the training split held out for validation; 0 trains "
                           "on all of it and keeps the last epoch as model.keras (default: 0.1)")

    model = parser.add_argument_group("model")
    model.add_argument("--latent-dim", type=int, default=16, help="latent dimensions (default: 16)")
    model.add_argument("--architecture", choices=["mlp", "conv"], default="mlp")
    model.add_argument("--hidden-units", type=int, nargs="+", default=[512, 512],
                       help="MLP hidden layer widths (default: 512 512)")
    model.add_argument("--gated", action="store_true",
                       help="MLP: gated dense hidden layers, (Wh + b) * sigmoid(Vh + c), "
                            "in place of ReLU ones")
    model.add_argument("--conv-filters", type=int, nargs="+", default=[32, 64],
                       help="conv encoder filters, one stride-2 layer each (default: 32 64)")
    model.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli")
    model.add_argument("--decoder-std", default="1.0",
                       help="Gaussian decoder σ: a number or 'learned' (default: 1.0)")
    model.add_argument("--beta", type=float, default=1.0, help="KL weight β (default: 1.0)")
    model.add_argument("--kl-warmup-steps", type=int, default=0,
                       help="β rises linearly from 0 over this many steps (default: 0)")
    model.add_argument("--num-samples", type=int, default=1, help="samples of z per example (K)")
    model.add_argument("--objective", choices=["elbo", "iwae"], default="elbo")
    model.add_argument("--sticking-the-landing", action="store_true",
                       help="iwae: drop the score-function term of the encoder gradient "
                            "(Roeder et al. 2017). Lower variance, but for K > 1 the encoder's "
                            "gradient is then biased (Tucker et al. 2019)")
    model.add_argument("--prior", choices=["standard", "mixture"], default="standard",
                       help="p(z): N(0, I), or a learned mixture of Gaussians (default: standard)")
    model.add_argument("--prior-components", type=int, default=500,
                       help="components of the mixture prior (default: 500)")
    model.add_argument("--dynamic-binarization", action="store_true",
                       help="draw x ~ Bernoulli(x) afresh in every training step")

    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=30)
    training.add_argument("--batch-size", type=int, default=128)
    training.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    training.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--data-parallel", action="store_true",
                          help="split each batch across all devices (JAX backend; "
                               "keras.distribution.DataParallel)")
    training.add_argument("--steps-per-execution", type=int, default=1, metavar="N",
                          help="training steps per compiled call (Keras compile's "
                               "steps_per_execution; JAX and TensorFlow): fewer round trips "
                               "on a GPU, the same math (default: 1)")
    training.add_argument("--checkpoint-every", type=int, default=0, metavar="EPOCHS",
                          help="also save checkpoints/epoch_NNNN.keras every EPOCHS epochs, "
                               "e.g. for benchmarks/quality.py (default: off)")
    training.add_argument("--backend", choices=["tensorflow", "jax", "torch"],
                          help="Keras backend (default: $KERAS_BACKEND, else tensorflow)")
    training.add_argument("--out", default="runs/digits", help="run directory (default: runs/digits)")
    training.add_argument("--overwrite", action="store_true",
                          help="start afresh in --out, replacing a finished or interrupted run")
    training.add_argument("--quiet", action="store_true", help="one line per epoch, no progress bar")
    args = parser.parse_args(argv)
    if args.decoder_std != "learned":
        try:
            args.decoder_std = float(args.decoder_std)
        except ValueError:
            parser.error(f"--decoder-std must be a number or 'learned', got {args.decoder_std!r}")
    for name in ("epochs", "batch_size", "latent_dim", "num_samples", "prior_components",
                 "steps_per_execution"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.checkpoint_every < 0:
        parser.error("--checkpoint-every must be 0 (off) or a number of epochs")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    from keras_vae.training import TrainConfig
    from keras_vae.training import train

    options = {k: v for k, v in vars(args).items() if k not in ("backend", "quiet")}
    options.update(hidden_units=tuple(args.hidden_units), conv_filters=tuple(args.conv_filters))
    config = TrainConfig(**options, verbose=2 if args.quiet else "auto")
    try:
        train(config)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    print(f"\nRun directory: {os.path.abspath(config.out)}")
    print(f"  pictures: {os.path.join(config.out, 'samples.png')}, "
          f"{os.path.join(config.out, 'reconstructions.png')}")
    print(f"  next: keras-vae evaluate {config.out}")


if __name__ == "__main__":
    main()
