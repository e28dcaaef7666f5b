"""Prints, as JSON on process 0, the per-example training losses of one jitted step's draw.

Run under data-parallel JAX (one process with several devices, or several processes): a
global batch of 8 identical grey images, dynamically binarized, one ε per example, drawn
from the model's SeedGenerator inside jit as the training step draws them. Identical
inputs give different losses only through the noise, so the 8 losses show whether every
example, on whichever process, got its own draw.
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_vae.training import devices  # noqa: E402

devices.initialize_processes()

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from keras_vae.training.run import TrainConfig  # noqa: E402
from keras_vae.training.run import build_model  # noqa: E402

BATCH = 8
devices.use_all_devices(BATCH)
keras.utils.set_random_seed(0)
vae = build_model(TrainConfig(dynamic_binarization=True, latent_dim=2, hidden_units=(16,)),
                  (8, 8, 1))
local = np.full((BATCH // jax.process_count(), 8, 8, 1), 0.5, np.float32)
layout = keras.distribution.distribution().get_data_layout((BATCH, 8, 8, 1)).backend_layout
x = jax.make_array_from_process_local_data(layout, local)
trainable = [v.value for v in vae.trainable_variables]
non_trainable = [v.value for v in vae.non_trainable_variables]
step = jax.jit(lambda t, n, x: vae.stateless_compute_losses(t, n, x, training=True)[0]["loss"])
losses = step(trainable, non_trainable, x)
losses = np.asarray(multihost_utils.process_allgather(losses, tiled=True)
                    if jax.process_count() > 1 else losses)
if jax.process_index() == 0:
    print(json.dumps({"losses": losses.tolist(), "processes": jax.process_count()}))
