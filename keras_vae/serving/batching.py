"""Server-side micro-batching of decode requests (asyncio).

Concurrent requests each submit a small ``z`` block ``[n_i, latent_dim]``.
One background task collects the blocks that arrive within ``wait_ms`` of
the first one (or until ``max_batch`` rows are queued), decodes them with a
single call of ``decode_fn`` in a worker thread, and hands every request its
own slice of the result. Fewer, larger onnxruntime calls give more images/s
under load at the cost of at most ``wait_ms`` extra latency.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = ["MicroBatcher", "ShuttingDown", "encode_off_loop"]

# Responses with more values than this are encoded in a worker thread.
LARGE_RESPONSE_VALUES = 16384


T = TypeVar("T")


async def encode_off_loop(values: int, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` (e.g. PNG or JSON encoding of ``values`` numbers).

    Large jobs go to a worker thread so the event loop keeps serving other
    requests meanwhile; small ones run inline, where a thread hop would cost
    more than the work.
    """
    if values > LARGE_RESPONSE_VALUES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


class ShuttingDown(RuntimeError):
    """The batcher stopped before the request was decoded."""


@dataclass
class _Job:
    z: np.ndarray  # float32 [n, latent_dim], already validated
    future: asyncio.Future


class MicroBatcher:
    """Queue decode work and run it in batches.

    Args:
        decode_fn: blocking function ``z [N, latent_dim] -> x [N, H, W, C]``
            (e.g. ``Sampler.decode``); called from one worker thread at a time.
        max_batch: most rows per ``decode_fn`` call. A single request larger
            than this still runs, alone.
        wait_ms: how long the first queued request waits for company.
        on_batch: optional callback ``(rows, requests)`` after each call,
            e.g. for metrics.

    Use ``await start()`` / ``await stop()`` around the serving lifetime and
    ``await decode(z)`` from request handlers.
    """

    def __init__(
        self,
        decode_fn: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 256,
        wait_ms: float = 2.0,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        if wait_ms < 0:
            raise ValueError(f"wait_ms must be >= 0; got {wait_ms}")
        self._decode_fn = decode_fn
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self._on_batch = on_batch
        self._jobs: deque[_Job] = deque()
        self._rows = 0  # rows currently queued
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the background batching task (idempotent)."""
        if not self.running:
            # Events are made here so that they belong to the serving event loop.
            self._has_jobs = asyncio.Event()
            self._full = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the task; requests still queued fail with ``ShuttingDown``."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(ShuttingDown("server is shutting down"))
        self._rows = 0

    async def decode(self, z: np.ndarray) -> np.ndarray:
        """Queue ``z`` (float32 ``[n, latent_dim]``) and await its ``[n, H, W, C]`` result."""
        if not self.running:
            raise ShuttingDown("micro-batcher is not running")
        job = _Job(z, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._rows += len(z)
        self._has_jobs.set()
        if self._rows >= self.max_batch:
            self._full.set()
        return await job.future

    def _take_batch(self) -> list[_Job]:
        """Pop queued jobs up to ``max_batch`` rows (at least one job)."""
        batch: list[_Job] = []
        rows = 0
        while self._jobs and (not batch or rows + len(self._jobs[0].z) <= self.max_batch):
            job = self._jobs.popleft()
            self._rows -= len(job.z)
            if job.future.done():  # the client went away while queued
                continue
            batch.append(job)
            rows += len(job.z)
        if not self._jobs:
            self._has_jobs.clear()
        if self._rows < self.max_batch:
            self._full.clear()
        return batch

    async def _loop(self) -> None:
        while True:
            await self._has_jobs.wait()
            if self.wait_s > 0 and not self._full.is_set():
                try:
                    await asyncio.wait_for(self._full.wait(), self.wait_s)
                except asyncio.TimeoutError:  # not the builtin before Python 3.11
                    pass
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Job]) -> None:
        z = batch[0].z if len(batch) == 1 else np.concatenate([job.z for job in batch])
        try:
            x = await asyncio.to_thread(self._decode_fn, z)
        except (Exception, asyncio.CancelledError) as exc:
            # Hand the failure to every waiting request; on cancellation
            # (shutdown) tell them so and stop the loop.
            error = ShuttingDown("server is shutting down") if isinstance(
                exc, asyncio.CancelledError) else exc
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        start = 0
        for job in batch:
            stop = start + len(job.z)
            if not job.future.done():
                job.future.set_result(x[start:stop])
            start = stop
        if self._on_batch is not None:
            self._on_batch(len(z), len(batch))
