"""Gradient-norm clipping and update skipping (VDVAE), shared by the backends' train_steps.

A model opts in by defining the attributes `grad_clip` (clip the gradients to this
global norm) and/or `skip_threshold` (skip an update whose gradient norm is above it),
and `skipped_updates`, a non-trainable variable counting the skipped updates. An
update is also skipped when the gradient norm is not finite. A model without these
attributes (`VAE`) trains exactly as before: `guard_settings` returns None.
"""

from keras import ops


def guard_settings(model):
    """(grad_clip, skip_threshold), either of them None, or None when the model uses neither."""
    grad_clip = getattr(model, "grad_clip", None)
    skip_threshold = getattr(model, "skip_threshold", None)
    if grad_clip is None and skip_threshold is None:
        return None
    return grad_clip, skip_threshold


def global_norm(gradients):
    """sqrt(Σ ‖g‖²) over the gradients (None entries count as zero), a float32 scalar."""
    squares = [ops.sum(ops.square(ops.cast(g, "float32"))) for g in gradients if g is not None]
    return ops.sqrt(ops.sum(ops.stack(squares))) if squares else ops.zeros((), "float32")


def should_skip(norm, skip_threshold):
    """A bool scalar tensor: skip the update (the norm is not finite, or above the threshold)."""
    skip = ops.logical_not(ops.isfinite(norm))
    if skip_threshold is not None:
        skip = ops.logical_or(skip, norm > skip_threshold)
    return skip


def clip_gradients(gradients, norm, grad_clip):
    """The gradients scaled by min(1, grad_clip / norm) (unchanged when grad_clip is None)."""
    if grad_clip is None:
        return gradients
    scale = ops.minimum(1.0, grad_clip / (norm + 1e-6))
    return [None if g is None else g * ops.cast(scale, g.dtype) for g in gradients]


def guard(model, gradients):
    """(clipped gradients, skip flag, gradient norm) for a model with clip/skip settings."""
    grad_clip, skip_threshold = guard_settings(model)
    norm = global_norm(gradients)
    return clip_gradients(gradients, norm, grad_clip), should_skip(norm, skip_threshold), norm
