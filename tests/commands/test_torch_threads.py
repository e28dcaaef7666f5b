"""torch's threads and OpenMP's wait policy in the keras-vae commands: the preamble's defaults,
as torch and OpenMP's own library report them inside a command's process, and the user's
environment winning over them."""

import json
import os
import subprocess
import sys

import pytest

from helpers.processes import ROOT
from keras_vae.commands.threads import DEFAULT_THREADS
from keras_vae.commands.threads import THREADS_VARIABLE
from keras_vae.commands.threads import set_wait_policy
from keras_vae.commands.threads import torch_threads

#: Runs `keras-vae ARGS...` (keras_vae.cli.main) and, as the process exits, prints what torch
#: runs with there: its intra-op threads and the wait policy in the process's environment.
COMMAND_WITH_PROBE = """
import atexit, json, os, sys

def report():
    torch = sys.modules.get("torch")
    print("PROBE " + json.dumps({
        "torch_threads": torch.get_num_threads() if torch else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }), flush=True)

atexit.register(report)
from keras_vae.cli import main
sys.exit(main(sys.argv[1:]))
"""

VARIABLES = (THREADS_VARIABLE, "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

#: A thread count that is neither keras-vae's default nor torch's own (one per core).
OTHER_COUNT = max(DEFAULT_THREADS, os.cpu_count() or 1) + 1


def run_command(tmp_path, **environment):
    """`keras-vae evaluate` of a missing run on the torch backend, with only `environment`'s
    thread variables set and libgomp asked to print its settings as it loads; returns
    (exit status, what the probe saw, libgomp's settings, stderr)."""
    env = {name: value for name, value in os.environ.items() if name not in VARIABLES}
    env.update(environment, OMP_DISPLAY_ENV="VERBOSE", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", COMMAND_WITH_PROBE, "evaluate", str(tmp_path / "no-run"),
         "--backend", "torch", "--verbose"],  # --verbose: no TensorFlow import, a quicker start
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    probe = next(json.loads(line[len("PROBE "):]) for line in result.stdout.splitlines()
                 if line.startswith("PROBE "))
    # libgomp's own report as it loads, e.g. "  GOMP_SPINCOUNT = '0'": the polls a waiting
    # thread spins before it sleeps (300000 when OMP_WAIT_POLICY is not set)
    gomp = dict(line.strip().replace("'", "").split(" = ", 1) for line in result.stderr.splitlines()
                if line.startswith("  ") and " = " in line)
    return result.returncode, probe, gomp, result.stderr


def test_torch_threads_follows_the_environment():
    assert torch_threads({}) == DEFAULT_THREADS
    assert torch_threads({THREADS_VARIABLE: "3"}) == 3
    assert torch_threads({THREADS_VARIABLE: " 2 "}) == 2
    assert torch_threads({THREADS_VARIABLE: "0"}) is None  # torch's own choice
    assert torch_threads({"OMP_NUM_THREADS": "4"}) is None  # torch reads it itself
    assert torch_threads({"OMP_NUM_THREADS": "4", THREADS_VARIABLE: "3"}) == 3
    assert torch_threads({THREADS_VARIABLE: ""}) == DEFAULT_THREADS
    for bad in ("-1", "two", "1.5"):
        with pytest.raises(ValueError, match=THREADS_VARIABLE):
            torch_threads({THREADS_VARIABLE: bad})


def test_the_wait_policy_is_a_default_the_environment_overrides():
    environ = {}
    assert set_wait_policy(environ) == "PASSIVE" and environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert set_wait_policy(environ) == "ACTIVE" and environ == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_a_command_runs_torch_on_one_sleeping_thread_by_default(tmp_path):
    status, probe, gomp, stderr = run_command(tmp_path)
    assert status == 1 and "no-run" in stderr  # the command itself ran, after its preamble
    assert probe == {"torch_threads": DEFAULT_THREADS, "omp_wait_policy": "PASSIVE"}
    # OpenMP's library loaded with the policy: its idle threads sleep without spinning.
    assert gomp["OMP_WAIT_POLICY"] == "PASSIVE" and gomp["GOMP_SPINCOUNT"] == "0"


def test_the_users_environment_wins(tmp_path):
    status, probe, gomp, _ = run_command(tmp_path, **{THREADS_VARIABLE: str(OTHER_COUNT),
                                                      "OMP_WAIT_POLICY": "ACTIVE"})
    assert status == 1
    assert probe == {"torch_threads": OTHER_COUNT, "omp_wait_policy": "ACTIVE"}
    assert gomp["OMP_WAIT_POLICY"] == "ACTIVE" and int(gomp["GOMP_SPINCOUNT"]) > 300_000

    # $OMP_NUM_THREADS is left to torch: the command runs with what plain torch makes of it
    # (torch caps it at the cores it sees).
    _, probe, gomp, _ = run_command(tmp_path, OMP_NUM_THREADS=str(OTHER_COUNT))
    env = {name: value for name, value in os.environ.items() if name not in VARIABLES}
    plain = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           env={**env, "OMP_NUM_THREADS": str(OTHER_COUNT)}, capture_output=True,
                           text=True, timeout=600, check=True)
    assert probe == {"torch_threads": int(plain.stdout), "omp_wait_policy": "PASSIVE"}
    assert gomp["OMP_NUM_THREADS"] == str(OTHER_COUNT)


def test_a_malformed_thread_count_stops_the_command_with_one_line(tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in VARIABLES}
    result = subprocess.run(
        [sys.executable, "-m", "keras_vae", "evaluate", str(tmp_path / "no-run"), "--backend",
         "torch"], cwd=ROOT, env={**env, THREADS_VARIABLE: "many"}, capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"keras-vae: error: {THREADS_VARIABLE} must be a whole number ≥ 0 (0: torch's own "
        "choice), not 'many'"]
