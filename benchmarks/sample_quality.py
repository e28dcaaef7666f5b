"""Samples judged by number: Fréchet distance, precision/recall/density/coverage, the share
confidently classified and the class balance, for models' samples against the test split.

A small CNN is trained on the dataset's labels once and cached (`keras_vae.evaluation.
sample_metrics`; $KERAS_VAE_CACHE or ~/.cache/keras_vae); its 128 penultimate features are
the space the distances are measured in. Each model draws --samples images (the pixel
means p(x|z)) at each --temperatures value, which are compared with the whole test split. The
first row is the floor: as many training images, which a perfect model's samples would match.

A model is one of:

* a run directory or a model's .keras file: z from the model's own prior (for a
  HierarchicalVAE every group's prior σ is scaled), in Keras;
* a fitted prior's .keras file (keras-vae fit-prior): z from it, decoded by the model it was
  fitted to (its config names the model file), in Keras;
* an exported decoder.onnx: as served, in onnxruntime: a row per --samplers entry, the model's
  own prior ("prior") and the prior fitted after training beside it ("fitted", prior.onnx),
  and the fitted prior's fit time. A decoder given in several folders (one per fitted prior)
  gets its own prior's rows once.

--reconstructions adds a row per model: its reconstructions of the test images (decoded
posterior means; Bernoulli models encode the binarized test split), the best any prior
over its latents can do; an exported decoder needs its encoder.onnx beside it.

Prints a Markdown table: run, model, temperature, FD (lower is better), precision, recall,
density, coverage, the share of samples whose top class has probability above --confidence,
the rarest and commonest class shares, every class's share and the fitted prior's fit time in
CPU-minutes; then, for each decoder.onnx with a fitted prior, the milliseconds to draw and
decode 1,000 images with its own prior (the decoder alone) and with the fitted one (one
onnxruntime thread, the median of --timing-repeats, the two timed in turn).

examples:
  python benchmarks/sample_quality.py --data data/mnist.npz runs/mnist runs/mnist-hvae
  python benchmarks/sample_quality.py --data data/mnist.npz runs/mnist-hvae \\
      --temperatures 1.0 0.9 0.8 0.7 0.6 --json runs/mnist-hvae/sample_metrics.json
  python benchmarks/sample_quality.py --data data/mnist.npz runs/mnist/gmm.keras \\
      runs/mnist/onnx/decoder.onnx --reconstructions
"""

import argparse
import hashlib
import os
import statistics
import sys
import time

import numpy as np

from common import machine_line
from common import markdown_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="MODEL",
                        help="run directories or .keras files (models, or fitted priors), or "
                             "exported decoder.onnx files")
    parser.add_argument("--data", required=True,
                        help="a labelled dataset: .npz with x_train, y_train, x_test, y_test, "
                             "'digits', a TFDS name or a folder with class subfolders")
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--samples", type=int, default=10000, help="samples per row (default: 10000)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                        help="prior temperatures, one row each (default: 1)")
    parser.add_argument("--samplers", nargs="+", choices=["prior", "fitted"],
                        default=["prior", "fitted"],
                        help="decoder.onnx: the samplers to measure (default: both, 'fitted' "
                             "where prior.onnx is beside the decoder)")
    parser.add_argument("--reconstructions", action="store_true",
                        help="also a row of each model's reconstructions of the test images")
    parser.add_argument("--timing-repeats", type=int, default=5,
                        help="decoder.onnx: timed draws of 1,000 images per sampler (default: 5; "
                             "0: no timing)")
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
        parser.error("nothing to measure: give a MODEL, or leave out --no-floor")
    if any(t < 0 for t in args.temperatures) or args.timing_repeats < 0:
        parser.error("--temperatures and --timing-repeats must be non-negative")
    return args


def row(name, model, temperature, metrics, fit_minutes=None):
    shares = metrics["class_shares"]
    return [name, model, "" if temperature is None else f"{temperature:g}",
            f"{metrics['frechet_distance']:.2f}", f"{metrics['precision']:.3f}",
            f"{metrics['recall']:.3f}", f"{metrics['density']:.3f}", f"{metrics['coverage']:.3f}",
            f"{100 * metrics['confident_share']:.1f} %",
            f"{100 * metrics['rarest_class_share']:.1f} %",
            f"{100 * metrics['commonest_class_share']:.1f} %",
            " ".join(f"{100 * share:.0f}" for share in shares),
            "" if fit_minutes is None else f"{fit_minutes:.2f}"]


class KerasSource:
    """A Keras model (a run directory or .keras file), or a fitted prior's .keras file with it."""

    def __init__(self, path):
        from keras_vae.priors.fitting import load_prior
        from keras_vae.training.run_directory import load_vae

        self.name = os.path.basename(os.path.normpath(path))
        self.prior = None
        try:
            self.model = load_vae(path)
        except ValueError:  # a fitted prior: its config names the model it was fitted to
            self.prior = load_prior(path)
            self.model = load_vae(self.prior.fit_info["model"])
            self.name = f"{os.path.basename(os.path.dirname(self.prior.fit_info['model']))}/{self.name}"
        self.image_shape = tuple(self.model.image_shape)
        self.conditional = getattr(self.model, "conditional", False)
        self.likelihood = self.model.likelihood
        self.key = os.path.abspath(self.prior.fit_info["model"] if self.prior else path)

    def samplers(self, wanted):
        label = type(self.model).__name__
        if self.prior is None:
            return [(label, None, None)]
        return [(f"{label}, fitted {self.prior.kind}", "fitted",
                 self.prior.fit_info.get("cpu_seconds", 0.0) / 60)]

    def sample(self, sampler, n, seed, temperature):
        if sampler is None:
            return self.model.sample(n, seed=seed, temperature=temperature)
        from keras_vae.priors.fitting import sample_images

        return sample_images(self.model, self.prior, n, seed, temperature)

    def reconstruct(self, images):
        return self.model.decode(self.model.encode(images)[0])

    def milliseconds(self, samplers, n, seed, repeats):
        return {}


class OnnxSource:
    """An exported decoder.onnx as served: its prior, the fitted prior.onnx beside it, and its
    encoder.onnx beside it for reconstructions; one onnxruntime thread."""

    def __init__(self, path):
        from keras_vae.core.fitted_prior import PRIOR_FILE
        from keras_vae.serving.sampler import Sampler

        folder = os.path.dirname(os.path.abspath(path))
        self.name = f"{os.path.basename(folder)}/{os.path.basename(path)}"
        self.sampler = Sampler(path, provider="cpu", intra_op_threads=1)
        self.prior = None
        if os.path.isfile(os.path.join(folder, PRIOR_FILE)):
            from keras_vae.serving.fitted import find_prior

            self.prior = find_prior(self.sampler, provider="cpu", intra_op_threads=1)
        self.encoder_path = os.path.join(folder, "encoder.onnx")
        self.image_shape = tuple(self.sampler.image_shape)
        self.conditional = self.sampler.class_names is not None
        self.likelihood = self.sampler.likelihood
        # the same decoder exported into several folders is one model: its outputs tell
        probe = np.linspace(-2, 2, 8 * self.sampler.latent_dim, dtype=np.float32)
        self.key = hashlib.sha256(self.sampler.decode(probe.reshape(8, -1)).tobytes()).hexdigest()

    def samplers(self, wanted):
        rows = []
        if "prior" in wanted:
            rows.append(("ONNX, own prior", "prior", None))
        if "fitted" in wanted and self.prior is not None:
            rows.append((f"ONNX, fitted {self.prior.prior.kind}", "fitted",
                         self.prior.prior.fit.get("cpu_seconds", 0.0) / 60))
        return rows

    def latents(self, sampler, n, seed, temperature):
        from keras_vae.serving.fitted import draw_latents

        return draw_latents(self.sampler, self.prior, sampler, n, seed, temperature)

    def sample(self, sampler, n, seed, temperature):
        return self.sampler.decode(self.latents(sampler, n, seed, temperature), batch_size=1000)

    def reconstruct(self, images):
        from keras_vae.serving.encoder import Encoder

        if not os.path.isfile(self.encoder_path):
            sys.exit(f"error: --reconstructions needs {self.encoder_path}")
        z_mean, _ = Encoder(self.encoder_path, provider="cpu", intra_op_threads=1).encode(images)
        return self.sampler.decode(z_mean, batch_size=1000)

    def milliseconds(self, samplers, n, seed, repeats):
        """Median milliseconds per 1,000 images to draw z and decode, per sampler, timed in turn."""
        times = {sampler: [] for _, sampler, _ in samplers}
        for repeat in range(repeats + 1):
            for sampler in times:
                start = time.perf_counter()
                self.sample(sampler, n, seed + repeat, 1.0)
                if repeat:  # the first round warms up
                    times[sampler].append((time.perf_counter() - start) * 1000 * 1000 / n)
        return {sampler: statistics.median(values) for sampler, values in times.items()}


def source(path):
    return OnnxSource(path) if str(path).endswith(".onnx") else KerasSource(path)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from keras_vae.data.datasets import binarize
    from keras_vae.data.datasets import load_dataset
    from keras_vae.evaluation.sample_metrics import FeatureClassifier
    from keras_vae.evaluation.sample_metrics import Reference
    from keras_vae.evaluation.sample_metrics import sample_metrics

    train = load_dataset(args.data, "train", args.data_dir)
    test = load_dataset(args.data, "test", args.data_dir)
    classifier = FeatureClassifier.train_or_load(train, test, path=args.classifier,
                                                 epochs=args.classifier_epochs, seed=args.seed)
    reference = Reference.of(classifier, test.images)
    measure = dict(nearest_k=args.nearest_k, confidence=args.confidence)
    rows, results, timings, seen = [], [], [], set()
    if not args.no_floor:
        pick = np.random.default_rng(args.seed).choice(len(train), min(args.samples, len(train)),
                                                       replace=False)
        metrics = sample_metrics(train.images[np.sort(pick)], reference, **measure)
        rows.append(row("training images (the floor)", "", None, metrics))
        results.append(dict(run="training images", **metrics))
    for run in args.runs:
        model = source(run)
        if model.image_shape != tuple(test.images.shape[1:]):
            sys.exit(f"error: {run} models {model.image_shape} images, not the "
                     f"{test.images.shape[1:]} images of {args.data}")
        if model.conditional:
            sys.exit(f"error: {run} is class-conditional; measure unconditional models")
        samplers = model.samplers(args.samplers)
        timing = model.milliseconds(samplers, 1000, args.seed, args.timing_repeats) if (
            args.timing_repeats and len(samplers) == 2) else {}
        if timing:
            timings.append([model.name, model.prior.prior.kind, f"{timing['prior']:.1f}",
                            f"{timing['fitted']:.1f}", f"{timing['fitted'] / timing['prior']:.2f}×"])
            results.append(dict(run=run, timing_ms_per_1000=timing))
        for label, sampler, fit_minutes in samplers:
            if sampler in (None, "prior") and (model.key, "prior") in seen:
                continue  # this decoder's own prior is measured already
            seen.add((model.key, "prior" if sampler in (None, "prior") else run))
            for temperature in args.temperatures:
                samples = model.sample(sampler, args.samples, args.seed, temperature)
                metrics = sample_metrics(samples, reference, **measure)
                rows.append(row(model.name, label, temperature, metrics, fit_minutes))
                results.append(dict(run=run, model=label, sampler=sampler, temperature=temperature,
                                    fit_cpu_minutes=fit_minutes, **metrics))
                print(f"{model.name} {label} T={temperature:g}: FD {metrics['frechet_distance']:.2f}",
                      file=sys.stderr, flush=True)
        if args.reconstructions and (model.key, "reconstructions") not in seen:
            seen.add((model.key, "reconstructions"))
            inputs = binarize(test.images, seed=0) if model.likelihood == "bernoulli" else test.images
            metrics = sample_metrics(model.reconstruct(inputs), reference, **measure)
            rows.append(row(model.name, "reconstructions of the test images", None, metrics))
            results.append(dict(run=run, model="reconstructions", **metrics))
    print(f"\n{machine_line()}")
    print(f"\nClassifier: a small Keras CNN ({classifier.path}), {args.classifier_epochs} epochs, "
          f"test accuracy {100 * classifier.accuracy:.2f} %; features: its 128 penultimate "
          f"units. Reference: the {len(test.images):,} test images. {args.samples:,} samples "
          f"per row, seed {args.seed}; precision/recall with k = {args.nearest_k}.\n")
    print(markdown_table(["run", "model", "T", "FD", "precision", "recall", "density",
                          "coverage", f"p(class) > {args.confidence:g}", "rarest class",
                          "commonest class", "share of each class, %", "fit CPU-min"], rows))
    if timings:
        print("\nDrawing and decoding 1,000 images in onnxruntime (one thread; median of "
              f"{args.timing_repeats}), ms:\n")
        print(markdown_table(["decoder", "fitted prior", "own prior (decoder alone)",
                              "fitted prior + decoder", "ratio"], timings))
    if args.json:
        from keras_vae.core.files import write_json

        write_json(dict(classifier_accuracy=classifier.accuracy, rows=results), args.json)


if __name__ == "__main__":
    main()
