"""`export_int8_decoder`: a Keras model's int8 decoder, written only if its NLL cost is small.

The recipes and the measurements are `keras_vae.export.quantization`'s (onnxruntime only).
"""

import json
import os
import time

from keras_vae.core import contract
from keras_vae.core.files import write_bytes_atomic
from keras_vae.export.onnx import DEFAULT_OPSET
from keras_vae.export.onnx import PARITY_TOLERANCE
from keras_vae.export.onnx import ExportError
from keras_vae.export.onnx import _convert_decoder
from keras_vae.export.onnx import _convert_encoder
from keras_vae.export import quantization
from keras_vae.models import conditioning


def export_int8_decoder(vae, path, test_images, opset=DEFAULT_OPSET, metadata=None,
                        nll_samples=200, max_nll_cost=quantization.MAX_NLL_COST, force=False,
                        calibration_temperature=1.0, recipe=quantization.DEFAULT_RECIPE,
                        test_labels=None):
    """Writes an int8 decoder (see `keras_vae.export.quantization`) at `path`, after measuring its cost.

    Before the file appears: the fp32 graph passes the checks of `export_decoder`;
    the int8 graph's outputs stay within `quantization.PIXEL_TOLERANCE` of the fp32
    graph's range on random z; and its importance-sampled NLL on `test_images`
    (with the fp32 encoder, `nll_samples` samples, the same noise for both) is at
    most `max_nll_cost` nats above the fp32 decoder's. With `force`, a failed check
    is reported in the summary's "warnings" and the file is written all the same.
    `recipe` names an entry of `quantization.RECIPES`. The file's metadata stores the
    recipe, the measurements and the machine they were made on (CPU model, its int8
    instruction sets, onnxruntime's version). A conditional model needs `test_labels`,
    and its cost is that of −log p(x|y).

    Returns:
        The summary of `export_decoder`, plus "precision" and "int8": the NLL of
        both decoders, the cost and its standard error, the largest output difference.
    """
    import onnx

    if vae.likelihood in ("discretized_logistic", "logistic_mixture"):
        name = vae.likelihood.replace("_", " ")
        raise ExportError(f"int8 export is for Bernoulli and Gaussian decoders: a {name} "
                          "decoder's 256-level probabilities are what int8 would round "
                          "away; export it with --precision fp32")
    if test_images is None or len(test_images) == 0:
        raise ExportError("an int8 export measures its NLL cost on test images; none were given")
    started = time.perf_counter()
    fp32, summary = _convert_decoder(vae, opset, metadata, PARITY_TOLERANCE)
    encoder, _ = _convert_encoder(vae, opset, metadata, PARITY_TOLERANCE)
    test_labels = conditioning.labels_for(vae, test_labels, len(test_images))
    int8 = quantization.quantize_decoder(fp32, vae.latent_dim, vae.prior_parameters(),
                                         calibration_temperature, recipe, vae.num_classes)
    difference, output_range = quantization.max_output_difference(
        fp32, int8, vae.latent_dim, num_classes=vae.num_classes)
    report = quantization.nll_cost(fp32, int8, encoder, vae.check_images(test_images), nll_samples,
                                   labels=test_labels)
    report["max_output_difference"] = difference
    problems = []
    if difference > quantization.PIXEL_TOLERANCE * output_range:
        problems.append(f"int8 outputs differ from fp32 by up to {difference:.3g}, more than "
                        f"{quantization.PIXEL_TOLERANCE:g} of the outputs' range {output_range:.3g}")
    if report["cost"] > max_nll_cost:
        problems.append(f"int8 costs {report['cost']:.3f} ± {report['cost_standard_error']:.3f} nats "
                        f"of test NLL (fp32 {report['nll_fp32']:.3f}, int8 {report['nll_int8']:.3f}, "
                        f"{report['images']} images, K = {report['num_samples']}), more than the "
                        f"allowed {max_nll_cost:g}")
    if problems and not force:
        raise ExportError("; ".join(problems) + "; nothing was written")
    model = onnx.load_from_string(int8)
    props = {p.key: p.value for p in model.metadata_props}
    props[contract.QUANTIZATION] = json.dumps({"method": quantization.method(recipe), **report})
    machine = quantization.measuring_machine()
    props[contract.INT8_MEASURED_ON] = json.dumps(machine)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    data = model.SerializeToString()
    write_bytes_atomic(path, data)
    report = dict(report, recipe=recipe, measured_on=machine)
    return dict(summary, path=os.path.abspath(path), bytes=len(data), precision="int8", int8=report,
                warnings=problems, seconds=round(time.perf_counter() - started, 2))
