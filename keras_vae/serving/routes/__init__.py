"""One ``APIRouter`` per surface of the server, each reading the app's state through ``Depends``.

* ``v1`` - ``/healthz``, ``/metrics`` and the ``/v1`` JSON API.
* ``kserve`` - the Open Inference Protocol (KServe v2) under ``/v2``.
* ``model_files`` - the served ONNX files under ``/models/``.
* the explorer page and the API docs: ``keras_vae.serving.explorer``.
"""
