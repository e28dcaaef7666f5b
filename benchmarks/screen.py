"""Screen changes to a training recipe: train each variant, measure each on the same test images.

Every variant is `keras-vae train` with the shared --base options plus its own, trained
into OUT/NAME (several at once with --parallel), then measured by `keras-vae evaluate`
on the same evenly spread test images with the same seed, so the rows' differences are less
noisy than each row's error. A finished variant is not trained again; an interrupted one
resumes. With --deadline-minutes, trainings still running then are stopped and their last
completed epoch (last.keras) is measured, marked as stopped.

With --cpu-minutes, every variant gets the same CPU time instead of the same epochs: a short
calibration run (OUT/NAME.calibration, 3 epochs) measures its CPU seconds per epoch
(`cpu_seconds` in history.csv, the steady third epoch), and it then trains for as many epochs
as fit the budget, so its learning-rate schedule ends with the budget. Variants that run at once
share the cores; CPU time keeps them comparable, and --cpus pins each to its own core.

Prints a Markdown table: the variant, its epochs, training minutes (its own clock), CPU-minutes,
the best validation bound, and the test NLL with its standard error, in nats per example.
"""

import argparse
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line  # noqa: E402
from benchmarks.common import markdown_table  # noqa: E402

EXAMPLES = """
examples:
  # two learning rates and gated layers against the recipe, 30 epochs each, two at a time
  python benchmarks/screen.py --out runs/screen --parallel 2 \\
      --base "--backend jax --dataset data/mnist.npz --dynamic-binarization --latent-dim 50 \\
              --objective iwae --num-samples 5 --prior mixture --lr-schedule cosine --epochs 30" \\
      --variant "recipe=" --variant "lr2e-3=--lr 2e-3" --variant "gated=--gated"

  # the same, stopping whatever still trains after 20 minutes
  python benchmarks/screen.py ... --deadline-minutes 20

  # hierarchical variants at equal CPU time (15 CPU-minutes each), one at a time on core 1
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
  python benchmarks/screen.py --out runs/ablation --cpu-minutes 15 --cpus 1 \
      --base "--backend jax --model hierarchical --dataset data/mnist.npz --dynamic-binarization \
              --val-fraction 0 --num-groups 4 --latent-dim 16 --width 256 --grad-clip 200 \
              --kl-warmup-steps 2000 --lr-schedule cosine" \
      --variant "recipe=" --variant "ema=--ema 0.999" --variant "groups6=--num-groups 6"
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="train.py options shared by every variant")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=OPTIONS",
                        help="a variant: its name, '=', and the train.py options it adds "
                             "(later options win); repeat for each variant")
    parser.add_argument("--out", default="runs/screen", help="parent of the run directories")
    parser.add_argument("--parallel", type=int, default=1, help="variants trained at once")
    parser.add_argument("--deadline-minutes", type=float,
                        help="stop trainings still running after this many minutes")
    parser.add_argument("--cpu-minutes", type=float,
                        help="give every variant this much CPU time: its --epochs is set from "
                             "a 3-epoch calibration run (default: the epochs of the options)")
    parser.add_argument("--cpus", type=int, nargs="+", metavar="CPU",
                        help="pin the trainings to these cores with taskset, one core per "
                             "training at a time (Linux; default: no pinning)")
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="importance samples K for the test NLL (default: 1000)")
    parser.add_argument("--max-images", type=int, default=1000,
                        help="test images, evenly spread through the split (default: 1000)")
    args = parser.parse_args(argv)
    args.variants = []
    for spec in args.variant:
        name, sep, options = spec.partition("=")
        if not sep or not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            parser.error(f"--variant must be NAME=OPTIONS with a plain NAME, got {spec!r}")
        args.variants.append((name, options.split()))
    if len({name for name, _ in args.variants}) != len(args.variants):
        parser.error("variant names must differ")
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    if args.cpus and len(args.cpus) < args.parallel:
        parser.error(f"--cpus names {len(args.cpus)} cores for --parallel {args.parallel}")
    if args.cpu_minutes is not None and args.cpu_minutes <= 0:
        parser.error("--cpu-minutes must be positive")
    return args


CALIBRATION_EPOCHS = 3


def train_command(args, options, run_dir, cpu=None):
    """The `keras-vae train` command of a variant (pinned to `cpu` when given)."""
    command = [sys.executable, "-m", "keras_vae", "train", *args.base.split(), *options,
               "--out", run_dir, "--quiet"]
    return (["taskset", "-c", str(cpu)] if cpu is not None else []) + command


def budget_epochs(args, name, options, cpu=None):
    """The epochs of `args.cpu_minutes` CPU time for a variant, from a short calibration run."""
    from keras_vae.training.run_directory import logged_values

    run_dir = os.path.join(args.out, f"{name}.calibration")
    history_path = os.path.join(run_dir, "history.csv")
    seconds = logged_values(history_path, "cpu_seconds")
    if len(seconds) < CALIBRATION_EPOCHS:
        command = train_command(args, [*options, "--epochs", str(CALIBRATION_EPOCHS),
                                       "--checkpoint-every", "0", "--overwrite"], run_dir, cpu)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = logged_values(history_path, "cpu_seconds")
    per_epoch = seconds[-1] - seconds[-2]  # the first epoch also compiles
    epochs = max(1, int(args.cpu_minutes * 60 / per_epoch))
    print(f"[{name}] {per_epoch:.1f} CPU-s per epoch: {epochs} epochs in "
          f"{args.cpu_minutes:g} CPU-minutes", flush=True)
    return epochs


def train_variants(args):
    """Trains every variant, `args.parallel` at a time; returns {name: stopped early (bool)}."""
    pending, running, stopped = list(args.variants), {}, {}
    free_cpus = list(args.cpus or [None] * args.parallel)
    started = time.monotonic()
    deadline = started + 60 * args.deadline_minutes if args.deadline_minutes else None
    while pending or running:
        while pending and len(running) < args.parallel:
            name, options = pending.pop(0)
            run_dir = os.path.join(args.out, name)
            if os.path.exists(os.path.join(run_dir, "model.keras")) and not os.path.isdir(
                    os.path.join(run_dir, "backup")):
                print(f"[{name}] already trained", flush=True)
                stopped[name] = False
                continue
            cpu = free_cpus.pop(0)
            if args.cpu_minutes:
                options = [*options, "--epochs", str(budget_epochs(args, name, options, cpu))]
            os.makedirs(run_dir, exist_ok=True)
            log = open(os.path.join(args.out, f"{name}.log"), "a")
            print(f"[{name}] training: {' '.join(options) or '(the base options)'}", flush=True)
            process = subprocess.Popen(train_command(args, options, run_dir, cpu), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            running[name] = (process, log, cpu)
        time.sleep(2)
        for name, (process, log, cpu) in list(running.items()):
            if process.poll() is not None:
                log.close()
                del running[name]
                free_cpus.append(cpu)
                stopped[name] = False
                if process.returncode != 0:
                    print(f"[{name}] training failed (exit {process.returncode}); "
                          f"see {log.name}", flush=True)
                else:
                    print(f"[{name}] trained in {(time.monotonic() - started) / 60:.1f} min",
                          flush=True)
        if deadline and time.monotonic() > deadline:
            for name, (process, log, _) in running.items():
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()
                log.close()
                stopped[name] = True
                print(f"[{name}] stopped at the deadline", flush=True)
            for name, _ in pending:
                print(f"[{name}] not started before the deadline", flush=True)
            break
    return stopped


def measure(args, name, stopped):
    """Runs evaluate.py on a variant's model; returns its metrics dict, or None."""
    run_dir = os.path.join(args.out, name)
    model = os.path.join(run_dir, "last.keras" if stopped else "model.keras")
    if not os.path.exists(model):
        return None
    out = os.path.join(run_dir, "screen_eval")
    command = [sys.executable, "-m", "keras_vae", "evaluate", model,
               "--num-samples", str(args.num_samples), "--max-images", str(args.max_images),
               "--out", out]
    base = args.base.split()
    for option in ("--backend", "--dataset", "--data-dir"):  # a bare .keras file needs them
        if option in base:
            command += [option, base[base.index(option) + 1]]
    if args.cpus:
        command = ["taskset", "-c", ",".join(map(str, args.cpus)), *command]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"[{name}] evaluation failed:\n{result.stderr[-2000:]}", flush=True)
        return None
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def history(run_dir):
    """(epochs completed, training minutes, CPU-minutes or None, best val_loss or None) from
    history.csv."""
    from keras_vae.training.run_directory import best_logged_value
    from keras_vae.training.run_directory import last_logged_value
    from keras_vae.training.run_directory import logged_values

    path = os.path.join(run_dir, "history.csv")
    cpu_seconds = last_logged_value(path, "cpu_seconds")
    return (len(logged_values(path, "epoch")), (last_logged_value(path, "elapsed_seconds") or 0.0) / 60,
            None if cpu_seconds is None else cpu_seconds / 60, best_logged_value(path, "val_loss"))


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    stopped = train_variants(args)
    measured = [(name, options) for name, options in args.variants if name in stopped]
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        results = pool.map(lambda variant: measure(args, variant[0], stopped[variant[0]]), measured)
    rows = []
    for (name, options), metrics in zip(measured, results):
        epochs, minutes, cpu_minutes, best_val = history(os.path.join(args.out, name))
        key = "nll" if metrics and "nll" in metrics else "cross_entropy"
        nll = (f"{metrics[key]:.2f} ± {metrics[key + '_standard_error']:.2f}"
               if metrics else "n/a")
        rows.append([name, " ".join(options) or "(base)",
                     f"{epochs}{' (stopped)' if stopped[name] else ''}", f"{minutes:.1f}",
                     "n/a" if cpu_minutes is None else f"{cpu_minutes:.1f}",
                     f"{minutes / epochs * 60:.2f}" if epochs else "n/a",
                     f"{best_val:.2f}" if best_val is not None else "n/a", nll])
    print(f"\nScreen: {args.base}")
    print(f"Test NLL: K = {args.num_samples} on {args.max_images} test images, the same for "
          f"every row. {machine_line()}\n")
    print(markdown_table(["variant", "options", "epochs", "training min", "CPU min", "s/epoch",
                          "best val bound", "test NLL"], rows))


if __name__ == "__main__":
    main()
