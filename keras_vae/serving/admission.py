"""Admission control: a bounded queue per class of work, and 503 with Retry-After beyond it.

Two classes of work share the server, each with its own queue and its own threads,
so that the expensive one cannot starve the cheap one:

* ``sample``: decoder work, ``/v1/generate``, ``/v1/decode`` and KServe ``infer``
  (the micro-batcher's one worker, or a host's ``decode_fn``);
* ``score``: encoder and likelihood work, ``/v1/score``, ``/v1/encode`` and
  ``/v1/reconstruct``'s encoding (a thread pool of ``score_concurrency`` threads).

A class's queue holds the expected milliseconds of the requests it has admitted and
not yet finished (waiting or running). A request's cost is its rows of work (latent
rows; images; images x K importance samples) times a running average of measured
milliseconds per row for its kind of work (``decode``, ``encode``, ``score``). A
request is admitted if the queue plus its cost stays within ``max_queue_ms``, or
if the queue is empty (a request larger than the whole bound runs alone, and counts
as filling the queue);
otherwise the answer is ``503`` with ``Retry-After`` and ``{"error": "..."}``.
``AdmissionMiddleware`` refuses a full class before the body is parsed, so that
shed requests cost the event loop almost nothing.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from keras_vae.core.likelihood import onnx_log_likelihood
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.errors import APIError, error_response
from keras_vae.serving.metrics import Metrics, route_template
from keras_vae.serving.sampler import Sampler

__all__ = ["Admission", "AdmissionMiddleware", "Overloaded", "WORK_CLASSES", "work_class_of",
           "overloaded_response", "install_overload_handler"]

T = TypeVar("T")

WORK_CLASSES = ("sample", "score")
#: path -> (work class, route template) for the routes that queue model work
_ROUTES = {"/v1/generate": "sample", "/v1/decode": "sample", "/v1/score": "score",
           "/v1/encode": "score", "/v1/reconstruct": "score"}
_SMOOTHING = 0.3  # weight of the newest measurement in the running averages


def work_class_of(path: str) -> tuple[str, str] | None:
    """``(work class, route template)`` of a request path, or None for routes without model work."""
    if path in _ROUTES:
        return _ROUTES[path], path
    parts = path.split("/")  # /v2/models/{name}[/versions/{version}]/infer
    if path.startswith("/v2/models/") and parts[-1] == "infer" and len(parts) in (5, 7):
        return "sample", ("/v2/models/{name}/infer" if len(parts) == 5
                          else "/v2/models/{name}/versions/{version}/infer")
    return None


class Overloaded(APIError):
    """A work class's queue is full: answered with 503, ``Retry-After`` and ``{"error"}``."""

    def __init__(self, work_class: str, queued_ms: float, limit_ms: float) -> None:
        self.work_class = work_class
        self.retry_after_s = max(1, math.ceil(queued_ms / 1000))
        super().__init__(503, f"server overloaded: the {work_class} queue holds {queued_ms:.0f} ms "
                              f"of work (limit {limit_ms:g} ms); retry after "
                              f"{self.retry_after_s} s")


def overloaded_response(exc: Overloaded) -> JSONResponse:
    """The 503 answer: ``{"error": ...}`` with ``Retry-After`` in whole seconds."""
    return error_response(503, exc.message, headers={"Retry-After": str(exc.retry_after_s)})


class _CostModel:
    """Running averages of measured milliseconds and rows per call, per kind of work."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._averages: dict[str, tuple[float, float]] = {}  # kind -> (ms per call, rows per call)

    def record(self, kind: str, rows: int, seconds: float) -> None:
        ms = seconds * 1000
        with self._lock:
            old = self._averages.get(kind)
            self._averages[kind] = (ms, rows) if old is None else (
                old[0] + _SMOOTHING * (ms - old[0]), old[1] + _SMOOTHING * (rows - old[1]))

    def ms_per_row(self, kind: str) -> float:
        """The average for ``kind``, else that of ``decode`` (the warm-up measures it), else 0."""
        average = self._averages.get(kind) or self._averages.get("decode")
        return average[0] / max(average[1], 1e-9) if average else 0.0


class _Queue:
    """One work class: the expected milliseconds admitted and not finished, and their bound.

    ``pending`` counts requests let in by ``AdmissionMiddleware`` whose bodies are still
    being parsed; each is expected to cost ``typical_ms`` (a running average of admitted
    costs), so that a burst is refused before parsing rather than after it.
    """

    def __init__(self, name: str, max_queue_ms: float, metrics: Metrics) -> None:
        self.name = name
        self.max_queue_ms = max_queue_ms
        self.queued_ms = 0.0
        self.peak_ms = 0.0
        self.pending = 0
        self.typical_ms = 0.0
        self._depth = metrics.queue_ms.labels(name)
        self._peak = metrics.queue_peak_ms.labels(name)
        metrics.queue_limit_ms.labels(name).set(max_queue_ms)

    def expected_ms(self) -> float:
        """Admitted work plus the expected cost of the requests still being parsed."""
        return self.queued_ms + self.pending * self.typical_ms

    def full(self) -> bool:
        return (self.queued_ms > 0 or self.pending > 0) and self.expected_ms() >= self.max_queue_ms

    def refusal(self) -> Overloaded:
        return Overloaded(self.name, self.expected_ms(), self.max_queue_ms)

    def add(self, cost_ms: float) -> float:
        """Admit ``cost_ms`` of work, or raise ``Overloaded``; returns the milliseconds counted.

        A request larger than the whole bound enters only an empty queue, and counts
        as filling it, so the depth never passes the bound.
        """
        if self.queued_ms > 0 and self.queued_ms + cost_ms > self.max_queue_ms:
            raise self.refusal()
        cost_ms = min(cost_ms, self.max_queue_ms)
        self.typical_ms += _SMOOTHING * (cost_ms - self.typical_ms) if self.typical_ms else cost_ms
        self.queued_ms += cost_ms
        self._depth.set(self.queued_ms)
        if self.queued_ms > self.peak_ms:
            self.peak_ms = self.queued_ms
            self._peak.set(self.peak_ms)
        return cost_ms

    def remove(self, cost_ms: float) -> None:
        self.queued_ms = max(0.0, self.queued_ms - cost_ms)
        self._depth.set(self.queued_ms)


class Admission:
    """The bounded queues of one app, its cost estimates and the score class's threads.

    Args:
        max_queue_ms: bound of each class's queue, in expected milliseconds of work
            (``inf``: no bound, nothing is refused).
        score_concurrency: threads that run score, encode and reconstruct work at once.
        metrics: the app's metrics (queue depth gauges, shed counter).
    """

    def __init__(self, max_queue_ms: float, score_concurrency: int, metrics: Metrics) -> None:
        self.metrics = metrics
        self.costs = _CostModel()
        self.queues = {name: _Queue(name, max_queue_ms, metrics) for name in WORK_CLASSES}
        self._score_pool = ThreadPoolExecutor(score_concurrency, thread_name_prefix="vae-score")

    def timed(self, kind: str, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn(x, ...)`` that records its duration per row of ``x`` under ``kind``."""
        def run(x, *args: Any) -> T:
            start = time.perf_counter()
            result = fn(x, *args)
            self.costs.record(kind, len(x), time.perf_counter() - start)
            return result
        return run

    def warm_up(self, sampler: Sampler, encoder: Encoder | None, rows: int) -> None:
        """First cost estimates (blocking): time each kind of work once, after a first untimed call.

        ``decode`` on ``rows`` latent rows; with an encoder, ``encode`` on one image and
        ``score`` of one image with ``rows`` importance samples (overhead weighs more on
        such small calls, so these first estimates err on the expensive side).
        """
        z = np.zeros((rows, sampler.latent_dim), np.float32)
        work = [("decode", rows, sampler.decode, z)]
        if encoder is not None:
            x = np.zeros((1, *encoder.image_shape), np.float32)
            work += [("encode", 1, encoder.encode, x),
                     ("score", rows, onnx_log_likelihood, encoder, sampler, x, rows)]
        for kind, size, fn, *args in work:
            try:
                fn(*args)
                start = time.perf_counter()
                fn(*args)
            except ValueError:  # e.g. a decoder whose likelihood cannot be scored
                continue
            self.costs.record(kind, size, time.perf_counter() - start)

    @asynccontextmanager
    async def admit(self, work_class: str, kind: str, rows: int):
        """Hold ``rows`` of ``kind`` work in ``work_class``'s queue, or raise ``Overloaded``."""
        ticket = _TICKET.get()
        if ticket is not None:  # this request is parsed: no longer pending
            ticket.resolve()
        queue = self.queues[work_class]
        cost = queue.add(rows * self.costs.ms_per_row(kind))
        try:
            yield
        finally:
            queue.remove(cost)

    async def run_scoring(self, kind: str, rows: int, fn: Callable[..., T], *args: Any) -> T:
        """Admit ``rows`` of ``kind`` work to the score class and run ``fn(*args)`` in its threads.

        The measured time, divided by ``rows``, updates ``kind``'s cost per row.
        """
        async with self.admit("score", kind, rows):
            start = time.perf_counter()
            result = await asyncio.get_running_loop().run_in_executor(self._score_pool, fn, *args)
            self.costs.record(kind, rows, time.perf_counter() - start)
            return result

    def close(self) -> None:
        self._score_pool.shutdown(wait=False, cancel_futures=True)


class _Ticket:
    """A request let in by ``AdmissionMiddleware``, pending in ``queue`` until admitted or done."""

    def __init__(self, queue: _Queue) -> None:
        self.queue: _Queue | None = queue
        queue.pending += 1

    def resolve(self) -> None:
        if self.queue is not None:
            self.queue.pending -= 1
            self.queue = None


_TICKET: ContextVar[_Ticket | None] = ContextVar("keras_vae_admission_ticket", default=None)


class AdmissionMiddleware:
    """Refuse a request whose work class is full before its body is parsed (plain ASGI)."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = work_class_of(scope.get("path", "")) if (
            scope["type"] == "http" and scope.get("method") == "POST") else None
        queue = self.admission.queues[found[0]] if found else None
        if queue is None:
            await self.app(scope, receive, send)
            return
        if queue.full():
            self.admission.metrics.shed.labels(queue.name, found[1]).inc()
            await overloaded_response(queue.refusal())(scope, receive, send)
            return
        ticket = _Ticket(queue)
        token = _TICKET.set(ticket)
        try:
            await self.app(scope, receive, send)
        finally:
            ticket.resolve()
            _TICKET.reset(token)


def install_overload_handler(app: FastAPI, metrics: Metrics) -> None:
    """Answer ``Overloaded`` with ``overloaded_response`` and count it by class and route."""
    async def handler(request: Request, exc: Overloaded) -> JSONResponse:
        metrics.shed.labels(exc.work_class, route_template(request.scope)).inc()
        return overloaded_response(exc)
    app.add_exception_handler(Overloaded, handler)
