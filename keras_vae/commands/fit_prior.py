"""Fit a prior to a trained model's latents, after training: a Gaussian mixture, a flow or a
latent diffusion model (docs/sampling.md).

The model's encoder encodes the training split of its dataset (binarized once, seeded, when
it trained on binarized images); the prior is fitted to the posterior means (--fit-to means)
or to one draw from each posterior (draws). For a hierarchical model it is fitted to the top
group's noise; the lower groups keep their own prior. The prior is written as a .keras file
(RUN/prior.keras unless --out), with what it was fitted to and its fit time in its config;
`keras-vae export RUN` then writes prior.onnx beside the decoder, which `keras-vae generate
--sampler fitted`, the server's /v1/generate {"sampler": "fitted"} and the explorer page draw from.
"""

import argparse
import os
import sys
import time

import numpy as np

from keras_vae.commands.quiet import add_backend_option
from keras_vae.commands.quiet import add_verbose_option
from keras_vae.commands.quiet import start_keras

EXAMPLES = """
examples:
  keras-vae fit-prior runs/mnist --kind gmm --components 10
  keras-vae fit-prior runs/mnist --kind flow --epochs 30 --backend jax
  keras-vae fit-prior runs/mnist --kind diffusion --epochs 100 --steps 50 --out runs/mnist/diffusion.keras
  keras-vae export runs/mnist --out runs/mnist/decoder.onnx     # and prior.onnx beside it
  keras-vae generate runs/mnist/decoder.onnx --sampler fitted --seed 0 --out samples.png
"""

PROG = "keras-vae fit-prior"

#: The defaults of the options that flows and diffusion models share.
DEFAULTS = {"flow": {"units": 256, "epochs": 30, "batch_size": 256, "lr": 1e-3},
            "diffusion": {"units": 512, "epochs": 100, "batch_size": 256, "lr": 1e-3}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a run directory (uses its model.keras) or a .keras file")
    parser.add_argument("--kind", required=True, choices=["gmm", "flow", "diffusion"],
                        help="a Gaussian mixture (scikit-learn), a RealNVP flow, or a DDPM/DDIM "
                             "latent diffusion model")
    parser.add_argument("--out", help="the prior's .keras file (default: RUN/prior.keras)")
    parser.add_argument("--fit-to", choices=["means", "draws"], default="means",
                        help="the encoder's posterior means, or one draw from each posterior "
                             "(default: means)")
    parser.add_argument("--dataset", help="images to encode (default: the run's dataset)")
    parser.add_argument("--data-dir", help="TFDS data directory (default: the run's)")
    parser.add_argument("--max-images", type=int, help="encode only N training images, evenly "
                        "spaced through the split (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    gmm = parser.add_argument_group("gmm")
    gmm.add_argument("--components", type=int, default=10, help="mixture components (default: 10)")
    gmm.add_argument("--covariance", choices=["full", "diag", "tied", "spherical"], default="full",
                     help="covariance type (default: full)")
    nets = parser.add_argument_group("flow and diffusion (trained with fit)")
    nets.add_argument("--units", type=int, help="width of the networks (default: flow 256, "
                      "diffusion 512)")
    nets.add_argument("--layers", type=int, default=8, help="flow: coupling layers (default: 8)")
    nets.add_argument("--blocks", type=int, default=3,
                      help="diffusion: residual blocks of the denoiser (default: 3)")
    nets.add_argument("--epochs", type=int, help="default: flow 30, diffusion 100")
    nets.add_argument("--batch-size", type=int, help="default: 256")
    nets.add_argument("--lr", type=float, help="peak learning rate, cosine decay (default: 1e-3)")
    nets.add_argument("--train-steps", type=int, default=1000,
                      help="diffusion: steps of the noise schedule (default: 1000)")
    nets.add_argument("--steps", type=int, default=50,
                      help="diffusion: sampling steps (DDIM; default: 50)")
    nets.add_argument("--eta", type=float, default=0.0, help="diffusion: 0 DDIM (default), "
                      "1 with --steps = --train-steps is DDPM's ancestral sampler")
    add_backend_option(parser)
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    for name in ("components", "units", "layers", "blocks", "epochs", "batch_size", "train_steps",
                 "steps", "max_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 1 <= args.steps <= args.train_steps:
        parser.error("--steps must be from 1 to --train-steps")
    if not 0.0 <= args.eta <= 1.0:
        parser.error("--eta must be from 0 to 1")
    if args.lr is not None and not args.lr > 0:
        parser.error("--lr must be above 0")
    return args


def training_images(args, vae, config):
    """The images to encode: the run's training split (without its validation images), binarized
    once with the run's seed when it trained on binarized images; --max-images of them, spread."""
    from keras_vae.data.datasets import binarize
    from keras_vae.data.datasets import load_dataset
    from keras_vae.evaluation.evaluate import spread_subset

    dataset = args.dataset or config.get("dataset")
    if not dataset:
        raise ValueError("this model has no run directory naming its dataset: pass --dataset")
    kwargs = {key: config[key] for key in ("image_size", "color_mode") if config.get(key)}
    images = load_dataset(dataset, "train", args.data_dir or config.get("data_dir"), **kwargs).images
    val_fraction = float(config.get("val_fraction", 0.0)) if not args.dataset else 0.0
    seed = int(config.get("seed", 0))
    if val_fraction > 0:  # the split of keras_vae.training.inputs.load_training_data
        order = np.random.default_rng(seed).permutation(len(images))
        images = images[np.sort(order[max(1, int(round(val_fraction * len(images)))):])]
    if getattr(vae, "dynamic_binarization", False) or config.get("binarize"):
        images = binarize(images, seed=seed)
    return spread_subset(images, args.max_images), dataset


def options_for(args):
    """The fitting options of ``args.kind``."""
    if args.kind == "gmm":
        return {"components": args.components, "covariance_type": args.covariance}
    chosen = {key: getattr(args, key) if getattr(args, key) is not None else default
              for key, default in DEFAULTS[args.kind].items()}
    if args.kind == "flow":
        return {**chosen, "layers": args.layers}
    return {**chosen, "blocks": args.blocks, "train_steps": args.train_steps, "steps": args.steps,
            "eta": args.eta}


def main(argv=None):
    args = parse_args(argv)
    start_keras(args)
    from keras_vae.priors.fitting import fit_prior
    from keras_vae.priors.fitting import fitting_latents
    from keras_vae.training.run_directory import load_vae
    from keras_vae.training.run_directory import read_run_config
    from keras_vae.training.run_directory import resolve_model_path

    try:
        model_path, run_dir = resolve_model_path(args.model)
        out = args.out or os.path.join(run_dir or os.path.dirname(os.path.abspath(model_path)),
                                       "prior.keras")
        if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise ValueError(f"cannot write {out}: its folder does not exist")
        config = read_run_config(run_dir)
        vae = load_vae(args.model)
        images, dataset = training_images(args, vae, config)
        started, cpu = time.perf_counter(), time.process_time()
        latents = fitting_latents(vae, images, args.fit_to, seed=args.seed)
        encoding = {"wall_seconds": round(time.perf_counter() - started, 2),
                    "cpu_seconds": round(time.process_time() - cpu, 2)}
        print(f"encoded {len(images):,} training images of {dataset}: {latents.shape[1]} latents "
              f"each ({args.fit_to}), {encoding['cpu_seconds']:.1f} CPU-s", flush=True)
        fit = {"model": os.path.abspath(model_path), "dataset": dataset, "images": len(images),
               "fit_to": args.fit_to, "encoding": encoding}
        prior = fit_prior(latents, args.kind, seed=args.seed, fit=fit,
                          verbose=2 if args.verbose else 0, **options_for(args))
        prior.save_prior(out)
    except (ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"error: {error}")
    info = prior.fit_info
    print(f"fitted a {args.kind} prior in {info['cpu_seconds'] / 60:.2f} CPU-minutes "
          f"({info['wall_seconds'] / 60:.2f} min wall clock)")
    print(f"Wrote {os.path.abspath(out)}")
    print(f"then: keras-vae export {args.model} --out decoder.onnx   (writes prior.onnx beside it)")


if __name__ == "__main__":
    main()
