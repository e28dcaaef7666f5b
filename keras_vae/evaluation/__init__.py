"""Measuring a trained model: test ELBO and NLL, pictures, anomaly scores.

* ``keras_vae.evaluation.evaluate`` - `evaluate_run` and `measure`: nats per example,
  bits/dim, metrics.json and pictures.
* ``keras_vae.evaluation.anomaly`` - `keras_scores` and `calibrate_keras`: anomaly scores of
  a Keras model (the ONNX twin is ``keras_vae.serving.scoring``).
"""

from keras_vae.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "evaluate_run": "evaluate", "measure": "evaluate",
    "keras_scores": "anomaly", "calibrate_keras": "anomaly",
})
