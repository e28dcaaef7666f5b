"""Training speed of the conv `HierarchicalVAE` on each Keras backend, on this CPU.

The conv hierarchical VAE (VDVAE style) is trained with `model.fit` for a fixed number of
steps on random 8-bit 32×32×3 images, once per backend, each in its own process (Keras
fixes its backend per process). One short `fit` first compiles the step; the timed `fit`
runs `--steps` more, `--repeats` times, and the fastest run counts (the one least
disturbed by other processes). The table gives images per second and each backend's time
against the fastest's, and the CPU-seconds each image cost the process (all its threads,
spinning included).

torch runs once per --torch-settings entry: "keras-vae" (what the keras-vae commands set:
keras_vae.commands.threads), "unset" (torch as it starts: one OpenMP thread per core, idle
threads spinning before they sleep) or "NAME=VALUE+..." (keras-vae's settings with these
variables, e.g. KERAS_VAE_TORCH_THREADS=0 for one thread per core). --neighbour N runs N
CPU-bound processes beside every measurement, as a machine shared with other work has.

examples:
  python benchmarks/hierarchical_speed.py
  python benchmarks/hierarchical_speed.py --upsampling subpixel --steps 20 --backends jax,torch
  python benchmarks/hierarchical_speed.py --neighbour 1
  python benchmarks/hierarchical_speed.py --backends torch \\
      --torch-settings unset,keras-vae,KERAS_VAE_TORCH_THREADS=2+OMP_WAIT_POLICY=ACTIVE
"""

import argparse
import json
import os
import resource
import sys
import time

from common import BACKENDS
from common import add_torch_options
from common import cpu_name
from common import machine_line
from common import markdown_table
from common import neighbour_phrase
from common import neighbours
from common import run_worker
from common import start_torch_threads
from common import torch_setting_environment

IMAGE_SHAPE = (32, 32, 3)


def cpu_seconds():
    """CPU-seconds this process has used, all its threads, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(args):
    threads = start_torch_threads()
    import numpy as np

    import keras

    if keras.backend.backend() == "torch":
        import torch

        threads["torch_threads"] = torch.get_num_threads()
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
    seconds, cpu = [], []
    for _ in range(args.repeats):  # the best of several runs: the least disturbed by other processes
        started, cpu_started = time.perf_counter(), cpu_seconds()
        history = model.fit(x, batch_size=args.batch_size, epochs=1, verbose=0).history
        seconds.append(time.perf_counter() - started)
        cpu.append(cpu_seconds() - cpu_started)
    print(json.dumps({"images_per_second": len(x) / min(seconds), "loss": history["loss"][-1],
                      "cpu_ms_per_image": 1e3 * min(cpu) / len(x), **threads}))


def row_name(backend, setting, measured):
    """The table's name for a backend's row: torch's say which threads it ran with."""
    if backend != "torch":
        return backend
    count = measured["torch_threads"]
    what = {"keras-vae": "keras-vae's default", "unset": "torch as it starts"}.get(
        setting, setting.replace("+", ", "))
    return (f"torch, {what} ({count} thread{'s' if count > 1 else ''}, "
            f"OMP_WAIT_POLICY {measured['omp_wait_policy']})")


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
    add_torch_options(parser, "unset,keras-vae,KERAS_VAE_TORCH_THREADS=0")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    settings = args.torch_settings.split(",")
    for setting in settings:
        try:
            torch_setting_environment(setting)
        except ValueError as exc:
            parser.error(str(exc))
    passed = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
              if name not in ("backends", "worker", "torch_settings", "neighbour")]
    load_before, measured = os.getloadavg()[0], {}
    with neighbours(args.neighbour):
        for backend in args.backends.split(","):
            for setting in settings if backend == "torch" else ["keras-vae"]:
                print(f"measuring {backend} ({setting}) ...", file=sys.stderr, flush=True)
                result = run_worker(__file__, ["--worker", *passed], backend,
                                    environment=torch_setting_environment(setting))
                measured[row_name(backend, setting, result)] = result
        load_after = os.getloadavg()[0]
    fastest = max(m["images_per_second"] for m in measured.values())
    rows = [[name, f"{m['images_per_second']:,.1f}", f"{fastest / m['images_per_second']:.2f}×",
             f"{m['cpu_ms_per_image']:,.1f}", f"{m['loss']:,.1f}"] for name, m in measured.items()]
    beside = neighbour_phrase(args.neighbour)
    print(f"HierarchicalVAE conv, 32×32×3, batch {args.batch_size}, "
          f"best of {args.repeats} runs of {args.steps} steps, "
          f"{args.num_groups} groups over {args.num_resolutions} resolutions, width {args.width}, "
          f"upsampling {args.upsampling}, likelihood {args.likelihood}; {beside}; "
          f"1-minute load average {load_before:.1f} before, {load_after:.1f} after. "
          f"{cpu_name()}; {machine_line()}\n")
    print(markdown_table(["backend", "images/s", "time against the fastest",
                          "CPU ms per image", "last loss"], rows))


if __name__ == "__main__":
    main()
