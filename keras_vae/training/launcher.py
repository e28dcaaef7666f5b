"""Starts N local training processes of one data-parallel run: `keras-vae train --num-processes N`.

Each process gets Keras' distribution variables (KERAS_DISTRIBUTION_JOB_ADDRESSES with free
loopback ports, KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID) and runs
the same `keras-vae train` arguments. Their output is streamed line by line with a
"[rank i]" prefix. When one process fails, the others are stopped, and the launcher exits with
the first failure's status; it exits 0 only when every process did.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time


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
    status (1 for a process ended by a signal). Ctrl-C or SIGTERM stops every process.
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

    def stop_all(*_):
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM,)}
    status = 0
    try:
        running = set(range(num_processes))
        while running:
            for rank in sorted(running):
                code = processes[rank].poll()
                if code is None:
                    continue
                running.discard(rank)
                if code != 0 and status == 0:
                    status = code if code > 0 else 1
                    with lock:
                        out.write(f"[launcher] rank {rank} exited with status {code}; "
                                  "stopping the other processes\n")
                        out.flush()
                    stop_all()
                    running.clear()
            time.sleep(0.1)
    except KeyboardInterrupt:
        stop_all()
        status = 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for thread in threads:
        thread.join(timeout=5)
    return status


def _raise_interrupt(*_):
    raise KeyboardInterrupt
