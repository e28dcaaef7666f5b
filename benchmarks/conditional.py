"""Does the conditioning work? Class fidelity and log p(x|y) of a class-conditional VAE on MNIST.

On the same training budget (recipe, epochs, seed), trains two VAEs with `keras-vae train`:
an unconditional one and a class-conditional one (--conditional), and measures

  class fidelity  a small Keras CNN, trained on MNIST's training images (its test accuracy
                  is printed), classifies the pixel means of PER_CLASS samples of each class
                  (temperature 1) from the conditional model's exported ONNX decoder,
                  decoded by onnxruntime; the table gives the fraction classified as the
                  class asked for, per class and overall (keras_vae.models.conditioning.class_fidelity);
  NLL             `keras-vae evaluate` on the full test set (one fixed binarization):
                  -log p(x|y) of the conditional model beside -log p(x) of the unconditional
                  one, importance-sampled with K samples. Since p(x) = sum_y p(y) p(x|y) and
                  p(y) is about 1/10, a conditional model that fits as well is lower by at
                  most about log 10 = 2.30 nats.

  marginal        on MARGINAL_IMAGES test images (evenly spaced), from the exported files:
                  the conditional model's own -log p(x) = -log sum_y p(y) p(x|y), p(y) the
                  training split's class frequencies, beside the unconditional model's
                  -log p(x) on the same images and noise; their difference is the part of
                  the NLL gap that is fit, not conditioning.

Also writes OUT/class_grid.png: one row per class, the same z in every column, decoded by
the exported ONNX decoder. The runs are kept in OUT (an interrupted run resumes; a
finished one is reused), with OUT/results.json.

examples:
  python benchmarks/conditional.py --data data/mnist.npz --out runs/conditional
  python benchmarks/conditional.py --data data/mnist.npz --out runs/conditional --epochs 3 \\
      --per-class 200 --nll-samples 20      # a quick look
"""

import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np

from common import REPO
from common import machine_line
from common import markdown_table

RECIPES = {"unconditional": [], "conditional": ["--conditional"]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True,
                        help="MNIST as a .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--out", default="runs/conditional", help="where the runs and results go")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of each model (default: 15)")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--backend", default="jax", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--nll-samples", type=int, default=200,
                        help="importance samples K for the test NLL (default: 200)")
    parser.add_argument("--per-class", type=int, default=1000,
                        help="conditional samples classified per class (default: 1000)")
    parser.add_argument("--classifier-epochs", type=int, default=2)
    parser.add_argument("--marginal-images", type=int, default=1000,
                        help="test images for the conditional model's own -log p(x) (default: 1000)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def keras_vae_command(args, backend=None):
    """Runs `python -m keras_vae ARGS` from the repository root; raises on failure."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    print("$ keras-vae " + " ".join(args), flush=True)
    result = subprocess.run([sys.executable, "-m", "keras_vae", *args], cwd=REPO, env=env,
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"keras-vae {args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def train_and_evaluate(args, name):
    """Trains (or reuses) OUT/name and returns its metrics.json."""
    run = os.path.join(args.out, name)
    if not os.path.exists(os.path.join(run, "model.keras")):
        keras_vae_command(["train", "--backend", args.backend, "--dataset", args.data,
                           "--dynamic-binarization", "--val-fraction", "0",
                           "--latent-dim", str(args.latent_dim), "--epochs", str(args.epochs),
                           "--seed", str(args.seed), "--quiet", "--out", run, *RECIPES[name]])
    metrics_path = os.path.join(run, "metrics.json")
    if not os.path.exists(metrics_path):
        keras_vae_command(["evaluate", run, "--backend", args.backend,
                           "--num-samples", str(args.nll_samples)])
    with open(metrics_path) as f:
        metrics = json.load(f)
    with open(os.path.join(run, "history.csv")) as f:  # the training's own clock, also when reused
        metrics["train_minutes"] = float(list(csv.DictReader(f))[-1]["elapsed_seconds"]) / 60
    return metrics


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    # The VAEs train in their own processes (--backend); the classifier's CNN trains here,
    # under TensorFlow, whose CPU convolutions are the quickest of the three.
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from keras_vae.models.conditioning import class_fidelity
    from keras_vae.core.images import image_grid, save_png
    from keras_vae.data.datasets import load_dataset
    from keras_vae.serving.sampler import Sampler

    metrics = {name: train_and_evaluate(args, name) for name in RECIPES}
    files = {}
    for name in RECIPES:
        run = os.path.join(args.out, name)
        files[name] = [os.path.join(run, "decoder.onnx"), os.path.join(run, "encoder.onnx")]
        if not all(os.path.exists(path) for path in files[name]):
            keras_vae_command(["export", run, "--out", files[name][0], "--encoder-out", files[name][1]])
    sampler = Sampler(files["conditional"][0], provider="cpu")

    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    marginal = marginal_nll(args, files, train.labels, test)
    from keras_vae.evaluation.sample_metrics import FeatureClassifier

    classifier = FeatureClassifier.train_or_load(train, test, epochs=args.classifier_epochs,
                                                 seed=args.seed)
    accuracy = classifier.accuracy

    def classify(images):
        return np.argmax(classifier.probabilities(images), axis=1)

    fidelity = class_fidelity(lambda n, y, s, t: sampler.sample(n, s, t, labels=y), classify,
                              len(sampler.class_names), args.per_class, args.seed)

    # One row per class, the same z in each column (the style), from the ONNX decoder.
    z = sampler.latents(10, seed=args.seed)
    classes = len(sampler.class_names)
    grid = sampler.decode(np.tile(z, (classes, 1)), labels=np.repeat(np.arange(classes), 10))
    save_png(image_grid(grid, ncols=10, scale=2), os.path.join(args.out, "class_grid.png"))

    print(f"\n{machine_line()}")
    print(f"classifier (small Keras CNN, {args.classifier_epochs} epochs): test accuracy "
          f"{accuracy:.4f} on {len(test.labels)} MNIST test images\n")
    rows = [[name, f"{100 * value:.1f} %"]
            for name, value in zip(sampler.class_names, fidelity["per_class"])]
    rows.append(["overall", f"**{100 * fidelity['overall']:.1f} %**"])
    print(f"Class fidelity: {args.per_class} samples per class, temperature 1, pixel means "
          "from the ONNX decoder, classified as the class asked for")
    print(markdown_table(["class", "classified as asked"], rows))
    conditional, unconditional = metrics["conditional"], metrics["unconditional"]
    print(f"\nTest NLL, full test set ({conditional['num_images']} images), K = "
          f"{args.nll_samples}, {args.epochs} epochs each, nats per example")
    print(markdown_table(
        ["model", "measures", "NLL", "± s.e.", "ELBO", "training (min)"],
        [[name, "-log p(x|y)" if name == "conditional" else "-log p(x)",
          f"{m['nll']:.2f}", f"{m['nll_standard_error']:.2f}", f"{m['elbo']:.2f}",
          f"{m['train_minutes']:.1f}"] for name, m in metrics.items()]))
    gap = unconditional["nll"] - conditional["nll"]
    print(f"\n-log p(x) - (-log p(x|y)) = {gap:.2f} nats (log 10 = {np.log(10):.2f})")
    print(f"\nOn {marginal['images']} test images (evenly spaced), K = {args.nll_samples}, "
          "from the ONNX files, nats per example")
    print(markdown_table(["measure", "NLL"], [
        ["conditional, -log p(x|y)", f"{marginal['conditional_given_y']:.2f}"],
        ["conditional, its own -log p(x) = -log sum_y p(y) p(x|y)", f"{marginal['conditional']:.2f}"],
        ["unconditional, -log p(x)", f"{marginal['unconditional']:.2f}"],
        ["-log p(y|x) under the conditional model (<= log 10)",
         f"{marginal['conditional'] - marginal['conditional_given_y']:.2f}"],
    ]))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"classifier_accuracy": accuracy, "fidelity": fidelity, "metrics": metrics,
                   "nll_gap": gap, "marginal": marginal, "args": vars(args),
                   "machine": machine_line()}, f, indent=1)


def marginal_nll(args, files, train_labels, test):
    """-log p(x|y), the conditional model's -log p(x) and the unconditional model's, per image
    averaged, on args.marginal_images test images, from the exported files."""
    from keras_vae.core.likelihood import log_mean_exp
    from keras_vae.serving.likelihood import onnx_log_likelihood
    from keras_vae.data.datasets import binarize
    from keras_vae.evaluation.evaluate import spread_subset
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.sampler import Sampler

    # the test binarization of keras-vae evaluate (seed 0), then the evenly spaced subset
    x = spread_subset(binarize(test.images, seed=0), args.marginal_images)
    y = spread_subset(test.labels, args.marginal_images)
    models = {name: (Encoder(paths[1], provider="cpu"), Sampler(paths[0], provider="cpu"))
              for name, paths in files.items()}
    plain = onnx_log_likelihood(*models["unconditional"], x, args.nll_samples)
    classes = len(models["conditional"][1].class_names)
    prior = np.bincount(train_labels, minlength=classes) / len(train_labels)
    given = np.stack([onnx_log_likelihood(*models["conditional"], x, args.nll_samples,
                                          labels=np.full(len(x), k)) for k in range(classes)])
    own = log_mean_exp(given + np.log(prior * classes)[:, None], axis=0)  # log sum_y p(y) p(x|y)
    return {"images": int(len(x)), "unconditional": float(-plain.mean()),
            "conditional": float(-own.mean()),
            "conditional_given_y": float(-given[y, np.arange(len(x))].mean())}


if __name__ == "__main__":
    main()
