"""Serving side of keras-vae: sample images from an exported ONNX decoder.

The modules here depend only on NumPy, onnxruntime, Pillow, the web stack
(FastAPI, Starlette, uvicorn, pydantic) and prometheus_client, never on a
deep-learning framework, so a serving host needs none of Keras, TensorFlow,
JAX or PyTorch.

* :mod:`keras_vae.core.contract` - the exported model's interface, shared with ``keras_vae``:
  tensor names, metadata keys, the prior's encoding, drawing z.
* :mod:`keras_vae.core.likelihood` - importance-sampled log p(x) in NumPy (shared with ``keras_vae``).
* :mod:`keras_vae.core.files`    - atomic file writing (standard library only).
* :mod:`keras_vae.core.images`   - image grids and PNG files (NumPy + Pillow only).
* :mod:`keras_vae.serving.sampler`  - :class:`~keras_vae.serving.sampler.Sampler`, one onnxruntime session.
* :mod:`keras_vae.serving.generate` - command-line sampler (``python -m keras_vae.serving.generate``).
* :mod:`keras_vae.serving.server`   - HTTP server (``python -m keras_vae.serving.server``).
"""
