"""Training speed of the conv `HierarchicalVAE` on each Keras backend, on this CPU.

The conv hierarchical VAE (VDVAE style) is trained with `model.fit` for a fixed number of
steps on random 8-bit 32×32×3 images, once per backend, each in its own process (Keras
fixes its backend per process). One short `fit` first compiles the step; the timed `fit`
runs `--steps` more, `--repeats` times, and the fastest run counts (the one least
disturbed by other processes). The table gives images per second and each backend's time
against the fastest's.

examples:
  python benchmarks/hierarchical_speed.py
  python benchmarks/hierarchical_speed.py --upsampling subpixel --steps 20 --backends jax,torch
  python benchmarks/hierarchical_speed.py --torch-threads 0,1,2
"""

import argparse
import json
import os
import sys
import time

from common import BACKENDS
from common import machine_line
from common import markdown_table
from common import run_worker

IMAGE_SHAPE = (32, 32, 3)


def worker(args):
    import numpy as np

    import keras

    if keras.backend.backend() == "torch" and int(args.torch_threads):
        import torch

        torch.set_num_threads(int(args.torch_threads))
    from keras_vae.models.hierarchical import HierarchicalVAE

    model = HierarchicalVAE(
        input_shape=IMAGE_SHAPE, architecture="conv", num_groups=args.num_groups,
        num_resolutions=args.num_resolutions, width=args.width, latent_dim=args.latent_dim,
        residual_blocks=args.residual_blocks, upsampling=args.upsampling,
        likelihood=args.likelihood, grad_clip=200.0, skip_threshold=1e6, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (args.steps * args.batch_size,) + IMAGE_SHAPE) / 255).astype("float32")
    model.fit(x[: 2 * args.batch_size], batch_size=args.batch_size, epochs=1, verbose=0)  # compiles
    seconds = []
    for _ in range(args.repeats):  # the best of several runs: the least disturbed by other processes
        started = time.perf_counter()
        history = model.fit(x, batch_size=args.batch_size, epochs=1, verbose=0).history
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"images_per_second": len(x) / min(seconds), "loss": history["loss"][-1]}))


def torch_default_threads():
    """How many threads torch uses by default here, without importing it in this process."""
    import subprocess

    result = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                            capture_output=True, text=True)
    return result.stdout.strip() or "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of --steps steps; the fastest counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--upsampling", default="nearest", choices=("nearest", "subpixel"))
    parser.add_argument("--likelihood", default="discretized_logistic",
                        choices=("bernoulli", "discretized_logistic", "logistic_mixture"))
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--num-groups", type=int, default=4)
    parser.add_argument("--num-resolutions", type=int, default=2)
    parser.add_argument("--residual-blocks", type=int, default=1)
    parser.add_argument("--torch-threads", default="0,1",
                        help="torch.set_num_threads values to measure, one row each (0: torch's "
                             "default); torch's OpenMP threads slow down badly when other "
                             "processes share the cores, one thread does not")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    passed = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
              if name not in ("backends", "worker", "torch_threads")]
    load_before, measured = os.getloadavg()[0], {}
    for backend in args.backends.split(","):
        threads = args.torch_threads.split(",") if backend == "torch" else ["0"]
        for count in threads:
            name = backend if backend != "torch" else (
                f"torch ({count} thread{'s' if int(count) > 1 else ''})" if int(count)
                else f"torch (default, {torch_default_threads()} threads)")
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            measured[name] = run_worker(__file__, ["--worker", *passed, f"--torch-threads={count}"],
                                        backend)
    fastest = max(m["images_per_second"] for m in measured.values())
    rows = [[backend, f"{m['images_per_second']:,.1f}", f"{fastest / m['images_per_second']:.2f}×",
             f"{m['loss']:,.1f}"] for backend, m in measured.items()]
    print(f"HierarchicalVAE conv, 32×32×3, batch {args.batch_size}, "
          f"best of {args.repeats} runs of {args.steps} steps, "
          f"{args.num_groups} groups over {args.num_resolutions} resolutions, width {args.width}, "
          f"upsampling {args.upsampling}, likelihood {args.likelihood}, "
          f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after. "
          f"{machine_line()}\n")
    print(markdown_table(["backend", "images/s", "time against the fastest", "last loss"], rows))


if __name__ == "__main__":
    main()
