"""Training step for the PyTorch backend: gradients from autograd."""

import torch

import keras
from keras import ops

from keras_vae.models.trainers import gradient_guard


class TorchTrainer:
    def train_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.zero_grad()
        losses = self.compute_losses(x, training=True, labels=labels)
        ops.mean(losses["loss"]).backward()
        variables = self.trainable_weights
        gradients = [v.value.grad for v in variables]
        if gradient_guard.guard_settings(self) is None:
            with torch.no_grad():
                self.optimizer.apply(gradients, variables)
            return self.update_loss_trackers(losses)
        with torch.no_grad():
            gradients, skip, _ = gradient_guard.guard(self, gradients)
            if bool(skip):  # eager: a skipped step touches neither weights nor optimizer state
                self.skipped_updates.assign_add(1.0)
            else:
                self.optimizer.apply(gradients, variables)
        logs = self.update_loss_trackers(losses)
        logs["skipped_updates"] = ops.convert_to_tensor(self.skipped_updates)
        return logs

    def test_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.update_loss_trackers(self.compute_losses(x, training=False, labels=labels))
