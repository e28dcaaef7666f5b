"""Exporting a trained model: ONNX graphs checked against Keras, int8, a Triton repository.

* ``keras_vae.export.onnx`` - `export_decoder`, `export_encoder`: tf2onnx, the parity
  check, the metadata of the contract.
* ``keras_vae.export.quantization`` - onnxruntime's static quantization: the int8 recipes, the
  cost in test NLL (onnxruntime only, no Keras).
* ``keras_vae.export.int8`` - `export_int8_decoder`: a Keras model's int8 decoder, checked
  against its cost in test NLL.
* ``keras_vae.export.triton`` - `write_triton_repository`.
"""

from keras_vae.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "export_decoder": "onnx", "export_encoder": "onnx", "ExportError": "onnx",
    "export_int8_decoder": "int8", "write_triton_repository": "triton",
})
