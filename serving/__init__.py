"""Serving side of keras-vae: sample images from an exported ONNX decoder.

The modules here depend only on NumPy, onnxruntime, Pillow, the web stack
(FastAPI, Starlette, uvicorn, pydantic) and prometheus_client, never on a
deep-learning framework, so a serving host needs none of Keras, TensorFlow,
JAX or PyTorch.

* :mod:`serving.contract` - the exported model's interface, shared with ``keras_vae``:
  tensor names, metadata keys, the prior's encoding, drawing z.
* :mod:`serving.likelihood` - importance-sampled log p(x) in NumPy (shared with ``keras_vae``).
* :mod:`serving.files`    - atomic file writing (standard library only).
* :mod:`serving.images`   - image grids and PNG files (NumPy + Pillow only).
* :mod:`serving.sampler`  - :class:`~serving.sampler.Sampler`, one onnxruntime session.
* :mod:`serving.generate` - command-line sampler (``python -m serving.generate``).
* :mod:`serving.server`   - HTTP server (``python -m serving.server``).
"""
