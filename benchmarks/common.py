"""Helpers shared by the benchmark scripts: subprocess workers, timing, machine line, tables."""

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")


def run_worker(script, args, backend=None, timeout=1800, environment=None):
    """Runs `python script args` (under a Keras backend); returns the JSON it prints last.

    `environment` maps variable names to values for the worker, None removing one."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    for name, value in (environment or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    result = subprocess.run([sys.executable, script, *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# === torch's threads, and a neighbour process ===

#: The variables that decide torch's threads and how OpenMP's idle threads wait.
TORCH_THREAD_VARIABLES = ("KERAS_VAE_TORCH_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                          "GOMP_SPINCOUNT")
#: Set in a worker's environment when it must leave torch as torch starts (the "unset" setting).
TORCH_AS_IS = "KERAS_VAE_BENCHMARK_TORCH_AS_IS"


def torch_setting_environment(setting):
    """The worker environment of one torch setting (--torch-settings), for `run_worker`.

    "keras-vae": what the keras-vae commands do (keras_vae.commands.threads), in the
    environment as given; "unset": torch as it starts, with none of the thread variables and
    no keras-vae settings; "NAME=VALUE+NAME=VALUE": keras-vae's settings with these variables.
    """
    if setting == "keras-vae":
        return {}
    if setting == "unset":
        return {**{name: None for name in TORCH_THREAD_VARIABLES}, TORCH_AS_IS: "1"}
    environment = {}
    for assignment in setting.split("+"):
        name, equals, value = assignment.partition("=")
        if not equals or name not in TORCH_THREAD_VARIABLES:
            raise ValueError(f"a torch setting is keras-vae, unset or NAME=VALUE[+NAME=VALUE] "
                             f"with NAME one of {', '.join(TORCH_THREAD_VARIABLES)}: {setting!r}")
        environment[name] = value
    return environment


def start_torch_threads():
    """In a worker, before Keras: torch's threads as the keras-vae commands set them (or as
    torch starts, under the "unset" setting). Returns what is in force, for the table."""
    if os.environ.get(TORCH_AS_IS) != "1":
        from keras_vae.commands.threads import set_torch_threads

        set_torch_threads()
    return {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}


@contextlib.contextmanager
def neighbours(count):
    """`count` CPU-bound neighbour processes (a Python busy loop each) for the block's duration."""
    processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                 for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


def add_torch_options(parser, default):
    """--torch-settings (default `default`) and --neighbour, the options of the speed benchmarks."""
    parser.add_argument("--torch-settings", default=default,
                        help="torch's thread settings, one torch row each: keras-vae (what the "
                             "keras-vae commands set), unset (torch as it starts) or "
                             "NAME=VALUE+NAME=VALUE (keras-vae's settings with these variables, "
                             f"e.g. KERAS_VAE_TORCH_THREADS=0); default: {default}")
    parser.add_argument("--neighbour", type=int, default=0, metavar="N",
                        help="run N CPU-bound processes beside every measurement (default 0)")


def neighbour_phrase(count):
    """'N CPU-bound neighbour process(es)' or 'no neighbour process', for a table's header."""
    if not count:
        return "no neighbour process"
    return f"{count} CPU-bound neighbour process{'es' if count > 1 else ''}"


def cpu_name():
    """The CPU's model name and whether it has AVX-512 VNNI (Linux; else the platform's word)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.machine())
    return f"{name}, {'with' if 'avx512_vnni' in info else 'without'} avx512_vnni"


def median_latency(call, min_seconds=1.0, min_calls=20, warmup=3):
    """Median seconds per call of `call()`, after warm-up, over ≥ min_calls and ≥ min_seconds."""
    for _ in range(warmup):
        call()
    times, started = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def peak_rss_mib():
    """This process's peak resident memory in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_line():
    """One line describing the machine and the library versions found."""
    from importlib import metadata

    versions = []
    for name in ("keras", "tensorflow", "jax", "torch", "onnxruntime"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return (f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}; "
            + ", ".join(versions) + f"; {time.strftime('%Y-%m-%d')}")


def markdown_table(header, rows):
    """A Markdown table from a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
