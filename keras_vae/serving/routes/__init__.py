"""One ``APIRouter`` per surface of the server, each reading the app's state through ``Depends``.

* :mod:`~keras_vae.serving.routes.v1` - ``/healthz``, ``/metrics`` and the ``/v1`` JSON API.
* :mod:`~keras_vae.serving.routes.kserve` - the Open Inference Protocol (KServe v2) under ``/v2``.
* :mod:`~keras_vae.serving.routes.model_files` - the served ONNX files under ``/models/``.
* the explorer page and the API docs: :mod:`keras_vae.serving.explorer`.
"""
