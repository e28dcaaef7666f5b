"""Training step for the TensorFlow backend: gradients from `tf.GradientTape`."""

import tensorflow as tf

import keras
from keras import ops


class TensorFlowTrainer:
    def train_step(self, data):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        with tf.GradientTape() as tape:
            losses = self.compute_losses(x, training=True)
            loss = ops.mean(losses["loss"])
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self.update_loss_trackers(losses)

    def test_step(self, data):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        return self.update_loss_trackers(self.compute_losses(x, training=False))
