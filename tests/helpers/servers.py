"""`keras-vae serve` in a subprocess on a free loopback port, for the tests that need a real server."""

import contextlib
import socket
import subprocess
import sys
import time

import httpx
import pytest

from helpers.processes import REPO


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(decoder, encoder, log_path, *flags):
    """``host:port`` of `keras-vae serve DECODER --encoder ENCODER FLAGS` on 127.0.0.1, once
    `/v2/health/ready` answers (the test fails with the server's log if it does not within
    30 s); stopped afterwards. One onnxruntime thread, warnings only."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keras_vae.serving.server", str(decoder), "--encoder", str(encoder),
             *flags, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--intra-op-threads", "1"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {open(log_path).read()}")
                time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
