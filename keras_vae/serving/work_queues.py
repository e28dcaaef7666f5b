"""The bounded queues of ``keras_vae.serving.admission``: cost estimates and one queue per class.

``CostModel`` keeps running averages of measured milliseconds and rows per call for each
kind of work; ``WorkQueue`` holds the expected milliseconds a work class has admitted and
not finished, refuses work beyond its bound with ``Overloaded`` and reports its depth
to the app's metrics.
"""

from __future__ import annotations

import math
import threading

from keras_vae.serving.errors import APIError
from keras_vae.serving.metrics import Metrics

__all__ = ["CostModel", "WorkQueue", "Overloaded", "SMOOTHING"]

SMOOTHING = 0.3  # weight of the newest measurement in the running averages


class Overloaded(APIError):
    """A work class's queue is full: answered with 503, ``Retry-After`` and ``{"error"}``."""

    def __init__(self, work_class: str, queued_ms: float, limit_ms: float) -> None:
        self.work_class = work_class
        self.retry_after_s = max(1, math.ceil(queued_ms / 1000))
        super().__init__(503, f"server overloaded: the {work_class} queue holds {queued_ms:.0f} ms "
                              f"of work (limit {limit_ms:g} ms); retry after "
                              f"{self.retry_after_s} s")


class CostModel:
    """Running averages of measured milliseconds and rows per call, per kind of work."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._averages: dict[str, tuple[float, float]] = {}  # kind -> (ms per call, rows per call)

    def record(self, kind: str, rows: int, seconds: float) -> None:
        ms = seconds * 1000
        with self._lock:
            old = self._averages.get(kind)
            self._averages[kind] = (ms, rows) if old is None else (
                old[0] + SMOOTHING * (ms - old[0]), old[1] + SMOOTHING * (rows - old[1]))

    def ms_per_row(self, kind: str) -> float:
        """The average for ``kind``, else that of ``decode`` (the warm-up measures it), else 0."""
        average = self._averages.get(kind) or self._averages.get("decode")
        return average[0] / max(average[1], 1e-9) if average else 0.0


class WorkQueue:
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
        self.typical_ms += SMOOTHING * (cost_ms - self.typical_ms) if self.typical_ms else cost_ms
        self.queued_ms += cost_ms
        self._depth.set(self.queued_ms)
        if self.queued_ms > self.peak_ms:
            self.peak_ms = self.queued_ms
            self._peak.set(self.peak_ms)
        return cost_ms

    def remove(self, cost_ms: float) -> None:
        self.queued_ms = max(0.0, self.queued_ms - cost_ms)
        self._depth.set(self.queued_ms)
