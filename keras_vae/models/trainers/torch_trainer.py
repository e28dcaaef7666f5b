"""Training step for the PyTorch backend: gradients from autograd."""

import torch

import keras
from keras import ops


class TorchTrainer:
    def train_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.zero_grad()
        losses = self.compute_losses(x, training=True, labels=labels)
        ops.mean(losses["loss"]).backward()
        variables = self.trainable_weights
        gradients = [v.value.grad for v in variables]
        with torch.no_grad():
            self.optimizer.apply(gradients, variables)
        return self.update_loss_trackers(losses)

    def test_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.update_loss_trackers(self.compute_losses(x, training=False, labels=labels))
