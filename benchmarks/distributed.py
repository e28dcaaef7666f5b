"""Overhead of multi-process data-parallel training (JAX), on one machine.

For each recipe (the MLP and the conv VAE on 28×28×1 images), times `model.fit` steps of the
same global batch in three layouts:

  1 process × 1 device     plain training
  1 process × 2 devices    keras.distribution.DataParallel over 2 virtual CPU devices
                           (XLA_FLAGS=--xla_force_host_platform_device_count=2)
  2 processes × 1 device   the same DataParallel across 2 processes (JAX's distributed
                           runtime, Gloo all-reduce over loopback TCP)

and prints the median step time and the bytes all-reduced per step (the float32 gradient of
every trainable weight, summed across the processes once per step). On a machine with few
cores, shared with other work, only the ratios of one run mean anything; the step time is
not a speed-up measurement (2 cores cannot show one).

examples:
  python benchmarks/distributed.py                       # both recipes, 30 timed steps
  python benchmarks/distributed.py --recipes mlp --steps 20
"""

import argparse
import json
import os
import subprocess
import sys
import time

from common import machine_line
from common import markdown_table

RECIPES = {
    "mlp": [],
    "conv": ["--architecture", "conv"],
}
LAYOUTS = ("1 process × 1 device", "1 process × 2 devices", "2 processes × 1 device")


def cpu_line():
    model, vnni = "unknown CPU", 0
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("model name"))
        vnni = sum("avx512_vnni" in line for line in text.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return f"{model} (avx512_vnni on {vnni} of {os.cpu_count()} CPUs)"


def worker(args):
    """Times fit steps in this process (one of the layouts); prints one JSON line."""
    os.environ["KERAS_BACKEND"] = "jax"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from keras_vae.training import devices as device_lib

    device_lib.initialize_processes()
    import keras
    import numpy as np

    from keras_vae.commands.train import parse_args
    from keras_vae.commands.train import train_config
    from keras_vae.training.run import build_model
    from keras_vae.training.shards import ProcessBatches

    config = train_config(parse_args(["--batch-size", str(args.batch_size), *RECIPES[args.recipe]]))
    keras.utils.set_random_seed(0)
    if args.data_parallel:
        device_lib.use_all_devices(args.batch_size)
    vae = build_model(config, (28, 28, 1))
    steps = args.steps + args.warmup
    x = np.random.default_rng(0).random((steps * args.batch_size, 28, 28, 1)).astype("float32")
    times = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # waits for the step to finish
            times.append(time.perf_counter())

    count = device_lib.process_count()
    data = (ProcessBatches((x,), args.batch_size, device_lib.process_index(), count)
            if count > 1 else x)
    vae.fit(data, batch_size=None if count > 1 else args.batch_size, epochs=1, shuffle=False,
            verbose=0, callbacks=[Clock()])
    step_seconds = np.diff(times[args.warmup - 1 :])
    gradient_bytes = sum(int(np.prod(v.shape)) * 4 for v in vae.trainable_variables)
    if device_lib.process_index() == 0:
        print(json.dumps({"step_ms": float(np.median(step_seconds) * 1e3),
                          "gradient_bytes": gradient_bytes,
                          "devices": len(keras.distribution.list_devices())}), flush=True)


def run_layout(layout, recipe, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--recipe", recipe,
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size)]
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    if layout == LAYOUTS[0]:
        outputs = [subprocess.run(command, env=env, capture_output=True, text=True, check=True)]
    elif layout == LAYOUTS[1]:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        outputs = [subprocess.run(command + ["--data-parallel"], env=env, capture_output=True,
                                  text=True, check=True)]
    else:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from keras_vae.training.launcher import process_environments

        processes = [subprocess.Popen(command + ["--data-parallel"], env=e, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for e in process_environments(2, env)]
        outputs = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=600)
            if process.returncode:
                raise RuntimeError(f"a worker failed:\n{stderr[-3000:]}")
            outputs.append(subprocess.CompletedProcess(command, 0, stdout, stderr))
    lines = [line for o in outputs for line in o.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--steps", type=int, default=30, help="timed steps per layout")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compiling)")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="mlp", help=argparse.SUPPRESS)
    parser.add_argument("--data-parallel", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for recipe in args.recipes:
        results = {layout: run_layout(layout, recipe, args) for layout in LAYOUTS}
        base = results[LAYOUTS[0]]["step_ms"]
        for layout, result in results.items():
            communicated = result["gradient_bytes"] if layout == LAYOUTS[2] else 0
            rows.append([recipe, layout, f"{result['step_ms']:.1f}",
                         f"{result['step_ms'] / base:.2f}",
                         f"{result['gradient_bytes'] / 1e6:.2f}",
                         f"{communicated / 1e6:.2f}"])
    print(f"Global batch {args.batch_size}, 28×28×1 images, median of {args.steps} steps; "
          f"{cpu_line()}; {machine_line()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print()
    print(markdown_table(["recipe", "layout", "step ms", "vs 1×1", "gradient MB",
                          "MB all-reduced across processes per step"], rows))


if __name__ == "__main__":
    main()
