"""Score images for anomaly detection: one CSV row per image, from a run or from ONNX files.

MODEL is a run directory (or a .keras file), scored with Keras, or an exported
decoder.onnx with its encoder.onnx (--encoder; default: encoder.onnx beside it),
scored with onnxruntime and no Keras. With the same --seed both give the same
scores, up to the export's parity.

A class-conditional model scores log p(x|y), each image under its own label, so the
images need labels (y_<split> of a .npz, the class folders of an image folder).

Each row: index, log_px (importance-sampled log p(x) with K = --num-samples, nats),
elbo (the K-sample ELBO, nats) and recon_mse (mean squared error of the reconstruction
from the posterior mean, per pixel), and, when a threshold is known, anomalous (0/1).
Low log_px, low elbo and high recon_mse are unusual.

A threshold is set for a target false-positive rate on images of *normal* data
(--calibrate-fpr 0.01: at most 1 % of them are flagged) and can be written into an
export's metadata (--write-threshold decoder.onnx), where keras-vae serve's
/v1/score reads it. A log_px or elbo threshold holds only at the K that set it.
"""

import argparse
import os
import sys
import time

from keras_vae.core.anomaly import SCORES
from keras_vae.commands.false_positive_rate import resolve_false_positive_rate
from keras_vae.commands.quiet import add_verbose_option
from keras_vae.commands.quiet import add_backend_option
from keras_vae.commands.quiet import start_keras

EXAMPLES = """
examples:
  keras-vae score runs/mnist --dataset data/mnist.npz --binarize --out scores.csv
  keras-vae score decoder.onnx --encoder encoder.onnx --dataset data/mnist.npz --out scores.csv \\
      --top 64 --grid most_anomalous.png
  keras-vae score runs/digits --dataset digits --split test --num-samples 1000 --out s.csv
  keras-vae score decoder.onnx --dataset data/normal.npz --key x_valid --out normal.csv \\
      --calibrate-fpr 0.01 --score log_px --write-threshold decoder.onnx
"""

PROG = "keras-vae score"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a run directory, a .keras file, or an exported decoder.onnx")
    parser.add_argument("--encoder", help="the encoder.onnx of an ONNX decoder (default: "
                                          "encoder.onnx beside it)")
    parser.add_argument("--log-weight", help="the log_weight.onnx of a hierarchical ONNX decoder "
                                             "(default: log_weight.onnx beside it or the encoder)")
    parser.add_argument("--out", required=True, help="the CSV file to write")
    data = parser.add_argument_group("images")
    data.add_argument("--dataset", help="'digits', a .npz file, or a TFDS name (default: the "
                                        "run's dataset, or the export's)")
    data.add_argument("--split", default="test", help="the split to score (default: test)")
    data.add_argument("--key", help="a .npz array to score in place of x_<split>")
    data.add_argument("--data-dir", help="TFDS data directory")
    data.add_argument("--binarize", action="store_true",
                      help="binarize the images once (--seed) first, as a model trained with "
                           "--dynamic-binarization or --binarize saw them")
    data.add_argument("--max-images", type=int, help="score only the first N images")
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument("--num-samples", type=int, default=100,
                         help="importance samples K per image (default: 100)")
    scoring.add_argument("--batch-size", type=int, default=100, help="images per batch")
    scoring.add_argument("--seed", type=int, default=0, help="the noise seed (default: 0)")
    add_backend_option(scoring, "Keras backend for a run directory (default: $KERAS_BACKEND)")
    scoring.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_verbose_option(scoring)
    ranking = parser.add_argument_group("ranking and thresholds")
    ranking.add_argument("--score", choices=SCORES, default="log_px",
                         help="the score that ranks images and sets a threshold: log_px "
                              "(-log p(x)), elbo (-ELBO), recon, or typicality (|-log p(x) - "
                              "c|, c the mean NLL of normal images: also flags images that "
                              "are too likely, such as blank ones) (default: log_px)")
    ranking.add_argument("--top", type=int, default=0,
                         help="with --grid: how many of the most anomalous images to show")
    ranking.add_argument("--grid", help="PNG grid of the --top most anomalous images, most first")
    ranking.add_argument("--typical-grid", help="PNG grid of the --top least anomalous images")
    ranking.add_argument("--grid-scale", type=int, default=1,
                         help="enlarge the grids this many times (default: 1)")
    calibration = ranking.add_mutually_exclusive_group()
    calibration.add_argument("--calibrate-fpr", type=float,
                             help="set a threshold flagging this fraction of these (normal) images")
    calibration.add_argument("--calibrate-percentile", type=float,
                             help="set the threshold at this percentile of these images' scores "
                                  "(99 is --calibrate-fpr 0.01)")
    ranking.add_argument("--write-threshold", nargs="+", metavar="ONNX",
                         help="write the calibrated threshold into these exported files' metadata")
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.batch_size < 1:
        parser.error("--num-samples and --batch-size must be at least 1")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be at least 1")
    if (args.grid or args.typical_grid) and args.top < 1:
        parser.error("--grid and --typical-grid need --top N (N >= 1)")
    if args.grid_scale < 1:
        parser.error("--grid-scale must be at least 1")
    resolve_false_positive_rate(parser, args, "calibrate_fpr", "calibrate_percentile")
    if args.write_threshold and args.calibrate_fpr is None:
        parser.error("--write-threshold needs --calibrate-fpr or --calibrate-percentile")
    return args


def _progress(total, quiet):
    """A callback printing 'scored n/N images' on stderr after each batch."""
    if quiet:
        return None
    done, started = [0], time.perf_counter()

    def report(count):
        done[0] += count
        elapsed = time.perf_counter() - started
        print(f"\rscored {done[0]}/{total} images ({elapsed:.1f} s)", end="\n" if done[0] >= total
              else "", file=sys.stderr, flush=True)
    return report


def _scorer(args):
    """(score(ScoreImages, progress) -> ImageScores, the model's own threshold or None, default
    dataset). A class-conditional model scores −log p(x|y) with the images' labels."""
    from keras_vae.data.sources import labels_to_score

    if args.model.endswith(".onnx"):
        from keras_vae.core import contract
        from keras_vae.serving.encoder import Encoder
        from keras_vae.serving.onnx_model import ModelLoadError
        from keras_vae.serving.sampler import Sampler
        from keras_vae.serving.scoring import onnx_scores, served_threshold

        encoder_path = args.encoder or os.path.join(os.path.dirname(args.model), "encoder.onnx")
        if not os.path.exists(encoder_path):
            raise FileNotFoundError(f"no encoder: {encoder_path} does not exist; pass --encoder")
        try:
            decoder, encoder = Sampler(args.model), Encoder(encoder_path)
            encoder.check_pairs_with(decoder)
        except ModelLoadError as exc:
            raise ValueError(str(exc)) from None
        dataset = decoder.metadata.get(contract.DATASET)
        if decoder.groups is not None:  # a hierarchical export: scored by its log-weight graph
            from keras_vae.serving.hierarchical import hierarchical_score_function
            return (hierarchical_score_function(decoder, encoder, args), served_threshold(decoder),
                    None if dataset == "unknown" else dataset)
        if args.log_weight:
            raise ValueError("--log-weight goes with a hierarchical decoder")

        def score(data, progress):
            return onnx_scores(encoder, decoder, data.images, args.num_samples, args.batch_size,
                               args.seed, progress,
                               labels_to_score(data.labels, decoder.conditional, data.description))
        return score, served_threshold(decoder), None if dataset == "unknown" else dataset
    if args.encoder or args.log_weight:
        raise ValueError("--encoder and --log-weight go with an ONNX decoder, not with a run directory")
    start_keras(args)
    from keras_vae.evaluation.anomaly import keras_scores
    from keras_vae.training.run_directory import load_vae, read_run_config, resolve_model_path

    _, run_dir = resolve_model_path(args.model)
    vae = load_vae(args.model)

    def score(data, progress):
        return keras_scores(vae, data.images, args.num_samples, args.batch_size, args.seed, progress,
                            labels_to_score(data.labels, vae.conditional, data.description))
    return score, None, read_run_config(run_dir).get("dataset")


def run(args):
    """Scores, writes the CSV (and grids, and thresholds); returns the lines to print."""
    from keras_vae.data.sources import load_images
    from keras_vae.core.anomaly import scores_csv, threshold_from_scores
    from keras_vae.core.files import write_text_atomic
    from keras_vae.core.files import write_bytes_atomic
    from keras_vae.core.images import encode_png, image_grid

    def save_grid(images, path, scale):
        write_bytes_atomic(path, encode_png(image_grid(images, scale=scale)))

    for path in filter(None, (args.out, args.grid, args.typical_grid)):
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ValueError(f"cannot write {path}: {directory} is not a directory")
    for path in args.write_threshold or ():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--write-threshold: no such file {path}")
    score, threshold, default_dataset = _scorer(args)
    dataset = args.dataset or default_dataset
    if not dataset:
        raise ValueError("which images? pass --dataset (this model does not name its dataset)")
    data = load_images(dataset, args.split, args.key, args.data_dir, args.binarize, args.seed,
                       args.max_images)
    scores = score(data, _progress(len(data.images), args.quiet))
    lines = []
    if args.calibrate_fpr is not None:
        threshold = threshold_from_scores(scores, args.score, args.calibrate_fpr, data.description)
        lines.append(f"threshold: {threshold.describe()}")
    elif threshold is not None and threshold.score != "recon" \
            and threshold.num_samples != args.num_samples:
        lines.append(f"the export's threshold was set with K = {threshold.num_samples}, not "
                     f"{args.num_samples}: no anomalous column (score with --num-samples "
                     f"{threshold.num_samples})")
        threshold = None
    write_text_atomic(args.out, scores_csv(scores, data.names, threshold))
    lines.append(f"Wrote {args.out}: {len(scores)} images of {data.description}, K = "
                 f"{args.num_samples}; mean log_px {scores.log_px.mean():.3f} nats, mean elbo "
                 f"{scores.elbo.mean():.3f} nats, mean recon_mse {scores.recon.mean():.5f}")
    if threshold is not None:
        flagged = threshold.is_anomalous(scores)
        lines.append(f"anomalous: {int(flagged.sum())} of {len(scores)} ({threshold.describe()})")
    center = threshold.center if threshold is not None and threshold.score == args.score else None
    order = scores.anomaly(args.score, center).argsort(kind="stable")[::-1]  # most anomalous first
    if args.grid:
        save_grid(data.images[order[: args.top]], args.grid, args.grid_scale)
        lines.append(f"Wrote {args.grid}: the {min(args.top, len(order))} most anomalous by "
                     f"{args.score}, row by row")
    if args.typical_grid:
        save_grid(data.images[order[::-1][: args.top]], args.typical_grid, args.grid_scale)
        lines.append(f"Wrote {args.typical_grid}: the {min(args.top, len(order))} least anomalous")
    if args.write_threshold:
        from keras_vae.serving.scoring import write_threshold

        for path in args.write_threshold:
            write_threshold(path, threshold)
            lines.append(f"Wrote the threshold into {path}'s metadata")
    return lines


def main(argv=None):
    args = parse_args(argv)
    try:
        lines = run(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"{PROG}: error: {error}")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
