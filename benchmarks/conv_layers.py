"""Why the conv VAE trains at different speeds on each backend: its layers one at a time.

Each of the conv VAE's layer kinds (32×32×3 images, filters 32-64, batch 128) is trained
alone with `model.fit` (MSE to random targets, Adam) under each Keras backend in its own
process, and the milliseconds of one training step (forward and gradient) are printed,
with each backend's time against the fastest backend's for that layer. The decoder's
stride-2 transposed convolutions (`--conv-upsampling transpose`) and their sub-pixel
replacement (`subpixel`: a convolution to 4× the channels, then DepthToSpace) are both
measured, so the table shows which layer a slow backend loses its time in.

examples:
  python benchmarks/conv_layers.py
  python benchmarks/conv_layers.py --backends jax,tensorflow --steps 10
"""

import argparse
import json
import statistics
import sys
import time

from common import BACKENDS
from common import machine_line
from common import markdown_table
from common import run_worker

BATCH_SIZE = 128
# name: (input shape, layer spec): the layers of VAE(input_shape=(32, 32, 3), conv_filters=(32, 64))
LAYERS = {
    "encoder conv 32×32×3 → 16×16×32 (stride 2)": ((32, 32, 3), ("conv", 32, 2)),
    "encoder conv 16×16×32 → 8×8×64 (stride 2)": ((16, 16, 32), ("conv", 64, 2)),
    "decoder transposed conv 8×8×64 → 16×16×64": ((8, 8, 64), ("transpose", 64)),
    "decoder transposed conv 16×16×64 → 32×32×32": ((16, 16, 64), ("transpose", 32)),
    "decoder sub-pixel conv 8×8×64 → 16×16×64": ((8, 8, 64), ("subpixel", 64)),
    "decoder sub-pixel conv 16×16×64 → 32×32×32": ((16, 16, 64), ("subpixel", 32)),
    "decoder output conv 32×32×32 → 32×32×3": ((32, 32, 32), ("conv", 3, 1)),
}


def build(input_shape, spec):
    import keras

    from keras_vae.models.networks import upsample

    x = keras.Input(input_shape)
    if spec[0] == "conv":
        y = keras.layers.Conv2D(spec[1], 3, strides=spec[2], padding="same", activation="relu")(x)
    else:
        y = upsample(x, spec[1], spec[0], name="up")
    model = keras.Model(x, y)
    model.compile(optimizer="adam", loss="mse")
    return model


def worker(args):
    import numpy as np

    import keras

    rng = np.random.default_rng(0)
    results = {}
    for name, (input_shape, spec) in LAYERS.items():
        model = build(input_shape, spec)
        x = rng.standard_normal((BATCH_SIZE, *input_shape)).astype("float32")
        y = rng.standard_normal((BATCH_SIZE, *model.output.shape[1:])).astype("float32")
        model.train_on_batch(x, y)  # compiles
        times = []
        for _ in range(args.steps):
            started = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - started)
        results[name] = 1000 * statistics.median(times)
        keras.utils.clear_session()
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per layer (median)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    backends = args.backends.split(",")
    measured = {}
    for backend in backends:
        print(f"measuring {backend} ...", file=sys.stderr, flush=True)
        measured[backend] = run_worker(__file__, ["--worker", "--steps", str(args.steps)], backend)
    rows = []
    for name in LAYERS:
        fastest = min(measured[b][name] for b in backends)
        rows.append([name] + [f"{measured[b][name]:,.1f} ({measured[b][name] / fastest:.1f}×)"
                              for b in backends])
    print(f"One training step (forward + gradient + Adam) of each conv layer alone, batch "
          f"{BATCH_SIZE}, ms (against the fastest backend), median of {args.steps}. "
          f"{machine_line()}\n")
    print(markdown_table(["layer"] + backends, rows))


if __name__ == "__main__":
    main()
