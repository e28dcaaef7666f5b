"""Anomaly detection on MNIST, one held-out digit at a time, against the tools people use.

For each digit d: train a VAE on the training images of the other nine digits, score
all 10,000 test images, and measure how well each score separates digit d (the
anomalies) from the rest: AUROC and AUPRC (sklearn.metrics; AUPRC with digit d as the
positive class). Side by side, in the same run, on the same images:

  log_px     -log p(x), importance-sampled with K samples (keras_vae.core.anomaly)
  elbo       -ELBO from the same K samples
  recon      mean squared error of the reconstruction from the posterior mean
  typicality |-log p(x) - mean training NLL| (Nalisnick et al. 2019's typicality idea)
  pyod_vae   PyOD's VAE (pyod.models.vae.VAE) with its documented defaults
  iforest    scikit-learn's IsolationForest with its defaults

The keras-vae model sees binarized images (dynamic binarization in training, one fixed
binarization of the test set); the peers see the grey images, flattened to 784 values.

Each digit's result is written atomically to OUT/digit_<d>.json as soon as it is done,
so an interrupted run resumes where it stopped; the table is printed from every
digit_*.json in OUT. Each row gives the digit's wall-clock minutes and the CPU minutes
of the process (all threads): on a machine shared with other work the wall clock grows,
the CPU time much less; on 2 uncontended cores a digit takes at least half its CPU time. Also measured per digit: an out-of-distribution check with
blank images and scikit-learn's 8x8 digits scaled up to 28x28.

examples:
  python benchmarks/anomaly.py --data data/mnist.npz --out runs/anomaly             # all ten digits
  python benchmarks/anomaly.py --data data/mnist.npz --out runs/anomaly --digits 0,1,7
  python benchmarks/anomaly.py --data data/mnist.npz --out runs/anomaly --table-only
"""

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

from common import machine_line
from common import markdown_table

SCORES = ("log_px", "elbo", "recon", "typicality", "pyod_vae", "iforest")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MNIST as a .npz with x_train, y_train, "
                                                      "x_test, y_test")
    parser.add_argument("--out", required=True, help="directory for the per-digit JSON results")
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9",
                        help="the anomaly digits to run, comma-separated (default: all ten)")
    parser.add_argument("--epochs", type=int, default=10, help="VAE training epochs (default: 10)")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--hidden-units", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--num-samples", type=int, default=100,
                        help="importance samples K for log_px and elbo (default: 100)")
    parser.add_argument("--test-images", type=int,
                        help="score only the first N test images (default: all 10,000)")
    parser.add_argument("--train-images", type=int,
                        help="train on only the first N normal training images (default: all)")
    parser.add_argument("--peer-epochs", type=int,
                        help="override PyOD VAE's epoch_num (default: its own default, 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table-only", action="store_true",
                        help="print the table from OUT without running anything")
    args = parser.parse_args(argv)
    args.digits = [int(d) for d in args.digits.split(",") if d.strip()]
    if not args.digits or any(not 0 <= d <= 9 for d in args.digits):
        parser.error("--digits takes digits 0-9, e.g. 0,1,7")
    return args


def metrics(labels, scores):
    """AUROC and AUPRC of anomaly scores (higher = more anomalous) against labels (1 = anomaly)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {"auroc": float(roc_auc_score(labels, scores)),
            "auprc": float(average_precision_score(labels, scores))}


def ood_images(count, seed=0):
    """Out-of-distribution images (N, 28, 28, 1): blank ones, and 8x8 digits scaled to 28x28."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits().images[:count] / 16.0
    scaled = np.stack([np.asarray(Image.fromarray((d * 255).astype(np.uint8)).resize(
        (20, 20), Image.BILINEAR)) for d in digits]) / 255.0
    padded = np.pad(scaled, ((0, 0), (4, 4), (4, 4)))[..., None].astype(np.float32)
    blank = np.zeros((count // 4, 28, 28, 1), np.float32)
    rng = np.random.default_rng(seed)
    return {"blank": blank,
            "digits_8x8": (rng.random(padded.shape) < padded).astype(np.float32)}


def run_digit(digit, args, data):
    import keras

    import keras_vae
    from keras_vae.evaluation.anomaly import keras_scores
    from keras_vae.data.datasets import binarize

    x_train, y_train, x_test, y_test = data
    normal = x_train[y_train != digit][: args.train_images]
    test = x_test[: args.test_images]
    labels = (y_test[: args.test_images] == digit).astype(int)
    binary_test = binarize(test, seed=args.seed)
    result = {"digit": digit, "train_images": len(normal), "test_images": len(test),
              "anomalies": int(labels.sum()), "epochs": args.epochs,
              "num_samples": args.num_samples, "backend": keras.backend.backend()}

    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    vae = keras_vae.VAE(input_shape=(28, 28, 1), latent_dim=args.latent_dim,
                        hidden_units=tuple(args.hidden_units), dynamic_binarization=True,
                        seed=args.seed)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = vae.fit(normal, epochs=args.epochs, batch_size=128, verbose=0)
    result["train_loss"] = float(history.history["loss"][-1])
    result["train_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    scores = keras_scores(vae, binary_test, args.num_samples, seed=args.seed)
    reference = keras_scores(vae, binarize(normal[:1000], seed=args.seed + 1),
                             args.num_samples, seed=args.seed)
    mean_train_nll = float(-reference.log_px.mean())
    typicality = np.abs(-scores.log_px - mean_train_nll)
    result["score_seconds"] = time.perf_counter() - started
    result["test_nll_normal"] = float(-scores.log_px[labels == 0].mean())
    result["test_nll_anomalies"] = float(-scores.log_px[labels == 1].mean())
    result["scores"] = {name: metrics(labels, scores.anomaly(name))
                        for name in ("log_px", "elbo", "recon")}
    result["scores"]["typicality"] = metrics(labels, typicality)

    # Out of distribution: normal test images against blank and scaled-up 8x8 digits.
    normal_test = -scores.log_px[labels == 0]
    result["ood"] = {}
    for name, images in ood_images(400, args.seed).items():
        ood = -keras_scores(vae, images, args.num_samples, seed=args.seed).log_px
        both = np.concatenate([normal_test, ood])
        is_ood = np.r_[np.zeros(len(normal_test), int), np.ones(len(ood), int)]
        result["ood"][name] = {"log_px": metrics(is_ood, both)["auroc"],
                               "typicality": metrics(is_ood, np.abs(both - mean_train_nll))["auroc"]}

    flat_train, flat_test = normal.reshape(len(normal), -1), test.reshape(len(test), -1)
    started = time.perf_counter()
    import torch
    from pyod.models.vae import VAE as PyodVAE

    torch.set_num_threads(1)  # PyOD's batches of 32 small rows: one thread is the fastest
    peer_options = {"verbose": 0, "random_state": args.seed}
    if args.peer_epochs:
        peer_options["epoch_num"] = args.peer_epochs
    pyod_vae = PyodVAE(**peer_options)
    pyod_vae.fit(flat_train)
    result["scores"]["pyod_vae"] = metrics(labels, pyod_vae.decision_function(flat_test))
    result["pyod_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(random_state=args.seed).fit(flat_train)
    result["scores"]["iforest"] = metrics(labels, -forest.score_samples(flat_test))
    result["iforest_seconds"] = time.perf_counter() - started
    return result


def print_table(out):
    results = []
    for path in sorted(glob.glob(os.path.join(out, "digit_*.json"))):
        with open(path) as f:
            results.append(json.load(f))
    if not results:
        print(f"no results in {out} yet")
        return
    for metric in ("auroc", "auprc"):
        header = ["anomaly digit"] + list(SCORES) + ["minutes", "CPU minutes"]
        rows = []
        for r in results:
            minutes = sum(r[k] for k in ("train_seconds", "score_seconds", "pyod_seconds",
                                         "iforest_seconds")) / 60
            cpu = f"{r['cpu_seconds'] / 60:.1f}" if "cpu_seconds" in r else "n/a"
            rows.append([r["digit"]] + [f"{r['scores'][s][metric]:.3f}" for s in SCORES]
                        + [f"{minutes:.1f}", cpu])
        means = [np.mean([r["scores"][s][metric] for r in results]) for s in SCORES]
        best_peer = max(means[SCORES.index("pyod_vae")], means[SCORES.index("iforest")])
        rows.append(["**mean**"] + [f"**{m:.3f}**" for m in means] + ["", ""])
        print(f"\n{metric.upper()} (digit d = anomalies; {len(results)} digits: "
              f"{', '.join(str(r['digit']) for r in results)})\n")
        print(markdown_table(header, rows))
        best = max(means[:4])
        print(f"\nbest keras-vae score {best:.3f} against the best peer {best_peer:.3f}: "
              f"{'ahead' if best > best_peer else 'behind'} by {abs(best - best_peer):.3f}")
    header = ["anomaly digit", "OOD set", "log_px AUROC", "typicality AUROC"]
    rows = [[r["digit"], name, f"{v['log_px']:.3f}", f"{v['typicality']:.3f}"]
            for r in results for name, v in r["ood"].items()]
    print("\nOut of distribution: normal test images against other images\n")
    print(markdown_table(header, rows))
    first = results[0]
    print(f"\nVAE: MLP {first.get('epochs')} epochs, K = {first['num_samples']}, "
          f"{first['backend']}; {machine_line()}")


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not args.table_only:
        from keras_vae.core.files import write_json
        from keras_vae.data.datasets import load_dataset

        train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
        if train.labels is None or test.labels is None:
            sys.exit(f"error: {args.data} needs y_train and y_test (the digit labels)")
        data = (train.images, np.asarray(train.labels), test.images, np.asarray(test.labels))
        for digit in args.digits:
            path = os.path.join(args.out, f"digit_{digit}.json")
            if os.path.exists(path):
                print(f"digit {digit}: done already ({path})", file=sys.stderr)
                continue
            started, cpu_started = time.perf_counter(), time.process_time()
            result = run_digit(digit, args, data)
            result["wall_seconds"] = time.perf_counter() - started
            result["cpu_seconds"] = time.process_time() - cpu_started
            write_json(result, path)
            print(f"digit {digit}: {(time.perf_counter() - started) / 60:.1f} min, "
                  f"log_px AUROC {result['scores']['log_px']['auroc']:.3f}", file=sys.stderr,
                  flush=True)
    print_table(args.out)


if __name__ == "__main__":
    main()
