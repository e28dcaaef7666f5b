"""A Triton Inference Server model repository for an exported decoder."""

import os
import shutil
from keras_vae.core import contract
from keras_vae.core.files import atomic_path
from keras_vae.core.files import write_text_atomic


TRITON_MAX_BATCH_SIZE = 256


def write_triton_repository(onnx_path, repository, model_name, latent_dim, image_shape,
                            max_batch_size=TRITON_MAX_BATCH_SIZE, precision="fp32",
                            conditional=False):
    """Writes a Triton model repository: <repository>/<model_name>/{config.pbtxt, 1/model.onnx}.

    The inputs and outputs are float32 at any precision (an int8 graph quantizes
    inside); the config names the graph's `precision` in its parameters. A
    `conditional` decoder has a second input, `label`: one int64 per row (dims [1],
    reshaped to the graph's [batch]).
    """
    label_input = f""",
  {{
    name: "{contract.LABEL_INPUT}"
    data_type: TYPE_INT64
    dims: [ 1 ]
    reshape: {{ shape: [ ] }}
  }}""" if conditional else ""
    model_dir = os.path.join(repository, model_name)
    os.makedirs(os.path.join(model_dir, "1"), exist_ok=True)
    config = f"""name: "{model_name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{contract.DECODER_INPUT}"
    data_type: TYPE_FP32
    dims: [ {latent_dim} ]
  }}{label_input}
]
output [
  {{
    name: "{contract.DECODER_OUTPUT}"
    data_type: TYPE_FP32
    dims: [ {", ".join(str(d) for d in image_shape)} ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
}}
parameters {{
  key: "precision"
  value: {{ string_value: "{precision}" }}
}}
"""
    with atomic_path(os.path.join(model_dir, "1", "model.onnx")) as temp_path:
        shutil.copyfile(onnx_path, temp_path)
    write_text_atomic(os.path.join(model_dir, "config.pbtxt"), config)
    return model_dir
