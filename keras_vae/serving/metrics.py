"""Prometheus metrics for the server, in a per-app ``CollectorRegistry``.

Each app gets its own registry, so several apps can live in one process
(as in tests) without name clashes. Exposed series:

* ``vae_http_requests_total{route, method, status}`` - requests answered,
* ``vae_http_request_duration_seconds{route}`` - latency histogram (seconds),
* ``vae_images_generated_total`` - images returned to clients,
* ``vae_inference_batch_rows`` / ``vae_inference_batch_requests`` - rows and
  requests per onnxruntime call (shows how well micro-batching merges work),
* ``vae_shed_requests_total{work_class, route}`` - requests refused with 503
  because their work class's queue was full (``keras_vae.serving.admission``),
* ``vae_queue_depth_ms{work_class}``, ``vae_queue_peak_ms{work_class}`` and
  ``vae_queue_limit_ms{work_class}`` - the expected milliseconds of work admitted
  and not finished, its highest value so far, and its bound.

``route`` is the route template (e.g. ``/v2/models/{name}/infer``), or
``unmatched`` for unknown paths, so label cardinality stays bounded.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware", "route_template"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The metric objects of one app and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vae_http_requests", "HTTP requests answered, by route, method and status code.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "vae_http_request_duration_seconds", "HTTP request latency in seconds, by route.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.images = Counter(
            "vae_images_generated", "Images decoded and returned to clients.",
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "vae_inference_batch_rows", "Latent rows per onnxruntime call.",
            buckets=_ROW_BUCKETS, registry=self.registry,
        )
        self.batch_requests = Histogram(
            "vae_inference_batch_requests", "Requests merged into one onnxruntime call.",
            buckets=_ROW_BUCKETS, registry=self.registry,
        )
        self.shed = Counter(
            "vae_shed_requests", "Requests refused with 503 because their work class's queue "
            "was full, by work class and route.", ["work_class", "route"], registry=self.registry,
        )
        self.queue_ms = Gauge(
            "vae_queue_depth_ms", "Expected milliseconds of work admitted and not yet finished, "
            "by work class.", ["work_class"], registry=self.registry,
        )
        self.queue_peak_ms = Gauge(
            "vae_queue_peak_ms", "Highest vae_queue_depth_ms so far, by work class.",
            ["work_class"], registry=self.registry,
        )
        self.queue_limit_ms = Gauge(
            "vae_queue_limit_ms", "Bound of vae_queue_depth_ms, by work class.", ["work_class"],
            registry=self.registry,
        )

    def observe_batch(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_template(scope: Scope) -> str:
    """The template of the route that answered (or would answer) the request, else "unmatched"."""
    route = scope.get("route")  # set by the router once it has routed the request
    if route is None:  # refused before routing (e.g. by the body limit): match it here
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, child_scope = candidate.matches(scope)
            if match != Match.NONE:
                route = child_scope.get("route", candidate)
                break
    return getattr(route, "path", None) or "unmatched"


class MetricsMiddleware:
    """Plain ASGI middleware counting every HTTP request and timing it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app fails before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = route_template(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
