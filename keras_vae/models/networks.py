"""Encoder and decoder networks: plain functional `keras.Model`s.

The encoder maps images (B, H, W, C) to the parameters of q(z|x):
`z_mean` and `z_log_var`, each (B, latent_dim). The decoder maps z
(B, latent_dim) to the raw decoder output (B, H, W, P): P = C Bernoulli logits,
Gaussian means or logistic locations, or the P parameters per pixel of a
discretized logistic with its scale or of a logistic mixture
(`keras_vae.models.distributions.params_per_pixel`).

An MLP's hidden layers are ReLU `Dense` layers, or with `gated=True` gated
dense layers (Dauphin et al. 2017; the "GatedDense" of Tomczak & Welling 2018):
h = (W x + b) ⊙ sigmoid(V x + c).
"""

import keras
from keras import layers

from keras_vae.models.options import ARCHITECTURES
from keras_vae.models.options import CONV_UPSAMPLINGS

# log σ² of q(z|x) is clipped to this range so that exp() stays finite.
Z_LOG_VAR_RANGE = (-20.0, 10.0)


def hidden_layer(h, units, gated, name):
    """One MLP hidden layer: ReLU Dense, or gated dense (W h + b) ⊙ sigmoid(V h + c)."""
    if not gated:
        return layers.Dense(units, activation="relu", name=name)(h)
    gate = layers.Dense(units, activation="sigmoid", name=f"{name}_gate")(h)
    return layers.Multiply(name=f"{name}_gated")([layers.Dense(units, name=name)(h), gate])


def build_encoder(input_shape, latent_dim, architecture, hidden_units, conv_filters, gated=False,
                  num_classes=None, conv_residual_blocks=0):
    """Returns `keras.Model(x -> [z_mean, z_log_var])`, named "encoder".

    With `num_classes`, the model takes `[x, label]` (label: int32 (B,)) and the label's
    one-hot vector joins the flattened image features before the hidden layers: q(z|x, y).
    """
    x = keras.Input(shape=input_shape, name="x")
    label = None if num_classes is None else keras.Input(shape=(), dtype="int32", name="label")
    if architecture == "mlp":
        h = layers.Flatten(name="flatten")(x)
        if label is not None:
            h = with_one_hot(h, label, num_classes)
        for i, units in enumerate(hidden_units):
            h = hidden_layer(h, units, gated, name=f"dense_{i}")
    else:
        h = x
        for i, filters in enumerate(conv_filters):
            h = layers.Conv2D(
                filters, 3, strides=2, padding="same", activation="relu", name=f"conv_{i}"
            )(h)
            for b in range(conv_residual_blocks):
                h = residual_block(h, filters, name=f"conv_{i}_residual_{b}")
        h = layers.Flatten(name="flatten")(h)
    if label is not None and architecture == "conv":
        h = with_one_hot(h, label, num_classes)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var_raw")(h)
    z_log_var = layers.Identity(name="z_log_var")(keras.ops.clip(z_log_var, *Z_LOG_VAR_RANGE))
    inputs = x if label is None else [x, label]
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")


def build_decoder(output_shape, latent_dim, architecture, hidden_units, conv_filters,
                  conv_upsampling="transpose", gated=False,
                  num_classes=None, conv_residual_blocks=0, params_per_pixel=None):
    """Returns `keras.Model(z -> decoder output (B, H, W, P))`, named "decoder".

    P is `params_per_pixel` (default: the image's channels C). With `num_classes`, the model
    takes `[z, label]` (label: int32 (B,)) and the label's one-hot vector joins z before the
    first layer: p(x|z, y).
    """
    z = keras.Input(shape=(latent_dim,), name="z")
    label = None if num_classes is None else keras.Input(shape=(), dtype="int32", name="label")
    height, width, channels = output_shape
    channels = params_per_pixel or channels
    h = z if label is None else with_one_hot(z, label, num_classes)
    if architecture == "mlp":
        for i, units in enumerate(reversed(hidden_units)):
            h = hidden_layer(h, units, gated, name=f"dense_{i}")
        h = layers.Dense(height * width * channels, name="pixels")(h)
        out = layers.Reshape((height, width, channels), name="x_params")(h)
    else:
        scale = 2 ** len(conv_filters)
        filters = list(reversed(conv_filters))
        h = layers.Dense(
            (height // scale) * (width // scale) * filters[0], activation="relu", name="dense"
        )(h)
        h = layers.Reshape((height // scale, width // scale, filters[0]), name="reshape")(h)
        for i, f in enumerate(filters):
            h = upsample(h, f, conv_upsampling, name=f"deconv_{i}")
            for b in range(conv_residual_blocks):
                h = residual_block(h, f, name=f"deconv_{i}_residual_{b}")
        out = layers.Conv2D(channels, 3, padding="same", name="x_params")(h)
    return keras.Model(z if label is None else [z, label], out, name="decoder")


def with_one_hot(features, label, num_classes):
    """features (B, F) and int labels (B,) -> (B, F + num_classes): the label one-hot, appended."""
    one_hot = layers.Lambda(lambda y: keras.ops.one_hot(y, num_classes), name="label_one_hot",
                            output_shape=(num_classes,))(label)
    return layers.Concatenate(name="with_label")([features, one_hot])


def residual_block(h, filters, name):
    """relu(h + conv(relu(conv(h)))): two 3×3 convolutions of `filters` channels and a skip."""
    y = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_a")(h)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_b")(y)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([h, y]))


def upsample(h, filters, kind, name):
    """Doubles height and width: a stride-2 3×3 transposed convolution, or a sub-pixel one.

    "subpixel" (Shi et al. 2016) is a 3×3 convolution to 4·filters channels at the low
    resolution, then `DepthToSpace` (each pixel's 4·filters channels become a 2×2 block of
    `filters`): the same kind of layer, with 4× the weights, but made of a plain convolution,
    which XLA and PyTorch run on CPU several times faster than a transposed one's gradient
    (docs/images.md).
    """
    if kind == "transpose":
        return layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu",
                                      name=name)(h)
    if kind != "subpixel":
        raise ValueError(f"conv_upsampling must be one of {CONV_UPSAMPLINGS}, got {kind!r}")
    h = layers.Conv2D(4 * filters, 3, padding="same", activation="relu", name=name)(h)
    return DepthToSpace(2, name=f"{name}_depth_to_space")(h)


@keras.saving.register_keras_serializable(package="keras_vae")
class DepthToSpace(layers.Layer):
    """(B, H, W, s²·C) -> (B, s·H, s·W, C): each pixel's channels laid out as an s×s block.

    The channel index c' = (i·s + j)·C + c goes to row s·h + i, column s·w + j, channel c
    (TensorFlow's depth_to_space and ONNX's DepthToSpace in "DCR" order), written with
    reshape and transpose so that every backend and tf2onnx run it.
    """

    def __init__(self, block_size=2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, x):
        s = self.block_size
        height, width, depth = x.shape[1], x.shape[2], x.shape[3]
        channels = depth // (s * s)
        x = keras.ops.reshape(x, (-1, height, width, s, s, channels))
        x = keras.ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return keras.ops.reshape(x, (-1, height * s, width * s, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, depth = input_shape
        s = self.block_size
        return (batch, height * s, width * s, depth // (s * s))

    def get_config(self):
        return dict(super().get_config(), block_size=self.block_size)


# Conv depth when `conv_filters` is not given: stride-2 layers until the feature map's
# shorter side is at most this many pixels (and at least MIN_CONV_LAYERS of them).
CONV_SMALLEST_SIDE = 8
MIN_CONV_LAYERS = 2
CONV_BASE_FILTERS = 32
CONV_MAX_FILTERS = 256


def default_conv_filters(input_shape):
    """Conv filters whose depth follows the image size: one stride-2 layer per halving.

    The shorter side is halved until it is at most `CONV_SMALLEST_SIDE` pixels, at
    least `MIN_CONV_LAYERS` times, while height and width still divide by two; the
    filters double from 32 up to 256.
    8×8 and 28×28 and 32×32 images get (32, 64); 64×64 (32, 64, 128); 128×128
    (32, 64, 128, 256).
    """
    height, width = input_shape[0], input_shape[1]
    layers_count = MIN_CONV_LAYERS
    while (min(height, width) / 2 ** layers_count > CONV_SMALLEST_SIDE
           and height % 2 ** (layers_count + 1) == 0 and width % 2 ** (layers_count + 1) == 0):
        layers_count += 1
    return tuple(min(CONV_BASE_FILTERS * 2 ** i, CONV_MAX_FILTERS) for i in range(layers_count))


def check_architecture(input_shape, architecture, conv_filters, gated=False):
    """Raises ValueError when `architecture` cannot handle `input_shape` (or gated layers)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if gated and architecture != "mlp":
        raise ValueError("gated dense layers are an option of architecture='mlp' only")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    if architecture == "conv":
        scale = 2 ** len(conv_filters)
        if input_shape[0] % scale or input_shape[1] % scale:
            raise ValueError(
                f"architecture='conv' with {len(conv_filters)} stride-2 layers needs height "
                f"and width divisible by {scale}, got input_shape={tuple(input_shape)}"
            )
