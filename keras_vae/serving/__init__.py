"""Serving: sample, decode, encode and score with the exported ONNX files, without Keras.

The modules here need NumPy, Pillow, onnxruntime, the web stack (FastAPI, Starlette,
uvicorn, pydantic) and prometheus_client, and build on `keras_vae.core` only: a
serving host (`pip install "keras-vae[serving]"`) needs none of Keras, TensorFlow,
JAX or PyTorch. import-linter checks it (`make lint`).

Models:

* `keras_vae.serving.sampler` - `Sampler`: the decoder, z -> images, and drawing z.
* `keras_vae.serving.encoder` - `Encoder`: images -> q(z|x).
* `keras_vae.serving.onnx_model` - the onnxruntime session and checks both share.
* `keras_vae.serving.generate` - `keras-vae generate`: samples to PNG / .npy.

Scoring:

* `keras_vae.serving.likelihood` - log p(x) and log p(x|z) of the exported files
  (`onnx_log_likelihood`), `keras_vae.core.likelihood`'s estimator on onnxruntime.
* `keras_vae.serving.scoring` - anomaly scores and thresholds from the exported files.
* `keras_vae.serving.onnx_metadata` - one metadata entry of an ONNX file, set without `onnx`.

The HTTP server, in FastAPI's "bigger applications" layout:

* `keras_vae.serving.options` - the options, declared once for both CLIs and the Ray YAML.
* `keras_vae.serving.state` - what the handlers share, read through `Depends(get_state)`.
* `keras_vae.serving.app` - `create_app`, which includes one router per surface:
  `keras_vae.serving.routes` (v1, KServe v2, model files) and `keras_vae.serving.explorer`
  (the page and the API docs).
* `keras_vae.serving.schemas`, `kserve_protocol`, `batching`, `errors`, `limits`,
  `metrics` - request bodies, the KServe wire format, micro-batching, JSON errors,
  the body limit and Prometheus metrics.
* `keras_vae.serving.server` - `keras-vae serve` (uvicorn).
* `keras_vae.serving.ray_app` - `keras-vae serve-ray` (Ray Serve replicas).
"""
