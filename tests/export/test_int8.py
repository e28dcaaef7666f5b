"""The int8 decoder computes what its graph defines, on this CPU and by construction on any.

The truth is `int8_reference`: the quantized graph evaluated in NumPy with exact integer
sums. onnxruntime must match it; a CPU whose int8 kernel saturates (VPMADDUBSW without
VNNI) would not. The same module sums the products as that kernel does, to show that the
default recipe's 7-bit weights cannot saturate and that 8-bit weights do.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest

from helpers import int8_reference
from helpers.processes import ROOT
from helpers.processes import run_python
from keras_vae.export import quantization
from keras_vae.core import contract

LATENT_DIM = 4
#: |onnxruntime − NumPy| of a row computed alike: float rounding of the scales only.
TOLERANCE = 1e-4
#: A hidden unit whose value lies within float32 rounding of a .5 tie may land on the
#: neighbouring uint8 level in onnxruntime's fused kernel (it rescales in another order):
#: a rare row then moves by up to this much. Saturated sums move many rows by more.
TIE_TOLERANCE = 1e-2
MOST_ROWS_WITH_A_TIE = 0.02


def assert_same_numbers(got, expected):
    """got and expected, (N, ...) outputs, agree as two exact evaluations of one int8 graph do."""
    assert got.shape == expected.shape
    per_row = np.abs(got - expected).reshape(len(got), -1).max(axis=1)
    assert per_row.max() <= TIE_TOLERANCE, per_row.max()
    assert np.mean(per_row > TOLERANCE) <= MOST_ROWS_WITH_A_TIE, np.sort(per_row)[-10:]

TRAIN_AND_EXPORT = """
import sys
import keras
import keras_vae
from keras_vae.data.datasets import load_dataset
from keras_vae.export.onnx import export_decoder

x = load_dataset("digits", "train").images
for name, gated in (("mlp", False), ("gated", True)):
    keras.utils.set_random_seed(0)
    vae = keras_vae.VAE(input_shape=(8, 8, 1), latent_dim={latent_dim}, hidden_units=(64, 64),
                        gated=gated)
    vae.compile(optimizer="adam")
    vae.fit(x, epochs=3, batch_size=64, verbose=0)
    export_decoder(vae, f"{{sys.argv[1]}}/{{name}}.onnx")
"""


@pytest.fixture(scope="module")
def fp32_decoders(tmp_path_factory):
    """{"mlp", "gated"}: fp32 decoders of VAEs trained briefly on the digits, as ONNX bytes."""
    out = tmp_path_factory.mktemp("fp32")
    run_python(["-c", TRAIN_AND_EXPORT.format(latent_dim=LATENT_DIM), str(out)])
    return {name: (out / f"{name}.onnx").read_bytes() for name in ("mlp", "gated")}


@pytest.fixture(scope="module")
def int8_decoders(fp32_decoders):
    """{(network, recipe): int8 ONNX bytes}, made as `keras-vae export --precision int8` does."""
    return {(network, recipe): quantization.quantize_decoder(data, LATENT_DIM, recipe=recipe)
            for network, data in fp32_decoders.items() for recipe in quantization.RECIPES}


def latents():
    """z at the prior's spread and at three times it (activations at the ends of their range)."""
    rng = np.random.default_rng(0)
    return [(t * rng.standard_normal((n, LATENT_DIM))).astype(np.float32)
            for n, t in ((1, 1.0), (7, 1.0), (64, 1.0), (64, 3.0))]


def has_vnni():
    machine = quantization.measuring_machine()
    return bool(machine["avx512_vnni"] or machine["avx_vnni"])


@pytest.mark.parametrize("network", ["mlp", "gated"])
@pytest.mark.parametrize("recipe", [
    "u8s7", "u8u8",
    pytest.param("u8s8", marks=pytest.mark.skipif(
        not has_vnni(), reason="8-bit weights saturate without VNNI (see the vpmaddubsw tests)")),
])
def test_onnxruntime_computes_the_int8_graph_exactly(fp32_decoders, int8_decoders, network, recipe):
    data = int8_decoders[network, recipe]
    model = onnx.load_from_string(data)
    session, fp32 = (onnxruntime.InferenceSession(d, providers=["CPUExecutionProvider"])
                     for d in (data, fp32_decoders[network]))
    outputs = {"onnxruntime": [], "reference": [], "fp32": []}
    for z in latents():
        feeds = {contract.DECODER_INPUT: z}
        outputs["onnxruntime"].append(session.run([contract.DECODER_OUTPUT], feeds)[0])
        outputs["fp32"].append(fp32.run([contract.DECODER_OUTPUT], feeds)[0])
        outputs["reference"].append(int8_reference.evaluate(model, feeds)[contract.DECODER_OUTPUT])
        assert outputs["reference"][-1].shape == (len(z), 8, 8, 1)
    got, expected, fp32_output = (np.concatenate(outputs[k]) for k in ("onnxruntime", "reference", "fp32"))
    assert_same_numbers(got, expected)
    assert np.abs(expected - fp32_output).max() > 10 * TOLERANCE  # the reference computes int8


def weight_integers(model):
    """The integer initializers that DequantizeLinear turns into Gemm/MatMul weights."""
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {name for node in model.graph.node if node.op_type in ("Gemm", "MatMul")
                 for name in node.input[1:2]}
    return [initializers[node.input[0]] for node in model.graph.node
            if node.op_type == "DequantizeLinear" and node.output[0] in consumers]


@pytest.mark.parametrize("network", ["mlp", "gated"])
def test_the_default_recipe_cannot_saturate(int8_decoders, network):
    model = onnx.load_from_string(int8_decoders[network, quantization.DEFAULT_RECIPE])
    weights = weight_integers(model)
    assert len(weights) == (5 if network == "gated" else 3)  # every dense layer is int8
    for w in weights:  # 255·64·2 = 32640 fits int16: no pair of products can saturate
        assert w.dtype == np.int8 and w.min() >= -64 and w.max() <= 64
    activations = [i for i in model.graph.initializer if i.name.endswith("zero_point")
                   and i.data_type == onnx.TensorProto.UINT8]
    assert activations
    for z in latents():
        exact, summed_in_pairs = (int8_reference.evaluate(model, {contract.DECODER_INPUT: z}, how)
                                  [contract.DECODER_OUTPUT] for how in ("exact", "vpmaddubsw"))
        np.testing.assert_array_equal(summed_in_pairs, exact)


def test_8_bit_weights_saturate_on_cpus_without_vnni(int8_decoders):
    model = onnx.load_from_string(int8_decoders["mlp", "u8s8"])
    assert max(int(np.abs(w.astype(int)).max()) for w in weight_integers(model)) > 64
    z = np.concatenate(latents())
    exact, summed_in_pairs = (int8_reference.evaluate(model, {contract.DECODER_INPUT: z}, how)
                              [contract.DECODER_OUTPUT] for how in ("exact", "vpmaddubsw"))
    with pytest.raises(AssertionError):  # what the exactness test would see on such a CPU
        assert_same_numbers(summed_in_pairs, exact)


def test_vpmaddubsw_sums_pairs_of_products_into_int16_with_saturation():
    a = np.array([[255, 255, 255, 255, 3]], np.uint8)  # odd K: padded with a zero
    b = np.array([[127, 64], [127, 64], [-128, -64], [-128, -64], [5, 5]], np.int8)
    zero = np.zeros(2, np.int8)
    # pairs: 255·127·2 = 64770 -> 32767, 255·(−128)·2 = −65280 -> −32768; 255·64·2 fits
    expected = [[32767 - 32768 + 15, 32640 - 32640 + 15]]
    np.testing.assert_array_equal(int8_reference.vpmaddubsw_product(a, b, 0, zero), expected)
    # zero points are subtracted after the saturated raw sums, as the kernel's corrections do
    got = int8_reference.vpmaddubsw_product(a, b, 128, np.array([0, 1], np.int8))
    raw = np.array(expected[0])
    assert got.tolist() == [(raw - 128 * b.astype(int).sum(0) - 1023 * np.array([0, 1])
                             + 5 * 128 * np.array([0, 1])).tolist()]


def test_measuring_machine_reads_the_cpu_or_says_it_does_not_know(monkeypatch):
    machine = quantization.measuring_machine()
    assert machine["onnxruntime"] == onnxruntime.__version__
    if os.path.exists("/proc/cpuinfo"):
        text = open("/proc/cpuinfo").read()
        flags = next(line for line in text.splitlines() if line.startswith(("flags", "Features")))
        for flag in ("avx2", "avx512_vnni", "avx_vnni"):
            assert machine[flag] is (flag in flags.split(":", 1)[1].split())
    real_open = open

    def no_cpuinfo(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_cpuinfo)
    machine = quantization.measuring_machine()
    assert machine["avx2"] is machine["avx512_vnni"] is machine["avx_vnni"] is None
    assert machine["cpu"]
    json.dumps(machine)


def test_int8_files_name_their_recipe(int8_decoders):
    for (network, recipe), data in int8_decoders.items():
        metadata = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
        assert metadata[contract.PRECISION] == "int8"
        assert metadata[contract.QUANTIZATION_RECIPE] == recipe
        assert json.loads(metadata[contract.QUANTIZATION])["method"] == quantization.method(recipe)
    with pytest.raises(ValueError, match="unknown int8 recipe 'u4s4'"):
        quantization.quantize_decoder(b"", LATENT_DIM, recipe="u4s4")


def test_export_errors_are_not_buried_in_framework_log_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ABSL"))}
    env["KERAS_BACKEND"] = "tensorflow"
    result = subprocess.run([sys.executable, "-m", "keras_vae", "export", str(tmp_path / "missing"),
                             "--out", str(tmp_path / "d.onnx")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: No such model file or run directory: {tmp_path / 'missing'}"]
    assert result.stdout == ""


def test_score_errors_are_not_buried_in_framework_log_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ABSL"))}
    env["KERAS_BACKEND"] = "tensorflow"
    result = subprocess.run([sys.executable, "-m", "keras_vae", "score", str(tmp_path / "missing"),
                             "--dataset", "digits", "--out", str(tmp_path / "s.csv")], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"keras-vae score: error: No such model file or run directory: {tmp_path / 'missing'}"]
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("command, arguments", [
    ("train", []), ("evaluate", ["runs/x"]), ("export", ["runs/x", "--out", "d.onnx"]),
    ("score", ["runs/x", "--out", "s.csv"])])
def test_the_library_commands_show_framework_log_lines_with_verbose(command, arguments):
    import importlib

    parse_args = importlib.import_module(f"keras_vae.commands.{command}").parse_args
    assert parse_args([*arguments, "--verbose"]).verbose is True
    assert parse_args(arguments).verbose is False
