"""Admission control: a bounded queue per class of work, and 503 with Retry-After beyond it.

Two classes of work share the server, each with its own queue and its own threads,
so that the expensive one cannot starve the cheap one:

* ``sample``: decoder work, ``/v1/generate``, ``/v1/decode`` and KServe ``infer``
  (the micro-batcher's one worker, or a host's ``decode_fn``);
* ``score``: encoder and likelihood work, ``/v1/score``, ``/v1/encode`` and
  ``/v1/reconstruct``'s encoding (a thread pool of ``score_concurrency`` threads).

A class's queue holds the expected wall-clock milliseconds of the requests it has
admitted and not yet finished (waiting or running). A request's estimate is the cost of
its rows of work (latent rows; images; images x K importance samples) for its kind of
work (``decode``, ``encode``, ``score``), from a per-call overhead and a time per row
fitted online to the timed model calls; it counts as that estimate times its queue's
slowdown, learnt online from how fast the queue is served (``keras_vae.serving.work_queues``).
A request is admitted if the queue plus its cost stays within ``max_queue_ms``, or
if the queue is empty (a request larger than the whole bound runs alone, and counts
as filling the queue);
otherwise the answer is ``503`` with ``Retry-After`` and ``{"error": "..."}``.
``AdmissionMiddleware`` refuses a full class before the body is parsed, so that
shed requests cost the event loop almost nothing.
"""

from __future__ import annotations

import asyncio
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

from keras_vae.serving.likelihood import onnx_log_likelihood
from keras_vae.serving.encoder import Encoder
from keras_vae.serving.errors import error_response
from keras_vae.serving.metrics import Metrics, route_template
from keras_vae.serving.sampler import Sampler
from keras_vae.serving.work_queues import CostModel, Overloaded, WorkQueue

__all__ = ["Admission", "AdmissionMiddleware", "Overloaded", "WORK_CLASSES", "work_class_of",
           "overloaded_response", "install_overload_handler"]

T = TypeVar("T")

WORK_CLASSES = ("sample", "score")
#: path -> (work class, route template) for the routes that queue model work
_ROUTES = {"/v1/generate": "sample", "/v1/decode": "sample", "/v1/score": "score",
           "/v1/encode": "score", "/v1/reconstruct": "score"}


def work_class_of(path: str) -> tuple[str, str] | None:
    """``(work class, route template)`` of a request path, or None for routes without model work."""
    if path in _ROUTES:
        return _ROUTES[path], path
    parts = path.split("/")  # /v2/models/{name}[/versions/{version}]/infer
    if path.startswith("/v2/models/") and parts[-1] == "infer" and len(parts) in (5, 7):
        return "sample", ("/v2/models/{name}/infer" if len(parts) == 5
                          else "/v2/models/{name}/versions/{version}/infer")
    return None


def overloaded_response(exc: Overloaded) -> JSONResponse:
    """The 503 answer: ``{"error": ...}`` with ``Retry-After`` in whole seconds."""
    return error_response(503, exc.message, headers={"Retry-After": str(exc.retry_after_s)})


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
        self.costs = CostModel()
        self.queues = {name: WorkQueue(name, max_queue_ms, metrics, self.costs)
                       for name in WORK_CLASSES}
        self.score_concurrency = score_concurrency
        self._score_pool: ThreadPoolExecutor | None = None  # made on first use, after close too

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

        Every model call afterwards refines them (``timed``, ``run_scoring``).

        ``decode`` on ``rows`` latent rows; with an encoder, ``encode`` on one image and
        ``score`` of one image with ``rows`` importance samples (overhead weighs more on
        such small calls, so these first estimates err on the expensive side).
        """
        z = np.zeros((rows, sampler.latent_dim), np.float32)
        labels = None if sampler.class_names is None else np.zeros(rows, np.int64)
        work = [("decode", rows, sampler.decode_rows, sampler.rows(z, labels))]
        if encoder is not None:
            x = np.zeros((1, *encoder.image_shape), np.float32)
            label = None if labels is None else labels[:1]
            work += [("encode", 1, encoder.encode, x, label),
                     ("score", rows, onnx_log_likelihood, encoder, sampler, x, rows, 100, None, 0,
                      label)]
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
        admitted = queue.add(kind, rows)
        try:
            yield
        finally:
            queue.remove(admitted)

    async def run_scoring(self, kind: str, rows: int, fn: Callable[..., T], *args: Any) -> T:
        """Admit ``rows`` of ``kind`` work to the score class and run ``fn(*args)`` in its threads.

        The time of the call itself (not its wait for a thread) updates ``kind``'s costs.
        """
        def run() -> T:
            start = time.perf_counter()
            result = fn(*args)
            self.costs.record(kind, rows, time.perf_counter() - start)
            return result

        async with self.admit("score", kind, rows):
            if self._score_pool is None:
                self._score_pool = ThreadPoolExecutor(self.score_concurrency,
                                                      thread_name_prefix="vae-score")
            return await asyncio.get_running_loop().run_in_executor(self._score_pool, run)

    def close(self) -> None:
        """Stop the score threads (at the app's shut-down)."""
        if self._score_pool is not None:
            self._score_pool.shutdown(wait=False, cancel_futures=True)
            self._score_pool = None


class _Ticket:
    """A request let in by ``AdmissionMiddleware``, pending in ``queue`` until admitted or done."""

    def __init__(self, queue: WorkQueue) -> None:
        self.queue: WorkQueue | None = queue
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
