"""Export a trained VAE's decoder to ONNX (checked against Keras before it is written).

MODEL is a .keras file or a run directory; it may have been trained on any
backend. The graph: input `z` float32 [batch, latent_dim] -> output `x_mean`
float32 [batch, H, W, C], with metadata (precision, latent_dim, image_shape,
likelihood, keras_vae_version, source_backend, dataset, created).

--precision int8 writes a quantized decoder (onnxruntime.quantization, static,
calibrated on z from the model's prior, 7-bit weights so that it computes the
same numbers on every CPU) for about 3x the fp32 throughput at batch 256 on a
CPU with VNNI int8 instructions. Its cost is measured as test NLL, with the same
images and noise for both decoders, and the file is refused when int8 costs
more than --max-nll-cost nats (unless --force). The file's metadata names the
recipe and the CPU and onnxruntime version the cost was measured on.

A HierarchicalVAE exports in noise space (docs/hierarchical.md): the decoder takes the
standard-normal noise `z` [batch, D] of all its latent groups, the encoder gives the
posterior in that space, and --encoder-out also writes log_weight.onnx beside the
encoder, the graph that keras-vae score and /v1/score estimate log p(x) with.

A prior fitted after training (keras-vae fit-prior; RUN/prior.keras, or --prior) is written
as prior.onnx beside the decoder, checked against Keras as the decoder is (docs/sampling.md).
"""

import argparse
import os
import sys
from typing import NamedTuple

from keras_vae.core.anomaly import SCORES
from keras_vae.core import contract
from keras_vae.core.contract import ANOMALY_THRESHOLD
from keras_vae.core.contract import DEFAULT_OPSET
from keras_vae.core.contract import PARITY_TOLERANCE

from keras_vae.commands.false_positive_rate import resolve_false_positive_rate
from keras_vae.commands.quiet import add_verbose_option
from keras_vae.commands.quiet import start_keras
from keras_vae.export.quantization import DEFAULT_RECIPE
from keras_vae.export.quantization import MAX_NLL_COST
from keras_vae.export.quantization import RECIPES

EXAMPLES = """
examples:
  keras-vae export runs/digits --out runs/digits/decoder.onnx
  keras-vae export runs/mnist --out decoder.onnx --encoder-out encoder.onnx
  keras-vae export runs/mnist --out decoder.onnx --triton-repo model_repository
  keras-vae export runs/mnist --precision int8 --out decoder.int8.onnx
  keras-vae export vae.keras --precision int8 --dataset data/mnist.npz --out d8.onnx
  keras-vae export runs/mnist --out decoder.onnx --encoder-out encoder.onnx --anomaly-fpr 0.01
  keras-vae export runs/mnist --out decoder.onnx --prior runs/mnist/flow.keras   # + prior.onnx

then: keras-vae generate decoder.onnx -n 64 --out samples.png
"""


PROG = "keras-vae export"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a run directory (uses its model.keras) or a .keras file")
    parser.add_argument("--out", required=True, help="where to write the decoder .onnx")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default: {DEFAULT_OPSET})")
    parser.add_argument("--encoder-out", help="also export the encoder x -> z_mean, z_log_var "
                        "(and, for a hierarchical model, log_weight.onnx beside it)")
    parser.add_argument("--triton-repo",
                        help="also write a Triton model repository in this directory")
    parser.add_argument("--model-name", default="vae_decoder",
                        help="model name in the Triton repository (default: vae_decoder)")
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE,
                        help="the largest difference allowed between onnxruntime and Keras on the "
                             "same inputs (pixels absolute, logits and log weights relative to "
                             f"their size above 1; default: {PARITY_TOLERANCE:g}); deep models "
                             "can need 1e-4")
    parser.add_argument("--prior", help="a fitted prior's .keras file (keras-vae fit-prior) to write "
                        "as prior.onnx beside the decoder (default: RUN/prior.keras, if there is one)")
    parser.add_argument("--no-prior", action="store_true", help="write no prior.onnx")
    parser.add_argument("--prior-steps", type=int, help="a diffusion prior's sampling steps in "
                        "prior.onnx (default: its own)")
    int8 = parser.add_argument_group("int8")
    int8.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                      help="the decoder's arithmetic (default: fp32)")
    int8.add_argument("--max-nll-cost", type=float, default=MAX_NLL_COST,
                      help="most test NLL, in nats per example, that int8 may cost "
                           f"(default: {MAX_NLL_COST:g})")
    int8.add_argument("--force", action="store_true",
                      help="write the int8 decoder even when it fails its checks (with a warning)")
    int8.add_argument("--nll-images", type=int, default=1000,
                      help="test images for the NLL check, spread through the split (default: "
                           "1000, or all of a smaller split)")
    int8.add_argument("--nll-samples", type=int, default=200,
                      help="importance samples per image for the NLL check (default: 200)")
    int8.add_argument("--int8-recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                      help="activations x weights: u8s7 (7-bit weights: the same numbers on "
                           "every CPU), u8s8 (8-bit weights: exact only on CPUs with VNNI), "
                           f"u8u8 (docs/export.md compares them; default: {DEFAULT_RECIPE})")
    int8.add_argument("--dataset",
                      help="test images for the NLL check (default: the run's dataset)")
    int8.add_argument("--data-dir", help="TFDS data directory (default: the run's)")
    anomaly = parser.add_argument_group(
        "anomaly threshold", "set on the test split of the run's dataset (or --dataset): "
        "held-out normal images; stored in the export's metadata for /v1/score")
    level = anomaly.add_mutually_exclusive_group()
    level.add_argument("--anomaly-fpr", type=float,
                       help="flag at most this fraction of the held-out images (e.g. 0.01)")
    level.add_argument("--anomaly-percentile", type=float,
                       help="threshold at this percentile of their scores (99 = --anomaly-fpr 0.01)")
    anomaly.add_argument("--anomaly-score", choices=SCORES,
                         default="log_px", help="-log p(x), -ELBO, the reconstruction error, or "
                         "typicality: |-log p(x) - their mean| (default: log_px)")
    anomaly.add_argument("--anomaly-samples", type=int, default=100,
                         help="importance samples K of the score; the threshold holds at this K "
                              "only (default: 100)")
    anomaly.add_argument("--anomaly-images", type=int,
                         help="use N test images, evenly spaced through the split (default: all)")
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    if args.opset < 13:
        parser.error("--opset must be 13 or newer (17 or newer recommended)")
    if args.nll_images < 1 or args.nll_samples < 1:
        parser.error("--nll-images and --nll-samples must be at least 1")
    if not args.max_nll_cost >= 0:
        parser.error("--max-nll-cost must be a number >= 0")
    if not args.tolerance > 0:
        parser.error("--tolerance must be a positive number")
    if args.prior and args.no_prior:
        parser.error("--prior and --no-prior exclude each other")
    if args.prior_steps is not None and args.prior_steps < 1:
        parser.error("--prior-steps must be at least 1")
    resolve_false_positive_rate(parser, args, "anomaly_fpr", "anomaly_percentile")
    if args.anomaly_samples < 1 or (args.anomaly_images is not None and args.anomaly_images < 1):
        parser.error("--anomaly-samples and --anomaly-images must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    # One conversion path for every origin backend: load under TensorFlow, convert with tf2onnx.
    start_keras(args, backend="tensorflow")
    from keras_vae.training.run_directory import load_vae
    from keras_vae.training.run_directory import read_run_config
    from keras_vae.training.run_directory import resolve_model_path
    from keras_vae.evaluation.evaluate import spread_subset
    from keras_vae.export.onnx import ExportError
    from keras_vae.export.onnx import export_decoder
    from keras_vae.export.onnx import export_encoder
    from keras_vae.export.int8 import export_int8_decoder
    from keras_vae.export.triton import write_triton_repository
    from keras_vae.export.hierarchical import export_hierarchical
    from keras_vae.models.hierarchical import HierarchicalVAE
    from keras_vae.export.prior import export_prior, prior_metadata, prior_path_beside
    from keras_vae.priors.fitting import load_prior

    try:
        for out in filter(None, (args.out, args.encoder_out)):
            directory = os.path.dirname(os.path.abspath(out))
            if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
                raise ValueError(f"cannot write {out}: {directory} is not a writable directory")
        _, run_dir = resolve_model_path(args.model)
        config = read_run_config(run_dir)
        vae = load_vae(args.model)
        # The .keras file records the backend it was trained on; config.json is the
        # fallback for models saved before it did.
        metadata = {"source_backend": vae.source_backend or config.get("backend", "unknown"),
                    "dataset": config.get("dataset", "unknown")}
        split = None
        if args.anomaly_fpr is not None or args.precision == "int8":
            split = _test_split(args, vae, config)
        if args.anomaly_fpr is not None:
            metadata[ANOMALY_THRESHOLD] = _anomaly_threshold(args, vae, split)
        hierarchical = isinstance(vae, HierarchicalVAE)
        prior_file = _prior_path(args, run_dir)
        prior = load_prior(prior_file) if prior_file else None
        if prior is not None:  # checked before anything is written: it must fit this model
            prior_metadata(vae, prior, args.prior_steps)
        if hierarchical and args.precision == "int8":
            raise ValueError("int8 export is for the single-latent model's decoder; export a "
                             "HierarchicalVAE with --precision fp32")
        if hierarchical:
            # The log-weight graph scores images (keras-vae score, /v1/score): beside the encoder.
            log_weight_out = args.encoder_out and os.path.join(
                os.path.dirname(os.path.abspath(args.encoder_out)), contract.LOG_WEIGHT_FILE)
            written = export_hierarchical(vae, args.out, args.encoder_out, log_weight_out,
                                          args.opset, metadata, tolerance=args.tolerance)
            decoder = written.pop("decoder")
        elif args.precision == "int8":
            images, labels = split.images, _split_labels(vae, split, args.nll_images)
            print(f"int8: quantizing, then measuring the test NLL of both decoders on "
                  f"{min(args.nll_images, len(images))} images (K = {args.nll_samples}) ...",
                  flush=True)
            decoder = export_int8_decoder(vae, args.out, spread_subset(images, args.nll_images),
                                          args.opset, metadata, args.nll_samples,
                                          args.max_nll_cost, args.force,
                                          recipe=args.int8_recipe, test_labels=labels)
        else:
            decoder = export_decoder(vae, args.out, args.opset, metadata, args.tolerance)
        summaries = [decoder]
        if hierarchical:
            summaries += list(written.values())
        elif args.encoder_out:
            summaries.append(export_encoder(vae, args.encoder_out, args.opset, metadata,
                                            args.tolerance))
        if prior is not None:
            summaries.append(export_prior(vae, prior, prior_path_beside(args.out), args.opset,
                                          metadata, steps=args.prior_steps,
                                          tolerance=args.tolerance))
        if args.triton_repo:
            model_dir = write_triton_repository(args.out, args.triton_repo, args.model_name,
                                                getattr(vae, "noise_size", vae.latent_dim),
                                                vae.image_shape,
                                                precision=args.precision,
                                                conditional=vae.conditional)
            print(f"Triton model repository: {os.path.abspath(model_dir)}")
    except ExportError as error:
        hint = " (--tolerance sets the bound)" if "differs from Keras" in str(error) else ""
        sys.exit(f"error: {error}{hint}")
    except (ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"error: {error}")
    for summary in summaries:
        print(f"Wrote {summary['path']}")
        print(f"  {summary['precision']}, size {summary['bytes'] / 1e6:.2f} MB, opset "
              f"{summary['opset']}, {summary['seconds']:.1f} s")
        for kind in ("inputs", "outputs"):
            shapes = ", ".join(f"{name} {shape}" for name, shape in summary[kind].items())
            print(f"  {kind}: {shapes}")
        parity = ", ".join(f"batch {b}: {d:.1e}" for b, d in summary["max_abs_diff"].items())
        print(f"  max |onnxruntime fp32 - keras|: {parity}")
        if "int8" in summary:
            report = summary["int8"]
            print(f"  int8 against fp32 on {report['images']} test images, K = "
                  f"{report['num_samples']}, same noise: NLL {report['nll_int8']:.3f} against "
                  f"{report['nll_fp32']:.3f} nats, cost {report['cost']:+.3f} ± "
                  f"{report['cost_standard_error']:.3f}; max |int8 - fp32| output "
                  f"{report['max_output_difference']:.3f}")
            machine = report["measured_on"]
            flags = ", ".join(f"{flag} {'unknown' if machine[flag] is None else machine[flag]}"
                              for flag in ("avx2", "avx512_vnni", "avx_vnni"))
            print(f"  recipe {report['recipe']}, measured on {machine['cpu']} ({flags}), "
                  f"onnxruntime {machine['onnxruntime']}")
        for warning in summary.get("warnings", []):
            print(f"  WARNING (--force): {warning}", file=sys.stderr)


def _prior_path(args, run_dir):
    """The fitted prior to export: --prior, else RUN/prior.keras when it exists; None with
    --no-prior."""
    if args.no_prior:
        return None
    if args.prior:
        return args.prior
    default = run_dir and os.path.join(run_dir, "prior.keras")
    return default if default and os.path.isfile(default) else None


class TestSplit(NamedTuple):
    """The test split that int8's NLL check and the anomaly threshold both use."""

    dataset: str
    images: object  # float32 (N, H, W, C)
    labels: object  # int (N,) or None
    binarized: bool


def _test_split(args, vae, config):
    """The model's test split, read once for int8's NLL check and the anomaly threshold."""
    from keras_vae.evaluation.evaluate import test_images

    dataset = args.dataset or config.get("dataset")
    if not dataset:
        needs = ("--anomaly-fpr sets its threshold" if args.anomaly_fpr is not None
                 else "--precision int8 measures the NLL cost")
        raise ValueError(f"{needs} on test images: pass --dataset (this model has no run "
                         "directory naming one)")
    images, labels, binarized = test_images(vae, dataset, args.data_dir or config.get("data_dir"),
                                            binarized=config.get("binarize", False))
    return TestSplit(dataset, images, labels, binarized)


def _split_labels(vae, split, count):
    """The labels of the test split's ``spread_subset`` of ``count`` images, for a class-conditional
    model (None for an unconditional one); ValueError when the split has none."""
    from keras_vae.data.sources import labels_to_score
    from keras_vae.evaluation.evaluate import spread_subset

    labels = labels_to_score(split.labels, vae.conditional, f"the {split.dataset} test split")
    return None if labels is None else spread_subset(labels, count)


def _anomaly_threshold(args, vae, split):
    """The ``anomaly_threshold`` metadata value, set on the test split (keras_vae.evaluation.anomaly)."""
    from keras_vae.evaluation.anomaly import calibrate_keras
    from keras_vae.core.anomaly import encode_threshold
    from keras_vae.evaluation.evaluate import spread_subset

    dataset, binarized = split.dataset, split.binarized
    images = spread_subset(split.images, args.anomaly_images)
    labels = _split_labels(vae, split, args.anomaly_images)
    print(f"anomaly threshold: scoring {len(images)} test images (K = {args.anomaly_samples}) ...",
          flush=True)
    threshold = calibrate_keras(vae, images, f"{dataset} test" + (" (binarized)" if binarized else ""),
                                args.anomaly_score, args.anomaly_fpr, args.anomaly_samples,
                                labels=labels)
    print(f"anomaly threshold: {threshold.describe()}", flush=True)
    return encode_threshold(threshold)


if __name__ == "__main__":
    main()
