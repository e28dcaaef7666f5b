"""Stopping a multi-process data-parallel run (JAX, two processes on one machine).

A signal stops every process after the same step (else the others would wait forever in the
next step's all-reduce), and the same commands resume. A failure ends each process's output
with one line giving the reason and the remedy, and no stack trace: a process that stops
answering JAX's heartbeat, and process 0 refusing to start.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers.processes import ROOT

pytestmark = pytest.mark.slow

EPOCHS = 3
# 1,294 digits in global batches of 16 (8 rows on each process): 81 steps an epoch.
ARGS = ("--hidden-units", "32", "--latent-dim", "4", "--batch-size", "16", "--epochs",
        str(EPOCHS))
STOP_LINE = re.compile(r"stopped (?:at epoch (\d+), step (\d+) of 81|after epoch (\d+)) "
                       r"\((SIGINT|SIGTERM)(?: on process (\d))?\); run the same command again "
                       r"to resume from (?:the start of )?epoch \d+ \[process (\d)\]")
REMEDY = ("run the same commands again on every process to resume after the last completed "
          "epoch")
STACK_TRACE_SIGNS = ("Traceback", "Check failure stack trace", "    @     0x",
                     "Terminating process because")


def environment(**extra):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def train_command(*args):
    return [sys.executable, "-m", "keras_vae.commands.train", "--backend", "jax", "--quiet",
            *ARGS, *args]


def start_process(rank, port, out, log, **env):
    """One process of a 2-process run, started by hand as on two hosts; output to `log`."""
    env = environment(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port},127.0.0.1:{port + 1}",
                      KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                      KERAS_DISTRIBUTION_PROCESS_ID=str(rank), **env)
    with open(f"{log}.rank{rank}", "w") as f:
        return subprocess.Popen(train_command("--data-parallel", "--out", str(out)), cwd=ROOT,
                                env=env, stdout=f, stderr=subprocess.STDOUT, text=True)


def log_of(log, rank):
    with open(f"{log}.rank{rank}") as f:
        return f.read()


def history_epochs(out):
    path = os.path.join(out, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def committed_epoch(out):
    with open(os.path.join(out, "backup", "training_metadata.json")) as f:
        return json.load(f)["epoch"]


def wait_for_an_epoch(out, processes, timeout=300):
    deadline = time.monotonic() + timeout
    while not history_epochs(out) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), "a process ended before training"
        time.sleep(0.05)
    assert history_epochs(out), "no epoch within the time allowed"
    time.sleep(0.3)  # into the second epoch


def last_line(text):
    return text.strip().splitlines()[-1]


def check_stop_lines(lines, signum):
    """Both processes' last lines are stop lines naming the same step; returns how many epochs
    the run directory must hold, checked against the message."""
    matches = [STOP_LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    assert [int(m[6]) for m in matches] == [0, 1]
    assert all(m[4] == signal.Signals(signum).name for m in matches), lines
    where = {m.group(1, 2, 3) for m in matches}
    assert len(where) == 1, f"the processes stopped at different steps: {lines}"
    epoch, step, after = where.pop()
    return int(after) if after else int(epoch) - 1 if int(step) < 81 else int(epoch)


def check_resumable(out, completed):
    assert completed >= 1
    assert history_epochs(out) == list(range(completed))
    assert committed_epoch(out) == completed
    assert not os.path.exists(os.path.join(out, "samples.png"))


def test_ctrl_c_stops_every_process_at_the_same_step_and_the_same_command_resumes(tmp_path):
    out = str(tmp_path / "run")
    command = train_command("--num-processes", "2", "--out", out)
    launcher = subprocess.Popen(command, cwd=ROOT, env=environment(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for_an_epoch(out, [launcher])
    signalled = time.monotonic()
    launcher.send_signal(signal.SIGINT)  # a terminal's Ctrl-C reaches the launcher alone
    output, _ = launcher.communicate(timeout=120)
    print(f"the launcher and both processes exited {time.monotonic() - signalled:.1f} s after "
          "SIGINT")
    assert launcher.returncode == 130, output[-3000:]
    assert not any(sign in output for sign in STACK_TRACE_SIGNS), output[-3000:]
    assert "[launcher]" not in output
    lines = [last_line("\n".join(line[len(f"[rank {rank}] "):] for line in output.splitlines()
                                 if line.startswith(f"[rank {rank}] "))) for rank in (0, 1)]
    check_resumable(out, check_stop_lines(lines, signal.SIGINT))

    again = subprocess.run(command, cwd=ROOT, env=environment(), text=True, capture_output=True,
                           timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Resuming after epoch" in again.stdout
    assert history_epochs(out) == list(range(EPOCHS))
    assert not os.path.exists(os.path.join(out, "backup"))


def test_sigterm_to_one_process_stops_both_at_the_same_step_and_they_resume(tmp_path):
    """A scheduler preempting one host signals one process; both stop after the same step."""
    out, log, port = tmp_path / "run", tmp_path / "log", 24000 + os.getpid() % 20000
    processes = [start_process(rank, port, out, log) for rank in (0, 1)]
    wait_for_an_epoch(out, processes)
    processes[1].send_signal(signal.SIGTERM)
    for process in processes:
        assert process.wait(timeout=120) == 143, log_of(log, 0)[-3000:]
    logs = [log_of(log, rank) for rank in (0, 1)]
    assert not any(sign in text for text in logs for sign in STACK_TRACE_SIGNS), logs
    lines = [last_line(text) for text in logs]
    assert "(SIGTERM on process 1)" in lines[0] and "(SIGTERM)" in lines[1], lines
    check_resumable(out, check_stop_lines(lines, signal.SIGTERM))

    processes = [start_process(rank, port + 2, out, tmp_path / "again") for rank in (0, 1)]
    for process in processes:
        assert process.wait(timeout=600) == 0, log_of(tmp_path / "again", 0)[-3000:]
    assert history_epochs(out) == list(range(EPOCHS))


def test_a_process_that_stops_answering_ends_the_other_with_one_line(tmp_path):
    """A paused process (SIGSTOP) misses JAX's heartbeats; JAX ends the other one, whose
    output ends with the reason and the remedy instead of JAX's C++ stack trace. Continued,
    the paused one ends the same way."""
    out, log, port = tmp_path / "run", tmp_path / "log", 25000 + os.getpid() % 20000
    heartbeat = 5
    processes = [start_process(rank, port, out, log,
                               KERAS_VAE_HEARTBEAT_TIMEOUT_SECONDS=str(heartbeat))
                 for rank in (0, 1)]
    wait_for_an_epoch(out, processes)
    processes[1].send_signal(signal.SIGSTOP)
    paused = time.monotonic()
    try:
        assert processes[0].wait(timeout=120) != 0
        print(f"process 0 ended {time.monotonic() - paused:.1f} s after process 1 was paused")
    finally:
        processes[1].send_signal(signal.SIGCONT)
    assert processes[1].wait(timeout=120) != 0
    time.sleep(1)  # the guard writes its line once the process is gone
    logs = [log_of(log, rank) for rank in (0, 1)]
    assert not any(sign in text for text in logs for sign in STACK_TRACE_SIGNS), logs
    assert last_line(logs[0]) == (f"error: process 1 stopped answering (no heartbeat for "
                                  f"{heartbeat} s), so this one stops too; {REMEDY} [process 0]")
    assert last_line(logs[1]).startswith("error: "), logs[1][-2000:]
    assert last_line(logs[1]).endswith(f"{REMEDY} [process 1]"), logs[1][-2000:]


def test_process_0_refusing_to_start_gives_its_reason_on_every_process(tmp_path):
    out, log, port = tmp_path / "run", tmp_path / "log", 26000 + os.getpid() % 20000
    os.makedirs(out)
    open(out / "model.keras", "w").close()  # a finished run: a model and no backup/
    processes = [start_process(rank, port, out, log) for rank in (0, 1)]
    for process in processes:
        assert process.wait(timeout=300) == 1
    logs = [log_of(log, rank) for rank in (0, 1)]
    assert not any(sign in text for text in logs for sign in STACK_TRACE_SIGNS), logs
    reason = f"{out} already holds a finished run; choose another --out or pass --overwrite"
    assert last_line(logs[0]) == f"error: {reason} [process 0]"
    assert last_line(logs[1]) == f"error: process 0 cannot start this run: {reason} [process 1]"
    assert not os.path.exists(out / "history.csv")
