"""Running the project's scripts in subprocesses, and reading the tables they print."""

import os
import subprocess
import sys
from pathlib import Path

#: The repository's root (a Path), and the same as a str.
REPO = Path(__file__).resolve().parents[2]
ROOT = str(REPO)
BACKENDS = ("tensorflow", "jax", "torch")


def run_python(args, backend="tensorflow", timeout=600, check=True):
    """Runs `python args...` from the repo root under a backend; returns CompletedProcess."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"python {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def markdown_tables(stdout):
    """Every Markdown table in `stdout`, in order, each as its body rows of stripped cells."""
    tables, current = [], None
    for line in stdout.splitlines() + [""]:
        if line.startswith("|"):
            current = (current or []) + [line]
        elif current is not None:
            tables.append([[cell.strip() for cell in row.split("|")[1:-1]] for row in current[2:]])
            current = None
    return tables


def markdown_rows(stdout):
    """The body rows of the first Markdown table in `stdout`, as lists of stripped cells."""
    return markdown_tables(stdout)[0]
