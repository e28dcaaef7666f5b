"""Training step for the TensorFlow backend: gradients from `tf.GradientTape`."""

import tensorflow as tf

import keras
from keras import ops

from keras_vae.models.trainers import gradient_guard


class TensorFlowTrainer:
    def train_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(x, training=True, labels=labels)
            loss = ops.mean(losses["loss"])
        gradients = tape.gradient(loss, self.trainable_weights)
        if gradient_guard.guard_settings(self) is None:
            self.optimizer.apply(gradients, self.trainable_weights)
            return self.update_loss_trackers(losses)
        gradients, skip, _ = gradient_guard.guard(self, gradients)

        def apply():
            self.optimizer.apply(gradients, self.trainable_weights)
            return tf.constant(0.0)

        def count_skip():
            self.skipped_updates.assign_add(1.0)
            return tf.constant(1.0)

        # Weights and optimizer state are untouched on a skipped step.
        tf.cond(skip, count_skip, apply)
        logs = self.update_loss_trackers(losses)
        logs["skipped_updates"] = ops.convert_to_tensor(self.skipped_updates)
        return logs

    def test_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.update_loss_trackers(self.compute_losses(x, training=False, labels=labels))
