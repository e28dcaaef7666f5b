"""Training a model into a run directory, and reading one back.

* ``keras_vae.training.run`` - `TrainConfig` and `train`: `model.fit` with Keras callbacks.
* ``keras_vae.training.inputs`` - the train and validation images a run reads.
* ``keras_vae.training.callbacks`` - elapsed time, checkpoints, TensorBoard.
* ``keras_vae.training.resume`` - a run that survives ``kill -9`` and resumes.
* ``keras_vae.training.run_directory`` - what a run directory holds: loading its model,
  reading its config and history.
* ``keras_vae.training.devices`` - data-parallel training (``keras.distribution``).
"""

from keras_vae.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "TrainConfig": "run", "train": "run", "TrainingDiverged": "run",
    "load_vae": "run_directory",
})
