"""Starts N local training processes of one data-parallel run: `keras-vae train --num-processes N`.

Each process gets Keras' distribution variables (KERAS_DISTRIBUTION_JOB_ADDRESSES with free
loopback ports, KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID) and runs
the same `keras-vae train` arguments. Their output is streamed line by line with a
"[rank i]" prefix. When one process fails, the others are stopped, and the launcher exits with
the first failure's status; it exits 0 only when every process did. SIGINT (Ctrl-C) and
SIGTERM are passed on to every process, which stop together at the next step boundary.

Also here, standard library only: `guard_stderr`, which every process of a multi-process run
(launched here or started by hand on several hosts) puts in front of its standard error, so
that when JAX's distributed runtime ends the process its output ends with one line saying
why, not with a C++ stack trace.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

#: The fatal log line with which JAX's distributed runtime ends a process (a C++ stack trace
#: and SIGABRT follow) when its coordination service reports an error: a peer that stopped
#: sending heartbeats, or the service itself gone.
JAX_FATAL_SIGN = "Terminating process because the JAX distributed service detected fatal errors"
REMEDY = "run the same commands again on every process to resume after the last completed epoch"
_GUARDS = []  # the guard processes of this process's standard error


def free_ports(count, host="127.0.0.1"):
    """`count` distinct TCP ports free on `host` right now."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def process_environments(num_processes, base=None, host="127.0.0.1"):
    """The environment of each of `num_processes` local processes (a list of dicts)."""
    base = dict(os.environ if base is None else base)
    addresses = ",".join(f"{host}:{port}" for port in free_ports(num_processes, host))
    return [dict(base, KERAS_DISTRIBUTION_JOB_ADDRESSES=addresses,
                 KERAS_DISTRIBUTION_NUM_PROCESSES=str(num_processes),
                 KERAS_DISTRIBUTION_PROCESS_ID=str(rank), PYTHONUNBUFFERED="1")
            for rank in range(num_processes)]


def _stream(rank, pipe, out, lock):
    for line in iter(pipe.readline, ""):
        with lock:
            out.write(f"[rank {rank}] {line}")
            out.flush()
    pipe.close()


def launch(num_processes, train_args, out=None, grace_seconds=10.0):
    """Runs `python -m keras_vae.commands.train *train_args` in `num_processes` processes.

    Returns the exit status: 0 when every process succeeded, else the first failure's
    status (1 for a process ended by a signal). SIGINT or SIGTERM is passed on to every
    process (each in its own session, so a terminal's Ctrl-C reaches them only this way):
    they agree on a step, stop after it and exit 128 + the signal, which is then the
    launcher's status; a second signal, passed on too, stops them at once.
    """
    out = out or sys.stdout
    command = [sys.executable, "-m", "keras_vae.commands.train", *train_args]
    lock = threading.Lock()
    processes, threads = [], []
    for rank, env in enumerate(process_environments(num_processes)):
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1,
                                   start_new_session=True)
        processes.append(process)
        thread = threading.Thread(target=_stream, args=(rank, process.stdout, out, lock),
                                  daemon=True)
        thread.start()
        threads.append(thread)

    def send_all(signum):
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signum)

    def stop_all():
        send_all(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    received = []  # the signals this launcher got, passed on to every process

    def pass_on(signum, frame):
        received.append(signum)
        send_all(signum)

    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, pass_on) for sig in stop_signals}
    status = 0
    try:
        running = set(range(num_processes))
        while running:
            for rank in sorted(running):
                code = processes[rank].poll()
                if code is None:
                    continue
                running.discard(rank)
                if received and code in (0, *(128 + sig for sig in stop_signals)):
                    continue  # stopped by the signal passed on, as asked
                if code != 0 and status == 0:
                    status = code if code > 0 else 1
                    with lock:
                        out.write(f"[launcher] rank {rank} exited with status {code}; "
                                  "stopping the other processes\n")
                        out.flush()
                    stop_all()
                    running.clear()
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for thread in threads:
        thread.join(timeout=5)
    if status == 0 and received and any(p.returncode for p in processes):
        status = 128 + received[0]
    return status


def guard_stderr(rank, heartbeat_seconds):
    """Routes this process's standard error (file descriptor 2) through a small guard process.

    The guard copies every line to the original standard error, except when JAX's distributed
    runtime ends this process: JAX then logs a fatal message and a C++ stack trace and
    aborts, from one of its own threads, before Python can say anything. The guard drops
    that text and, once this process is gone, writes one line instead: which process
    stopped answering (or that the coordination service on process 0 is gone) and how to
    resume. It runs in its own session, so a Ctrl-C or a signal to this process's group
    does not end it before it has written that line.
    """
    read, write = os.pipe()
    _GUARDS.append(subprocess.Popen(
        [sys.executable, "-m", "keras_vae.training.launcher", "--guard-stderr", str(rank),
         str(heartbeat_seconds)], stdin=read, stdout=subprocess.DEVNULL,
        start_new_session=True))
    os.close(read)
    sys.stderr.flush()
    os.dup2(write, 2)
    os.close(write)


def explain_fatal(text, rank, heartbeat_seconds):
    """The one line that replaces JAX's fatal message `text` in process `rank`'s output."""
    unhealthy = re.search(r"stopped sending heartbeats\):\s*((?:\d+[\s,]*)+)", text)
    if unhealthy:
        tasks = re.findall(r"\d+", unhealthy.group(1))
        if str(rank) in tasks:
            reason = (f"this process did not answer JAX's coordination service for "
                      f"{heartbeat_seconds} s (was it paused, or its machine overloaded?), "
                      "so the run stopped")
        else:
            names = ", ".join(tasks)
            reason = (f"process {names} stopped answering (no heartbeat for "
                      f"{heartbeat_seconds} s), so this one stops too")
    elif "coordination service" in text and re.search(r"Failed to send RPC|leader|UNAVAILABLE",
                                                      text):
        reason = ("this process lost JAX's coordination service, which process 0 runs (it "
                  "stopped or became unreachable), so it stops too")
    else:
        status = text.split("absl::Status:", 1)[-1].strip().splitlines() or [""]
        reason = f"JAX's distributed runtime stopped this process ({status[0][:200]})"
    return f"error: {reason}; {REMEDY} [process {rank}]"


def _guard(rank, heartbeat_seconds, source, out):
    fatal = None
    for line in source:
        if fatal is not None:
            if len(fatal) < 100:
                fatal.append(line)
        elif JAX_FATAL_SIGN in line:
            fatal = [line]
        else:
            out.write(line)
            out.flush()
    if fatal is not None:
        out.write(explain_fatal("".join(fatal), rank, heartbeat_seconds) + "\n")
        out.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["--guard-stderr"]:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(0, encoding="utf-8", errors="replace", closefd=False) as stdin:
        _guard(sys.argv[2], sys.argv[3], stdin, sys.stderr)
