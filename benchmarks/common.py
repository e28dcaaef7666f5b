"""Helpers shared by the benchmark scripts: subprocess workers, timing, machine line, tables."""

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


def run_worker(script, args, backend=None, timeout=1800):
    """Runs `python script args` (under a Keras backend); returns the JSON it prints last."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run([sys.executable, script, *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


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
