"""Training step for the JAX backend: stateless, so it can be jit-compiled.

Every variable the loss reads (weights, β, the warm-up counter, the noise seed
state) comes in through `state` and its new value goes out through it; nothing
is read from Python attributes, or jit would freeze it.
"""

import jax

import keras
from keras import ops

from keras_vae.models.trainers import gradient_guard


class JaxTrainer:
    def stateless_compute_losses(self, trainable_variables, non_trainable_variables, x, training,
                                 labels=None):
        """`compute_losses` on the given variable values; returns (losses, new non-trainables)."""
        mapping = list(zip(self.trainable_variables, trainable_variables))
        mapping += list(zip(self.non_trainable_variables, non_trainable_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            losses = self.compute_losses(x, training=training, labels=labels)
        non_trainable_variables = [scope.get_current_value(v) for v in self.non_trainable_variables]
        return losses, non_trainable_variables

    def stateless_update_loss_trackers(self, metrics_variables, losses):
        """Stateless twin of `update_loss_trackers`; returns (logs, new metric variables)."""
        logs, updated = {}, []
        for tracker in self.metrics:
            own = metrics_variables[len(updated) : len(updated) + len(tracker.variables)]
            own = tracker.stateless_update_state(own, losses[tracker.name])
            logs[tracker.name] = tracker.stateless_result(own)
            updated += own
        return logs, updated

    def train_step(self, state, data):
        trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables = state
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)

        def mean_loss(trainable_variables, non_trainable_variables):
            losses, non_trainable_variables = self.stateless_compute_losses(
                trainable_variables, non_trainable_variables, x, training=True, labels=labels
            )
            return ops.mean(losses["loss"]), (losses, non_trainable_variables)

        (_, (losses, non_trainable_variables)), gradients = jax.value_and_grad(
            mean_loss, has_aux=True
        )(trainable_variables, non_trainable_variables)
        skipped = None
        if gradient_guard.guard_settings(self) is None:
            trainable_variables, optimizer_variables = self.optimizer.stateless_apply(
                optimizer_variables, gradients, trainable_variables
            )
        else:
            gradients, skip, _ = gradient_guard.guard(self, gradients)
            new_trainable, new_optimizer = self.optimizer.stateless_apply(
                optimizer_variables, gradients, trainable_variables
            )

            def keep_old_if_skipped(old, new):
                return jax.numpy.where(skip, old, new)

            trainable_variables = jax.tree_util.tree_map(keep_old_if_skipped, trainable_variables,
                                                         new_trainable)
            optimizer_variables = jax.tree_util.tree_map(keep_old_if_skipped, optimizer_variables,
                                                         new_optimizer)
            index = next(i for i, v in enumerate(self.non_trainable_variables)
                         if v is self.skipped_updates)
            non_trainable_variables = list(non_trainable_variables)
            skipped = non_trainable_variables[index] + ops.cast(skip, "float32")
            non_trainable_variables[index] = skipped
        logs, metrics_variables = self.stateless_update_loss_trackers(metrics_variables, losses)
        if skipped is not None:
            logs["skipped_updates"] = skipped
        state = (trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables)
        return logs, state

    def test_step(self, state, data):
        trainable_variables, non_trainable_variables, metrics_variables = state
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        losses, non_trainable_variables = self.stateless_compute_losses(
            trainable_variables, non_trainable_variables, x, training=False, labels=labels
        )
        logs, metrics_variables = self.stateless_update_loss_trackers(metrics_variables, losses)
        return logs, (trainable_variables, non_trainable_variables, metrics_variables)
