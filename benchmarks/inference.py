"""Decoder inference: onnxruntime against the Keras decoder on each backend, and int8 against fp32.

Builds (or loads, --model) a VAE for 28×28 images, exports its decoder to ONNX, then times
z -> x_mean at batch 1, 16 and 256: `predict_on_batch` of the Keras decoder (sigmoid included)
under each backend in its own process, and `InferenceSession.run` of the ONNX graph (CPU
provider, as `keras_vae/serving/` uses it). Latency is the median of repeated calls after warm-up.

It also quantizes the decoder to int8 with each recipe of `keras_vae.export.quantization` (u8s7, the
default of `keras-vae export --precision int8`; u8s8; u8u8) and times them beside fp32, with
the arithmetic each achieves (the
decoder's multiply-adds × 2 per image) against this machine's peak, measured in the same run
as the best of a few plain matrix products in onnxruntime (MatMul in fp32, MatMulInteger in
int8).
Last, for each recipe, the largest |int8 − fp32| output on the same z: as onnxruntime computes
it on this CPU, and as a CPU without VNNI (AVX2, AVX-512 without VNNI) computes it, whose
kernel adds pairs of uint8 × int8 products into int16 with saturation (VPMADDUBSW); the second
comes from the NumPy evaluation of the quantized graph in tests/helpers/int8_reference.py, run here.
Prints Markdown tables with the ratios measured in this run.

examples:
  python benchmarks/inference.py
  python benchmarks/inference.py --model runs/mnist/model.keras
  python benchmarks/inference.py --backends tensorflow      # fewer Keras columns, quicker
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
from keras_vae.export.quantization import RECIPES  # NumPy only: no framework in this process

BATCH_SIZES = (1, 16, 256)


def prepare_worker(args):
    """TensorFlow process: save the model as .keras and export decoder.onnx into --workdir."""
    import keras_vae
    from keras_vae.training.run_directory import load_vae
    from keras_vae.export.onnx import export_decoder
    from keras_vae.export.quantization import quantize_decoder
    from keras_vae.core.contract import DEFAULT_OPSET
    from keras_vae.export.hierarchical import convert_graph, hierarchical_metadata

    if args.model:
        vae = load_vae(args.model)
    else:
        vae = keras_vae.VAE(input_shape=(28, 28, 1), latent_dim=16)
        vae.compile(optimizer="adam")
    vae.save(os.path.join(args.workdir, "vae.keras"))
    fp32_path = os.path.join(args.workdir, "decoder.onnx")
    export_decoder(vae, fp32_path)
    with open(fp32_path, "rb") as f:
        fp32 = f.read()
    for recipe in RECIPES:
        int8 = quantize_decoder(fp32, vae.latent_dim, vae.prior_parameters(), recipe=recipe)
        with open(os.path.join(args.workdir, f"decoder.{recipe}.onnx"), "wb") as f:
            f.write(int8)
    hierarchical = (load_vae(args.hierarchical_model) if args.hierarchical_model else
                    keras_vae.HierarchicalVAE(input_shape=(28, 28, 1), num_groups=4, latent_dim=16,
                                              width=256))
    hierarchical.save(os.path.join(args.workdir, "hierarchical.keras"))
    data, _ = convert_graph(hierarchical, "decoder", DEFAULT_OPSET, hierarchical_metadata(hierarchical))
    with open(os.path.join(args.workdir, "hierarchical.onnx"), "wb") as f:
        f.write(data)
    print(json.dumps({"latent_dim": vae.latent_dim, "hidden_units": list(vae.hidden_units),
                      "architecture": vae.architecture,
                      "flops_per_image": decoder_flops(vae.decoder),
                      "noise_size": hierarchical.noise_size,
                      "hierarchical": f"{hierarchical.architecture}, {hierarchical.num_groups} groups "
                                      f"of {hierarchical.latent_dim}, width {hierarchical.width}"}))


def decoder_flops(decoder):
    """Arithmetic of one decoded image: 2 × the multiply-adds of its Dense and conv layers."""
    import math

    multiply_adds = 0
    for layer in decoder.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            multiply_adds += layer.kernel.shape[0] * layer.kernel.shape[1]
        elif kind in ("Conv2D", "Conv2DTranspose"):
            height, width = layer.output.shape[1:3] if kind == "Conv2D" else layer.input.shape[1:3]
            multiply_adds += height * width * math.prod(layer.kernel.shape)
    return 2 * multiply_adds


PEAK_SHAPES = ((1024, 1024, 1024), (256, 512, 512), (2048, 512, 512))


def peak_matmul(seconds=1.0):
    """This machine's best onnxruntime matrix-product rates: {"fp32": GFLOP/s, "int8": GOP/s}.

    One-node graphs (MatMul on float32, MatMulInteger on uint8 × int8 -> int32) with a
    constant right-hand side, as a decoder layer has, for each (m, k, n) of PEAK_SHAPES;
    the median of repeated calls per shape, the best shape per precision.
    """
    import onnxruntime
    from onnx import TensorProto
    from onnx import helper
    from onnx import numpy_helper

    rng = np.random.default_rng(0)

    def rate(op, m, k, n, a, b, y_type):
        graph = helper.make_graph(
            [helper.make_node(op, ["A", "B"], ["Y"])], "peak",
            [helper.make_tensor_value_info("A", numpy_helper.from_array(a).data_type, [m, k])],
            [helper.make_tensor_value_info("Y", y_type, [m, n])],
            [numpy_helper.from_array(b, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        return 2.0 * m * k * n / median_latency(lambda: session.run(None, {"A": a}), seconds) / 1e9

    peak = {"fp32": 0.0, "int8": 0.0}
    for m, k, n in PEAK_SHAPES:
        peak["fp32"] = max(peak["fp32"], rate(
            "MatMul", m, k, n, rng.standard_normal((m, k), dtype=np.float32),
            rng.standard_normal((k, n), dtype=np.float32), TensorProto.FLOAT))
        peak["int8"] = max(peak["int8"], rate(
            "MatMulInteger", m, k, n, rng.integers(0, 256, (m, k), dtype=np.uint8),
            rng.integers(-128, 128, (k, n), dtype=np.int8), TensorProto.INT32))
    return peak


def keras_worker(args):
    """Any backend: median latency of the decoders z -> x_mean in Keras: predict_on_batch of the
    single-latent one, and the hierarchical one's noise -> pixel means (jit-compiled on JAX)."""
    import keras
    import keras_vae  # noqa: F401  (registers the models for keras.models.load_model)

    vae = keras.models.load_model(os.path.join(args.workdir, "vae.keras"))
    z_input = keras.Input((vae.latent_dim,))
    decoder = keras.Model(z_input, vae.decoder_output_to_mean(vae.decoder(z_input)))
    hierarchical = keras.models.load_model(os.path.join(args.workdir, "hierarchical.keras"))
    decode_noise = hierarchical.compiled_for_inference(hierarchical.noise_to_mean)
    rng = np.random.default_rng(0)
    latency = {"vae": {}, "hierarchical": {}}
    for batch_size in BATCH_SIZES:
        z = rng.standard_normal((batch_size, vae.latent_dim)).astype("float32")
        latency["vae"][batch_size] = median_latency(lambda: decoder.predict_on_batch(z))
        noise = keras.ops.convert_to_tensor(
            rng.standard_normal((batch_size, hierarchical.noise_size)).astype("float32"))
        latency["hierarchical"][batch_size] = median_latency(
            lambda: keras.ops.convert_to_numpy(decode_noise(noise)))
    print(json.dumps(latency))


def onnxruntime_latency(paths, latent_dims, rounds=3):
    """{name: {batch: median seconds}} for each ONNX file (its input width in `latent_dims`, a
    dict by name, or one int for all), the files interleaved round by round."""
    import onnxruntime

    sessions = {name: onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
                for name, path in paths.items()}
    rng = np.random.default_rng(0)
    samples = {name: {str(b): [] for b in BATCH_SIZES} for name in paths}
    for _ in range(rounds):  # interleaved, so that background load hits every file alike
        for batch_size in BATCH_SIZES:
            for name, session in sessions.items():
                width = latent_dims[name] if isinstance(latent_dims, dict) else latent_dims
                z = rng.standard_normal((batch_size, width)).astype("float32")
                samples[name][str(batch_size)].append(
                    median_latency(lambda: session.run(["x_mean"], {"z": z}), min_seconds=0.5))
    return {name: {b: float(np.median(v)) for b, v in by_batch.items()}
            for name, by_batch in samples.items()}


def recipe_errors(paths, latent_dim, batch_size=256):
    """{recipe: (max |int8 − fp32| in onnxruntime, the same with VPMADDUBSW sums, max |onnxruntime −
    exact integer sums|)} on z ~ N(0, I), as float32 pixel-mean differences."""
    import onnx
    import onnxruntime

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "tests"))
    from helpers import int8_reference

    z = {"z": np.random.default_rng(1).standard_normal((batch_size, latent_dim)).astype("float32")}

    def run(path):
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(["x_mean"], z)[0]

    fp32 = run(paths["fp32"])
    errors = {}
    for name, path in paths.items():
        if name == "fp32":
            continue
        model = onnx.load(path)
        here = run(path)
        exact, pairs = (int8_reference.evaluate(model, z, how)["x_mean"]
                        for how in ("exact", "vpmaddubsw"))
        errors[name.split()[1]] = (float(np.abs(here - fp32).max()), float(np.abs(pairs - fp32).max()),
                                   float(np.abs(here - exact).max()))
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained .keras file (default: a fresh MNIST-sized VAE)")
    parser.add_argument("--hierarchical-model",
                        help="a trained HierarchicalVAE .keras file for the hierarchical table "
                             "(default: a fresh MNIST-sized one, 4 groups of 16, width 256)")
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
        if args.hierarchical_model:
            model_args += ["--hierarchical-model", os.path.abspath(args.hierarchical_model)]
        info = run_worker(__file__, ["--worker", "prepare", "--workdir", workdir, *model_args],
                          "tensorflow")
        keras_latency, hierarchical_keras = {}, {}
        for backend in args.backends.split(","):
            print(f"timing the Keras decoders on {backend} ...", file=sys.stderr, flush=True)
            both = run_worker(__file__, ["--worker", "keras", "--workdir", workdir], backend)
            keras_latency[backend], hierarchical_keras[backend] = both["vae"], both["hierarchical"]
        print("timing onnxruntime, fp32 and int8 ...", file=sys.stderr, flush=True)
        paths = {"fp32": os.path.join(workdir, "decoder.onnx")}
        paths.update({f"int8 {recipe}": os.path.join(workdir, f"decoder.{recipe}.onnx")
                      for recipe in RECIPES})
        latency = onnxruntime_latency(paths, info["latent_dim"])
        print("timing the hierarchical decoder against the single-latent one ...", file=sys.stderr,
              flush=True)
        pair = onnxruntime_latency({"fp32": paths["fp32"],
                                    "hierarchical": os.path.join(workdir, "hierarchical.onnx")},
                                   {"fp32": info["latent_dim"], "hierarchical": info["noise_size"]})
        print("measuring the matrix-product peak ...", file=sys.stderr, flush=True)
        peak = peak_matmul()
        print("int8 outputs with exact and with saturating sums ...", file=sys.stderr, flush=True)
        errors = recipe_errors(paths, info["latent_dim"])

    ort_latency = latency["fp32"]
    rows = []
    for batch_size in map(str, BATCH_SIZES):
        ort = ort_latency[batch_size]
        row = [batch_size, f"{ort * 1e3:.4f}", f"{int(batch_size) / ort:,.0f}"]
        for backend, keras_ms in keras_latency.items():
            row += [f"{keras_ms[batch_size] * 1e3:.3f}", f"{keras_ms[batch_size] / ort:.1f}×"]
        rows.append(row)
    header = ["batch", "onnxruntime ms", "onnxruntime img/s"]
    for backend in keras_latency:
        header += [f"keras {backend} ms", f"onnxruntime speed-up vs {backend}"]
    description = (f"{info['architecture']} {info['hidden_units']}, latent {info['latent_dim']}, "
                   f"28×28×1")
    print(f"Decoder z -> x_mean, {description}, median latency. {machine_line()}\n")
    print(markdown_table(header, rows))

    flops = info["flops_per_image"]
    shapes = ", ".join("×".join(map(str, shape)) for shape in PEAK_SHAPES)
    print(f"\nint8 against fp32 in onnxruntime, the same decoder ({flops / 1e6:.2f} MFLOP per "
          f"image), per int8 recipe (activations × weights; u8s7 is the default). Measured peak "
          f"in this run, the best of plain matrix products in onnxruntime ({shapes}; int8 as "
          f"uint8 × int8): fp32 {peak['fp32']:.0f} GFLOP/s, int8 {peak['int8']:.0f} GOP/s "
          f"({peak['int8'] / peak['fp32']:.1f}×).\n")
    rows = []
    for batch_size in map(str, BATCH_SIZES):
        for precision in latency:
            seconds = latency[precision][batch_size]
            achieved = int(batch_size) * flops / seconds / 1e9
            rows.append([batch_size, precision, f"{seconds * 1e3:.4f}",
                         f"{int(batch_size) / seconds:,.0f}", f"{achieved:.0f}",
                         f"{100 * achieved / peak[precision.split()[0]]:.0f} %",
                         f"{latency['fp32'][batch_size] / seconds:.2f}×"])
    print(markdown_table(["batch", "precision", "ms", "img/s", "achieved G(FL)OP/s",
                          "of measured peak", "throughput vs fp32"], rows))

    print("\nint8 recipes: the largest |int8 − fp32| pixel mean on 256 z ~ N(0, I), in onnxruntime "
          "on this CPU and as a CPU without VNNI sums the products (VPMADDUBSW, int16 pairs with "
          "saturation), and onnxruntime's largest difference from exact integer sums (a hidden "
          "unit at a rounding tie may land one level over: about 0.004).\n")
    rows = [[recipe, RECIPES[recipe]["weights"], *(f"{value:.3g}" for value in errors[recipe])]
            for recipe in RECIPES]
    print(markdown_table(["recipe", "weights", "max diff. from fp32, here",
                          "max diff. from fp32, without VNNI", "max diff. of onnxruntime from "
                          "exact sums, here"], rows))

    print(f"\nThe hierarchical decoder ({info['hierarchical']}, noise of {info['noise_size']}) "
          f"against the single-latent one ({description}), both fp32 in onnxruntime in the same "
          "rounds, and against the hierarchical decoder in Keras.\n")
    rows = []
    for batch_size in map(str, BATCH_SIZES):
        single, deep = pair["fp32"][batch_size], pair["hierarchical"][batch_size]
        row = [batch_size, f"{single * 1e3:.4f}", f"{deep * 1e3:.4f}", f"{deep / single:.2f}×"]
        for backend, keras_ms in hierarchical_keras.items():
            row += [f"{keras_ms[batch_size] * 1e3:.3f}", f"{keras_ms[batch_size] / deep:.1f}×"]
        rows.append(row)
    header = ["batch", "single-latent onnxruntime ms", "hierarchical onnxruntime ms",
              "hierarchical / single-latent time"]
    for backend in hierarchical_keras:
        header += [f"hierarchical keras {backend} ms", f"onnxruntime speed-up vs {backend}"]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
