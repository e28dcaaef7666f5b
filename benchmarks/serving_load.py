"""Loopback load test of the decoder server, with and without micro-batching (or int8 against fp32).

Starts two ``keras-vae serve`` (``python -m keras_vae.serving.server``) processes on free 127.0.0.1 ports,
one with micro-batching and one without, sends each a fixed number of
``/v1/decode`` (or ``/v1/generate``) requests at a fixed concurrency for
each batch size (in interleaved rounds, so background load hits both
alike), and prints a Markdown table (images/s, p50/p99 latency, server peak
RSS) plus the with/without micro-batching throughput ratio of the same run.

The load is bounded (``--requests`` per table row) and stops by itself; only
127.0.0.1 is ever contacted. The client and the servers share the machine,
so the numbers describe the whole loopback setup. With ``--url`` an already
running local server is measured instead (as configured; no comparison).
With ``--int8 FILE`` the two servers, both micro-batching, serve the fp32
model and the int8 FILE, and the table compares the two decoders.

With ``--overload`` the two servers shed load (``--max-queue-ms``) or not (``inf``):
for each count of heavy clients (``--clients``), half send the heaviest /v1/score
(64 images at the largest K; needs ``--encoder``) and half the heaviest
/v1/generate, back to back (0.1 s pause after a 503), for ``--duration`` seconds,
while a separate process probes a one-image /v1/generate and /healthz every 50 ms.
The table gives goodput and p99 of the heavy requests, refusals, the probes' p99
(answered or refused), the server's peak RSS and the machine's load average (1 minute)
at the end of the row, which shows how much other processes took the cores.

Examples:
    python benchmarks/serving_load.py decoder.onnx
    python benchmarks/serving_load.py decoder.onnx --requests 1000 --concurrency 64
    python benchmarks/serving_load.py decoder.onnx --endpoint generate --batch-sizes 1,16,64
    python benchmarks/serving_load.py decoder.onnx --url http://127.0.0.1:8000
    python benchmarks/serving_load.py decoder.onnx --int8 decoder.int8.onnx --batch-sizes 1,16,256
    python benchmarks/serving_load.py decoder.onnx --encoder encoder.onnx --overload --clients 8,48
    git archive COMMIT keras_vae | tar -x -C /tmp/before    # then, to compare with that commit:
    python benchmarks/serving_load.py decoder.onnx --encoder encoder.onnx --overload --before /tmp/before
    python benchmarks/serving_load.py decoder.onnx --encoder encoder.onnx --overload --shedding-only --before /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from common import machine_line

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "localhost"}


@dataclass
class Result:
    batch: int
    label: str  # micro-batching "on"/"off", or the decoder "fp32"/"int8"
    requests: int
    concurrency: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    peak_rss_mib: float | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mib(pid: int) -> float | None:
    """Peak resident memory of a process in MiB (Linux VmHWM; else current RSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:
        return None


class LocalServer:
    """``keras-vae serve`` (``python -m keras_vae.serving.server``) in a subprocess on a free loopback port."""

    def __init__(self, model: str, micro_batching: bool, extra: list[str],
                 source: Path = REPO) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "keras_vae.serving.server", model, "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning", *extra]
        if not micro_batching:
            cmd.append("--no-micro-batching")
        self._log = tempfile.TemporaryFile()
        # python -m finds keras_vae in the working directory first: ``source``'s copy.
        self.proc = subprocess.Popen(cmd, cwd=source, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"server exited:\n{self._log.read().decode()}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _payloads(endpoint: str, batch: int, latent_dim: int, count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    if endpoint == "generate":
        return [json.dumps({"n": batch, "seed": i, "format": "npy"}).encode()
                for i in range(count)]
    return [json.dumps({"z": rng.standard_normal((batch, latent_dim)).round(5).tolist(),
                        "format": "npy"}).encode() for _ in range(count)]


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 keep-alive POST on an open connection; returns (status, body)."""
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _load(url: str, path: str, payloads: list[bytes],
                concurrency: int) -> tuple[float, list[float]]:
    """Send every payload once from ``concurrency`` keep-alive connections.

    A minimal asyncio HTTP/1.1 client keeps the load generator's own CPU
    use small, since it shares the machine with the server.
    Returns (wall seconds, per-request latencies in seconds).
    """
    target = urlparse(url)
    latencies: list[float] = []
    queue = list(reversed(payloads))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(target.hostname, target.port)
        try:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                status, answer = await _post(reader, writer, path, body)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}: {answer[:200]!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


def measure(targets: dict[str, tuple[str, int | None]], args: argparse.Namespace,
            batch: int, latent_dim: int) -> list[Result]:
    """Measure every target at one batch size, interleaving them round by round.

    ``targets`` maps a label ("on"/"off", or "fp32"/"int8") to (url, server pid).
    Each target gets a warm-up, then ``args.rounds`` slices of the requests,
    alternating targets (and which goes first) so that background load on
    the machine affects all of them alike.
    """
    path = "/v1/generate" if args.endpoint == "generate" else "/v1/decode"
    warmup = _payloads(args.endpoint, batch, latent_dim, min(args.requests, 2 * args.concurrency))
    payloads = _payloads(args.endpoint, batch, latent_dim, args.requests)
    slices = [payloads[i :: args.rounds] for i in range(args.rounds)]
    seconds = dict.fromkeys(targets, 0.0)
    latencies: dict[str, list[float]] = {label: [] for label in targets}
    for url, _ in targets.values():
        asyncio.run(_load(url, path, warmup, args.concurrency))
    labels = list(targets)
    for round_ in range(args.rounds):
        for label in labels[round_ % len(labels):] + labels[: round_ % len(labels)]:
            s, lat = asyncio.run(_load(targets[label][0], path, slices[round_], args.concurrency))
            seconds[label] += s
            latencies[label] += lat
    results = []
    for label, (_, pid) in targets.items():
        ms = np.array(latencies[label]) * 1e3
        results.append(Result(batch, label, args.requests, args.concurrency,
                              batch * args.requests / seconds[label],
                              float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                              _peak_rss_mib(pid) if pid else None))
    return results


def _table(results: list[Result], column: str) -> str:
    lines = [f"| batch | {column} | requests | concurrency | images/s | p50 ms | p99 ms "
             "| server peak RSS MiB |",
             "|---:|:---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rss = f"{r.peak_rss_mib:.0f}" if r.peak_rss_mib is not None else "n/a"
        lines.append(f"| {r.batch} | {r.label} | {r.requests} | {r.concurrency} "
                     f"| {r.images_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {rss} |")
    return "\n".join(lines)


def _ratios(results: list[Result], first: str, second: str, what: str) -> list[str]:
    """One line per batch size: the first label's throughput over the second's, and both p99s."""
    by_key = {(r.batch, r.label): r for r in results}
    lines = []
    for batch in sorted({r.batch for r in results}):
        a, b = by_key.get((batch, first)), by_key.get((batch, second))
        if a and b:
            lines.append(f"- batch {batch}: {what} throughput ratio "
                         f"{a.images_per_s / b.images_per_s:.2f}x, p99 "
                         f"{a.p99_ms:.1f} ms vs {b.p99_ms:.1f} ms")
    return lines


# ------------------------------------------------------------------- overload

PROBE_EVERY_S = 0.05
RETRY_PAUSE_S = 0.1


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                    path: str, body: bytes = b"") -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 keep-alive request; returns (status, headers) and reads the body."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers


async def _client(url: str, method: str, path: str, body: bytes, stop: float,
                  pause_s: float, out: list) -> None:
    """Send the same request until ``stop`` (monotonic seconds), each after the last answer.

    Appends (status, seconds, answered after stop) to ``out``; waits ``pause_s`` between
    requests, and RETRY_PAUSE_S after a 503. A request sent before ``stop`` is waited for.
    """
    target = urlparse(url)
    reader, writer = await asyncio.open_connection(target.hostname, target.port)
    try:
        while time.monotonic() < stop:
            start = time.perf_counter()
            status, headers = await _exchange(reader, writer, method, path, body)
            out.append((status, time.perf_counter() - start, time.monotonic() > stop))
            if headers.get("connection") == "close":
                writer.close()
                reader, writer = await asyncio.open_connection(target.hostname, target.port)
            await asyncio.sleep(RETRY_PAUSE_S if status == 503 else pause_s)
    finally:
        writer.close()


def _probe(url: str, stop: float, results) -> None:
    """In its own process: a one-image /v1/generate and /healthz every PROBE_EVERY_S."""
    cheap, health = [], []

    async def both() -> None:
        await asyncio.gather(
            _client(url, "POST", "/v1/generate", b'{"n": 1, "format": "npy"}', stop,
                    PROBE_EVERY_S, cheap),
            _client(url, "GET", "/healthz", b"", stop, PROBE_EVERY_S, health))

    asyncio.run(both())
    results.put((cheap, health))


@dataclass
class OverloadRow:
    label: str  # shedding "on" / "off", or "as running"
    clients: int
    seconds: float
    score: list  # (status, seconds, after stop) per heavy request
    generate: list
    cheap: list
    health: list
    drain_s: float  # from the end of the load to the last answer
    peak_rss_mib: float | None
    load_average: float  # the machine's, over the last minute, at the end of the row


def overload(url: str, pid: int | None, label: str, clients: int, info: dict,
             seconds: float) -> OverloadRow:
    """``clients`` heavy clients (half score when the server has an encoder) and the probes."""
    rng = np.random.default_rng(0)
    generate_body = json.dumps({"n": info["max_batch"], "format": "npy"}).encode()
    score_body = None
    if info.get("encoder"):
        images = (rng.random((64, *info["image_shape"])) < 0.5).astype(float)
        score_body = json.dumps({"images": images.tolist(),
                                 "num_samples": info["encoder"]["max_score_samples"]}).encode()
    scorers = clients // 2 if score_body else 0
    score: list = []
    generate: list = []
    stop = time.monotonic() + seconds
    results = multiprocessing.get_context("fork").SimpleQueue()
    prober = multiprocessing.get_context("fork").Process(target=_probe, args=(url, stop, results))
    prober.start()

    async def heavy() -> None:
        await asyncio.gather(
            *(_client(url, "POST", "/v1/score", score_body, stop, 0, score)
              for _ in range(scorers)),
            *(_client(url, "POST", "/v1/generate", generate_body, stop, 0, generate)
              for _ in range(clients - scorers)))

    asyncio.run(heavy())
    cheap, health = results.get()
    prober.join()
    drain = max(0.0, time.monotonic() - stop)
    return OverloadRow(label, clients, seconds, score, generate, cheap, health, drain,
                       _peak_rss_mib(pid) if pid else None, os.getloadavg()[0])


def _p99_ms(answers: list, status: int | None = None) -> str:
    ms = [s * 1e3 for code, s, _ in answers if status is None or code == status]
    return f"{np.percentile(ms, 99):,.0f}" if ms else "-"


def _overload_table(rows: list[OverloadRow]) -> str:
    lines = ["| shedding | heavy clients | score ok/s | score p99 ms | generate ok/s "
             "| generate p99 ms | heavy shed | cheap p99 ms | cheap max ms | cheap shed "
             "| healthz p99 ms | healthz max ms | drain s | server peak RSS MiB | load average |",
             "|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        def ok_per_s(answers):
            return f"{sum(c == 200 and not late for c, _, late in answers) / r.seconds:.1f}"
        shed = sum(c == 503 for c, _, _ in r.score + r.generate)
        cheap_ms = [s * 1e3 for _, s, _ in r.cheap]
        rss = f"{r.peak_rss_mib:.0f}" if r.peak_rss_mib is not None else "n/a"
        lines.append(
            f"| {r.label} | {r.clients} | {ok_per_s(r.score) if r.score else '-'} "
            f"| {_p99_ms(r.score, 200)} | {ok_per_s(r.generate)} | {_p99_ms(r.generate, 200)} "
            f"| {shed} | {_p99_ms(r.cheap)} | {max(cheap_ms):,.0f} "
            f"| {sum(c == 503 for c, _, _ in r.cheap)} | {_p99_ms(r.health)} "
            f"| {max(s for _, s, _ in r.health) * 1e3:,.0f} | {r.drain_s:.1f} | {rss} "
            f"| {r.load_average:.1f} |")
        unexpected = {c for c, _, _ in r.score + r.generate + r.cheap + r.health} - {200, 503}
        if unexpected:
            lines.append(f"| {r.label} | {r.clients} | unexpected statuses: {sorted(unexpected)} |")
    return "\n".join(lines)


def _cpu_name() -> str:
    """The CPU's model name, and whether it has AVX-512 VNNI (Linux; else the platform's word)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "CPU unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "CPU unknown")
    return name + (", avx512_vnni" if "avx512_vnni" in info else ", no avx512_vnni")


def run_overload(args: argparse.Namespace) -> int:
    """Shedding on (``--max-queue-ms``) against off (``inf``), or one running server."""
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    servers: list[LocalServer] = []
    rows: list[OverloadRow] = []
    try:
        if args.url is not None:
            targets = {"as running": (args.url.rstrip("/"), None)}
        else:
            model, encoder = (str(Path(f).resolve()) if f else None for f in (args.model, args.encoder))
            extra = ["--batch-wait-ms", str(args.batch_wait_ms)] + (["--encoder", encoder] if encoder else [])
            if args.intra_op_threads is not None:
                extra += ["--intra-op-threads", str(args.intra_op_threads)]
            bounds = ([] if args.shedding_only else ["inf"]) + [str(args.max_queue_ms)]
            servers = [LocalServer(model, True, extra + ["--max-queue-ms", bound]) for bound in bounds]
            labels = ([] if args.shedding_only else ["off"]) + ["on"]
            if args.before:
                servers.append(LocalServer(model, True, extra, source=Path(args.before)))
                labels.append("before")
            for server in servers:
                server.wait_ready()
            targets = {label: (server.url, server.proc.pid) for label, server in zip(labels, servers)}
        for count in clients:
            for label, (url, pid) in targets.items():
                info = httpx.get(url + "/v1/model", timeout=30).json()
                rows.append(overload(url, pid, label, count, info, args.duration))
                print(f"{label}, {count} clients: done", file=sys.stderr, flush=True)
    finally:
        for server in servers:
            server.stop()
    print(f"overload of {args.model}" + (f" with {args.encoder}" if args.encoder else "")
          + f": {args.duration:g} s per row, max queue {args.max_queue_ms:g} ms when on; heavy: "
          "/v1/score of 64 images at the largest K and /v1/generate at the largest n, half each; "
          f"cheap: a one-image /v1/generate every {PROBE_EVERY_S * 1e3:.0f} ms. {machine_line()}; "
          f"{_cpu_name()}\n")
    print(_overload_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1],
        epilog="\n".join(__doc__.split("\n\n")[-1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="path to decoder.onnx (the server loads it)")
    p.add_argument("--int8", metavar="FILE", default=None,
                   help="compare this int8 decoder with MODEL (fp32), both micro-batching")
    p.add_argument("--url", default=None,
                   help="measure a running server at http://127.0.0.1:PORT instead of "
                        "starting one (loopback only)")
    p.add_argument("--endpoint", choices=["decode", "generate"], default="decode",
                   help="/v1/decode (default) or /v1/generate")
    p.add_argument("--batch-sizes", default="1,16",
                   help="comma-separated images per request (default 1,16)")
    p.add_argument("--requests", type=int, default=1000,
                   help="requests per table row, after a warm-up (default 1000)")
    p.add_argument("--rounds", type=int, default=4,
                   help="interleaved on/off rounds the requests are split into (default 4)")
    p.add_argument("--concurrency", type=int, default=32,
                   help="requests in flight at once (default 32)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="server micro-batch window in ms (default 2)")
    p.add_argument("--intra-op-threads", type=int, default=None,
                   help="onnxruntime intra-op threads in the server (default: its choice)")
    p.add_argument("--overload", action="store_true",
                   help="overload the server with and without shedding (see above)")
    p.add_argument("--encoder", metavar="FILE", default=None,
                   help="with --overload: serve this encoder.onnx too, and send /v1/score")
    p.add_argument("--clients", default="8,48",
                   help="with --overload: comma-separated heavy client counts (default 8,48)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="with --overload: seconds of load per table row (default 20)")
    p.add_argument("--max-queue-ms", type=float, default=500.0,
                   help="with --overload: the shedding server's --max-queue-ms (default 500)")
    p.add_argument("--shedding-only", action="store_true",
                   help="with --overload: leave out the server without a bound ('off')")
    p.add_argument("--before", metavar="DIR", default=None,
                   help="with --overload: also measure the server of another source tree (the "
                        "folder holding its keras_vae/, e.g. from git archive), as 'before'")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    if min(args.requests, args.concurrency, args.rounds, *sizes, 1) < 1 or not sizes:
        print("error: --requests, --concurrency, --rounds and batch sizes must be positive",
              file=sys.stderr)
        return 2
    if args.url is not None and urlparse(args.url).hostname not in LOOPBACK:
        print("error: --url must point at 127.0.0.1 (loopback only)", file=sys.stderr)
        return 2
    if args.overload:
        return run_overload(args)

    results: list[Result] = []
    servers: list[LocalServer] = []
    try:
        if args.url is not None:
            url = args.url.rstrip("/")
            info = httpx.get(url + "/v1/model", timeout=10).json()
            targets = {"on" if info.get("micro_batching") else "off": (url, None)}
        else:
            extra = ["--batch-wait-ms", str(args.batch_wait_ms), "--max-batch-size", str(max(256, *sizes))]
            if args.intra_op_threads is not None:
                extra += ["--intra-op-threads", str(args.intra_op_threads)]
            if args.int8:
                servers = [LocalServer(path, True, extra) for path in (args.model, args.int8)]
                labels = ("fp32", "int8")
            else:
                servers = [LocalServer(args.model, on, extra) for on in (True, False)]
                labels = ("on", "off")
            for server in servers:
                server.wait_ready()
            info = httpx.get(servers[0].url + "/v1/model", timeout=10).json()
            targets = {label: (server.url, server.proc.pid) for label, server in zip(labels, servers)}
        for batch in sizes:
            results += measure(targets, args, batch, info["latent_dim"])
    finally:
        for server in servers:
            server.stop()

    models = f"{args.model} against {args.int8}" if args.int8 else args.model
    print(f"endpoint /v1/{args.endpoint}, model {models}, batch window "
          f"{args.batch_wait_ms} ms. {machine_line()}\n")
    print(_table(results, "decoder" if args.int8 else "micro-batching"))
    ratios = (_ratios(results, "int8", "fp32", "int8/fp32") if args.int8
              else _ratios(results, "on", "off", "micro-batching on/off"))
    if ratios:
        print("\n" + "\n".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
