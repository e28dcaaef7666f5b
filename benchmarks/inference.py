"""Decoder inference: onnxruntime against the Keras decoder on each backend.

Builds (or loads, --model) a VAE for 28×28 images, exports its decoder to ONNX, then times
z -> x_mean at batch 1, 16 and 256: `predict_on_batch` of the Keras decoder (sigmoid included)
under each backend in its own process, and `InferenceSession.run` of the ONNX graph (CPU
provider, as `serving/` uses it). Latency is the median of repeated calls after warm-up.
Prints a Markdown table with the onnxruntime speed-up measured in this run.

examples:
  python benchmarks/inference.py
  python benchmarks/inference.py --model runs/mnist/model.keras
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from common import BACKENDS
from common import machine_line
from common import markdown_table
from common import median_latency
from common import run_worker

BATCH_SIZES = (1, 16, 256)


def prepare_worker(args):
    """TensorFlow process: save the model as .keras and export decoder.onnx into --workdir."""
    import keras

    import keras_vae
    from keras_vae.export import export_decoder

    if args.model:
        vae = keras.models.load_model(args.model)
    else:
        vae = keras_vae.VAE(input_shape=(28, 28, 1), latent_dim=16)
        vae.compile(optimizer="adam")
    vae.save(os.path.join(args.workdir, "vae.keras"))
    export_decoder(vae, os.path.join(args.workdir, "decoder.onnx"))
    print(json.dumps({"latent_dim": vae.latent_dim, "hidden_units": list(vae.hidden_units),
                      "architecture": vae.architecture}))


def keras_worker(args):
    """Any backend: median latency of predict_on_batch of the decoder z -> x_mean."""
    import keras

    import keras_vae  # noqa: F401

    vae = keras.models.load_model(os.path.join(args.workdir, "vae.keras"))
    z_input = keras.Input((vae.latent_dim,))
    decoder = keras.Model(z_input, vae.decoder_output_to_mean(vae.decoder(z_input)))
    rng = np.random.default_rng(0)
    latency = {}
    for batch_size in BATCH_SIZES:
        z = rng.standard_normal((batch_size, vae.latent_dim)).astype("float32")
        latency[batch_size] = median_latency(lambda: decoder.predict_on_batch(z))
    print(json.dumps(latency))


def onnxruntime_latency(path, latent_dim):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    latency = {}
    for batch_size in BATCH_SIZES:
        z = rng.standard_normal((batch_size, latent_dim)).astype("float32")
        latency[str(batch_size)] = median_latency(lambda: session.run(["x_mean"], {"z": z}))
    return latency


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained .keras file (default: a fresh MNIST-sized VAE)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--worker", choices=["prepare", "keras"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "prepare":
        return prepare_worker(args)
    if args.worker == "keras":
        return keras_worker(args)

    with tempfile.TemporaryDirectory() as workdir:
        print("exporting the decoder ...", file=sys.stderr, flush=True)
        model_args = ["--model", os.path.abspath(args.model)] if args.model else []
        info = run_worker(__file__, ["--worker", "prepare", "--workdir", workdir, *model_args],
                          "tensorflow")
        keras_latency = {}
        for backend in args.backends.split(","):
            print(f"timing the Keras decoder on {backend} ...", file=sys.stderr, flush=True)
            keras_latency[backend] = run_worker(__file__, ["--worker", "keras", "--workdir", workdir],
                                                backend)
        print("timing onnxruntime ...", file=sys.stderr, flush=True)
        ort_latency = onnxruntime_latency(os.path.join(workdir, "decoder.onnx"), info["latent_dim"])

    rows = []
    for batch_size in map(str, BATCH_SIZES):
        ort = ort_latency[batch_size]
        row = [batch_size, f"{ort * 1e3:.3f}", f"{int(batch_size) / ort:,.0f}"]
        for backend, latency in keras_latency.items():
            row += [f"{latency[batch_size] * 1e3:.3f}", f"{latency[batch_size] / ort:.1f}×"]
        rows.append(row)
    header = ["batch", "onnxruntime ms", "onnxruntime img/s"]
    for backend in keras_latency:
        header += [f"keras {backend} ms", f"onnxruntime speed-up vs {backend}"]
    print(f"Decoder z -> x_mean, {info['architecture']} {info['hidden_units']}, latent "
          f"{info['latent_dim']}, 28×28×1, median latency. {machine_line()}\n")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
