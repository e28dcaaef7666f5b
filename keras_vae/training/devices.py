"""Data-parallel training over every device, with Keras' own distribution API."""

import os
import keras


def use_all_devices(batch_size):
    """Data-parallel training over every device, via Keras' own distribution API (JAX).

    Multi-host: set KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and
    KERAS_DISTRIBUTION_PROCESS_ID on every host; `keras.distribution.initialize()` reads them.
    Returns the devices the batch is split across.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "data-parallel training runs on the JAX backend (keras.distribution); "
            f"this process uses {keras.backend.backend()!r}. Use --backend jax."
        )
    if "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ:
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise ValueError(
            f"--batch-size {batch_size} must divide evenly across the {len(devices)} devices"
        )
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    print(f"Data-parallel training on {len(devices)} devices: {', '.join(devices)}")
    return devices
