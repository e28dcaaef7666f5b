"""Loopback load test of the Ray Serve deployment with 1, 2, ... replicas.

For every replica count, starts ``python -m keras_vae.serving.ray_app`` (a local Ray
instance, HTTP on a free 127.0.0.1 port), sends a fixed number of
``/v1/decode`` requests at a fixed concurrency for each batch size (after a
warm-up), stops the app with Ctrl-C (SIGINT), and prints a Markdown table:
replicas, batch, images/s, p50 and p99 latency. ``--fastapi`` adds the same
measurement of one ``keras-vae serve`` (``python -m keras_vae.serving.server``) process for comparison.

The load is bounded (``--requests`` per table row) and stops by itself; only
127.0.0.1 is ever contacted. Client, Ray's proxy and the replicas share the
machine, so the numbers describe the whole loopback setup.

Examples:
    python benchmarks/ray_serve_load.py runs/digits/decoder.onnx
    python benchmarks/ray_serve_load.py decoder.onnx --replicas 1,2,4 --num-cpus 0.5 --fastapi
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402
from serving_load import _free_port, _load, _payloads  # noqa: E402 - shared loopback client

REPO = Path(__file__).resolve().parent.parent


class App:
    """A serving command in its own process group on a free loopback port."""

    def __init__(self, cmd: list[str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(self.port)],
                                     cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> dict:
        """Wait until the model answers /v1/model; return that answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited:\n{self.log()[-4000:]}")
            try:
                r = httpx.get(self.url + "/v1/model", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"not ready after {timeout:.0f} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        """Ctrl-C, so the app shuts Ray down itself; kill its process group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def measure(url: str, batch: int, latent_dim: int, args: argparse.Namespace) -> tuple:
    """(images/s, p50 ms, p99 ms) of ``args.requests`` decode requests of ``batch`` rows."""
    warmup = _payloads("decode", batch, latent_dim, min(args.requests, 4 * args.concurrency))
    payloads = _payloads("decode", batch, latent_dim, args.requests)
    asyncio.run(_load(url, "/v1/decode", warmup, args.concurrency))
    seconds, latencies = asyncio.run(_load(url, "/v1/decode", payloads, args.concurrency))
    ms = np.array(latencies) * 1e3
    return (batch * args.requests / seconds, float(np.percentile(ms, 50)),
            float(np.percentile(ms, 99)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1],
        epilog="\n".join(__doc__.split("\n\n")[-1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="path to decoder.onnx")
    p.add_argument("--replicas", default="1,2", help="comma-separated replica counts (default 1,2)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica (default 1)")
    p.add_argument("--batch-sizes", default="1,16",
                   help="comma-separated images per request (default 1,16)")
    p.add_argument("--requests", type=int, default=500,
                   help="requests per table row, after a warm-up (default 500)")
    p.add_argument("--concurrency", type=int, default=16,
                   help="requests in flight at once (default 16)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="batch window in milliseconds, for both servers (default 2)")
    p.add_argument("--fastapi", action="store_true",
                   help="also measure one keras-vae serve process (micro-batching on)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    replicas = [int(s) for s in args.replicas.split(",") if s.strip()]
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    if not replicas or not sizes or min(*replicas, *sizes, args.requests, args.concurrency) < 1:
        print("error: replica counts, batch sizes, --requests and --concurrency must be "
              "positive", file=sys.stderr)
        return 2
    shared = ["--max-batch-size", str(max(256, *sizes)), "--batch-wait-ms", str(args.batch_wait_ms)]
    setups = [(("Ray Serve", f"{n} x {args.num_cpus:g} CPU"),
               [sys.executable, "-m", "keras_vae.serving.ray_app", args.model, "--num-replicas", str(n),
                "--num-cpus", str(args.num_cpus), *shared]) for n in replicas]
    if args.fastapi:
        setups.append((("FastAPI server.py", "1 process"),
                       [sys.executable, "-m", "keras_vae.serving.server", args.model, *shared,
                        "--log-level", "warning"]))

    rows = []
    for label, cmd in setups:
        app = App(cmd)
        try:
            started = time.monotonic()
            info = app.wait_ready()
            print(f"{' '.join(label)}: ready in {time.monotonic() - started:.1f} s", file=sys.stderr,
                  flush=True)
            for batch in sizes:
                rows.append((label, batch, *measure(app.url, batch, info["latent_dim"], args)))
        finally:
            app.stop()

    print(f"/v1/decode, model {args.model}, {args.requests} requests per row at concurrency "
          f"{args.concurrency}, batch window {args.batch_wait_ms:g} ms, "
          f"{machine_line()}\n")
    print("| server | replicas | batch | images/s | p50 ms | p99 ms |")
    print("|:---|:---|---:|---:|---:|---:|")
    for (server, replica_text), batch, ips, p50, p99 in rows:
        print(f"| {server} | {replica_text} | {batch} | {ips:,.0f} | {p50:.1f} | {p99:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
