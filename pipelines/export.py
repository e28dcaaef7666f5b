"""Export a trained VAE's decoder to ONNX (checked against Keras before it is written).

MODEL is a .keras file or a run directory; it may have been trained on any
backend. The graph: input `z` float32 [batch, latent_dim] -> output `x_mean`
float32 [batch, H, W, C], with metadata (latent_dim, image_shape, likelihood,
keras_vae_version, source_backend, dataset, created).
"""

import argparse
import os
import sys

EXAMPLES = """
examples:
  python pipelines/export.py runs/digits --out runs/digits/decoder.onnx
  python pipelines/export.py runs/mnist --out decoder.onnx --encoder-out encoder.onnx
  python pipelines/export.py runs/mnist --out decoder.onnx --triton-repo model_repository

then: python serving/generate.py decoder.onnx -n 64 --out samples.png
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a run directory (uses its model.keras) or a .keras file")
    parser.add_argument("--out", required=True, help="where to write the decoder .onnx")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument("--encoder-out", help="also export the encoder x -> z_mean, z_log_var")
    parser.add_argument("--triton-repo",
                        help="also write a Triton model repository in this directory")
    parser.add_argument("--model-name", default="vae_decoder",
                        help="model name in the Triton repository (default: vae_decoder)")
    args = parser.parse_args(argv)
    if args.opset < 13:
        parser.error("--opset must be 13 or newer (17 or newer recommended)")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    # One conversion path for every origin backend: load under TensorFlow, convert with tf2onnx.
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from keras_vae.evaluation import load_vae
    from keras_vae.evaluation import read_run_config
    from keras_vae.evaluation import resolve_model_path
    from keras_vae.export import ExportError
    from keras_vae.export import export_decoder
    from keras_vae.export import export_encoder
    from keras_vae.export import write_triton_repository

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
        summaries = [export_decoder(vae, args.out, args.opset, metadata)]
        if args.encoder_out:
            summaries.append(export_encoder(vae, args.encoder_out, args.opset, metadata))
        if args.triton_repo:
            model_dir = write_triton_repository(args.out, args.triton_repo, args.model_name,
                                                vae.latent_dim, vae.image_shape)
            print(f"Triton model repository: {os.path.abspath(model_dir)}")
    except (ValueError, FileNotFoundError, OSError, ExportError) as error:
        sys.exit(f"error: {error}")
    for summary in summaries:
        print(f"Wrote {summary['path']}")
        print(f"  size {summary['bytes'] / 1e6:.2f} MB, opset {summary['opset']}, "
              f"{summary['seconds']:.1f} s")
        for kind in ("inputs", "outputs"):
            shapes = ", ".join(f"{name} {shape}" for name, shape in summary[kind].items())
            print(f"  {kind}: {shapes}")
        parity = ", ".join(f"batch {b}: {d:.1e}" for b, d in summary["max_abs_diff"].items())
        print(f"  max |onnxruntime - keras|: {parity}")


if __name__ == "__main__":
    main()
