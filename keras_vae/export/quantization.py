"""An int8 decoder, with its cost in quality measured as test NLL, not pixels.

The recipe (onnxruntime's own tooling, `onnxruntime.quantization`):
- `quant_pre_process` fuses each MatMul + Add into one Gemm;
- `quantize_static` in QDQ format, calibrated (MinMax) on z drawn from the model's
  own prior, with uint8 activations and per-channel int8 weights kept within
  7 bits (`reduce_range`, [-64, 64]); only the Gemm, MatMul and Conv layers are
  quantized, and their outputs stay float32, so the logits and the sigmoid keep
  full precision. onnxruntime then runs each dense layer as one QGemm (or
  QLinearMatMul).

7-bit weights make the file compute the same numbers on every x86 CPU. onnxruntime's
uint8 × int8 kernel on CPUs without VNNI (AVX2, AVX-512 without VNNI) adds pairs of
products into int16 with VPMADDUBSW, which saturates at 32767; with 8-bit weights a
pair reaches 255·127·2 = 64770, with 7-bit weights at most 255·64·2 = 32640, so the
int32 sums are exact, as VNNI's are. The NLL cost that the export measures on its own
CPU is then the cost on any CPU (docs/export.md compares the recipes).

Static rather than dynamic quantization: at the same speed at batch 256 it is
faster at batch 1, costs less NLL, and a row's output does not depend on the
other rows of its batch (dynamic quantization scales each batch by its own range).
"""

import json
import os
import tempfile
import numpy as np
from keras_vae.core import contract


#: Most importance-sampled NLL, in nats per example, that int8 may cost by default.
MAX_NLL_COST = 0.1


#: Largest |int8 − fp32| output, as a fraction of the fp32 outputs' range, on random z.
PIXEL_TOLERANCE = 0.15


CALIBRATION_SIZE = 2000


QUANTIZED_OPS = ("Gemm", "MatMul", "Conv")


#: Recipes by name (activations × weights). "u8s7" is the default: its sums cannot
#: saturate on any CPU. "u8s8" (8-bit weights) is exact only on CPUs with VNNI; "u8u8"
#: (uint8 weights) is exact everywhere, and slower on VNNI CPUs (docs/export.md).
RECIPES = {
    "u8s7": {"weight_type": "int8", "reduce_range": True,
             "weights": "int8 per-channel weights in 7 bits (reduce_range, [-64, 64])"},
    "u8s8": {"weight_type": "int8", "reduce_range": False,
             "weights": "int8 per-channel weights in 8 bits (saturates without VNNI)"},
    "u8u8": {"weight_type": "uint8", "reduce_range": False,
             "weights": "uint8 per-channel weights"},
}


DEFAULT_RECIPE = "u8s7"


def method(recipe=DEFAULT_RECIPE):
    """One line describing a recipe, as stored in the int8 file's metadata."""
    return (f"static QDQ (onnxruntime.quantization), uint8 activations, {RECIPES[recipe]['weights']}, "
            f"MinMax calibration on {CALIBRATION_SIZE} z drawn from the prior; logits and sigmoid "
            "in fp32")


def measuring_machine():
    """What the int8 checks ran on: {"cpu", "avx2", "avx512_vnni", "avx_vnni", "onnxruntime"}.

    The CPU model name and instruction-set flags come from /proc/cpuinfo; where there is
    none (macOS, Windows) the name is `platform.processor()` and the flags are None (unknown).
    """
    import platform

    import onnxruntime

    name, flags = None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name is None:
                    name = value.strip()
                elif key in ("flags", "Features") and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    features = {flag: None if flags is None else flag in flags
                for flag in ("avx2", "avx512_vnni", "avx_vnni")}
    return {"cpu": name or platform.processor() or platform.machine() or "unknown", **features,
            "onnxruntime": onnxruntime.__version__}


class _PriorSamples:
    """Calibration inputs: z drawn from the model's prior, in batches of 100 (with
    `num_classes`, a conditional decoder's labels too, every class in turn)."""

    def __init__(self, latent_dim, prior, count=CALIBRATION_SIZE, seed=1, temperature=1.0,
                 num_classes=None):
        z = contract.draw_latents(count, latent_dim, prior, seed=seed, temperature=temperature)
        self.batches = [_decoder_inputs(z[i : i + 100], num_classes) for i in range(0, count, 100)]
        self.position = 0

    def get_next(self):
        if self.position == len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self):
        self.position = 0


def _decoder_inputs(z, num_classes=None):
    """A decoder's feed for z (n, D): a conditional one's labels cycle through the classes."""
    feed = {contract.DECODER_INPUT: z}
    if num_classes is not None:
        feed[contract.LABEL_INPUT] = np.arange(len(z), dtype=np.int64) % num_classes
    return feed


def quantize_decoder(fp32_bytes, latent_dim, prior=None, calibration_temperature=1.0,
                     recipe=DEFAULT_RECIPE, num_classes=None):
    """The int8 decoder for an fp32 decoder graph: serialized ONNX bytes in, bytes out.

    `calibration_temperature` scales the calibration z's spread (1.0: the prior itself);
    `recipe` names an entry of `RECIPES`. The metadata is kept, with `precision` "int8",
    `quantization_recipe` the recipe's name and `quantization` describing it.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown int8 recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_PriorSamples, CalibrationDataReader):
        pass

    original = onnx.load_from_string(fp32_bytes)
    with tempfile.TemporaryDirectory() as workdir:
        source, prepared, quantized = (os.path.join(workdir, name)
                                       for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        with open(source, "wb") as f:
            f.write(fp32_bytes)
        quant_pre_process(source, prepared)
        quantize_static(
            prepared, quantized,
            Reader(latent_dim, prior, temperature=calibration_temperature, num_classes=num_classes),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            reduce_range=RECIPES[recipe]["reduce_range"],
            activation_type=QuantType.QUInt8,
            weight_type=(QuantType.QInt8 if RECIPES[recipe]["weight_type"] == "int8"
                         else QuantType.QUInt8),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS)},
        )
        model = onnx.load(quantized)
    props = {p.key: p.value for p in original.metadata_props}
    props[contract.PRECISION] = "int8"
    props[contract.QUANTIZATION] = json.dumps({"method": method(recipe)})
    props[contract.QUANTIZATION_RECIPE] = recipe
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    model.producer_name, model.producer_version = original.producer_name, original.producer_version
    return model.SerializeToString()


def max_output_difference(fp32_bytes, int8_bytes, latent_dim, batch_sizes=(1, 7, 64), seed=0,
                          num_classes=None):
    """Largest |int8 − fp32| decoder output on random z ~ N(0, I), and the fp32 outputs' range."""
    import onnxruntime

    sessions = [onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
                for data in (fp32_bytes, int8_bytes)]
    rng = np.random.default_rng(seed)
    difference, low, high = 0.0, np.inf, -np.inf
    for batch_size in batch_sizes:
        z = rng.standard_normal((batch_size, latent_dim)).astype("float32")
        feed = _decoder_inputs(z, num_classes)
        fp32, int8 = (s.run([contract.DECODER_OUTPUT], feed)[0] for s in sessions)
        difference = max(difference, float(np.max(np.abs(int8 - fp32))))
        low, high = min(low, float(fp32.min())), max(high, float(fp32.max()))
    return difference, high - low


def nll_cost(fp32_bytes, int8_bytes, encoder_bytes, images, num_samples=200, seed=0, labels=None):
    """Test NLL of both decoders with the same encoder, images and noise, in onnxruntime
    (−log p(x|y) of a conditional model, given the images' labels).

    Returns {"images", "num_samples", "nll_fp32", "nll_int8", "cost", "cost_standard_error"}
    in nats per example; "cost" is NLL(int8) − NLL(fp32), its standard error from the
    per-image differences.
    """
    from keras_vae.serving.encoder import Encoder
    from keras_vae.serving.likelihood import onnx_log_likelihood
    from keras_vae.serving.sampler import Sampler

    with tempfile.TemporaryDirectory() as workdir:
        paths = {}
        for name, data in (("encoder", encoder_bytes), ("fp32", fp32_bytes), ("int8", int8_bytes)):
            paths[name] = os.path.join(workdir, f"{name}.onnx")
            with open(paths[name], "wb") as f:
                f.write(data)
        encoder = Encoder(paths["encoder"], provider="cpu")
        log_px = {name: onnx_log_likelihood(encoder, Sampler(paths[name], provider="cpu"), images,
                                            num_samples=num_samples, seed=seed, labels=labels)
                  for name in ("fp32", "int8")}
    per_image = log_px["fp32"] - log_px["int8"]
    return {
        "images": int(len(images)),
        "num_samples": int(num_samples),
        "nll_fp32": float(-log_px["fp32"].mean()),
        "nll_int8": float(-log_px["int8"].mean()),
        "cost": float(per_image.mean()),
        "cost_standard_error": float(per_image.std() / np.sqrt(len(per_image))),
    }
