"""Training step for the TensorFlow backend: gradients from `tf.GradientTape`."""

import tensorflow as tf

import keras
from keras import ops


class TensorFlowTrainer:
    def train_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(x, training=True, labels=labels)
            loss = ops.mean(losses["loss"])
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self.update_loss_trackers(losses)

    def test_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.update_loss_trackers(self.compute_losses(x, training=False, labels=labels))
