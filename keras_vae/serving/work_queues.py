"""The bounded queues of ``keras_vae.serving.admission``: cost estimates and one queue per class.

Both estimates are learnt online, from what the server observes as it serves, so that
shedding follows the machine as it is now (other processes on its cores included):

* ``CostModel`` fits, per kind of work, the milliseconds of one model call as a fixed
  overhead plus a time per row, by exponentially weighted least squares over the calls
  timed so far;
* ``WorkQueue`` learns its class's *slowdown*: the wall-clock milliseconds the queue takes
  to serve one estimated millisecond of work (HTTP, JSON, thread hand-offs and cores taken
  by others included), measured while the queue is backlogged. A request counts as its
  estimate times the slowdown, so the queue holds the expected wall-clock milliseconds of
  the requests admitted and not finished. It refuses work beyond its bound with
  ``Overloaded`` and reports its depth to the app's metrics.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from keras_vae.serving.errors import APIError
from keras_vae.serving.metrics import Metrics

__all__ = ["CostModel", "WorkQueue", "Admitted", "Overloaded", "SMOOTHING", "SLOWDOWN_MEMORY_S"]

SMOOTHING = 0.3  # decay of the cost fit and of the typical cost per timed call or admission
#: time constants of a queue's slowdown, in seconds: the larger of a quick and a steady estimate
SLOWDOWN_MEMORY_S = (0.1, 1.0)


class Overloaded(APIError):
    """A work class's queue is full: answered with 503, ``Retry-After`` and ``{"error"}``."""

    def __init__(self, work_class: str, queued_ms: float, limit_ms: float) -> None:
        self.work_class = work_class
        self.retry_after_s = max(1, math.ceil(queued_ms / 1000))
        super().__init__(503, f"server overloaded: the {work_class} queue holds {queued_ms:.0f} ms "
                              f"of work (limit {limit_ms:g} ms); retry after "
                              f"{self.retry_after_s} s")


class CostModel:
    """Milliseconds per model call, ``overhead + per_row * rows``, fitted online per kind of work.

    Each timed call (``rows``, ``t`` ms) updates exponentially weighted sums, the newest
    call with weight 1 and each older one decayed by ``1 - SMOOTHING``: ``n = Σw``,
    ``R = Σw·rows``, ``RR = Σw·rows²``, ``T = Σw·t``, ``RT = Σw·rows·t``. The weighted
    least-squares line, ``per_row = (n·RT − R·T) / (n·RR − R²)`` and
    ``overhead = (T − per_row·R) / n``, is the estimate when the calls differ in size and
    both numbers are >= 0; otherwise ``overhead = 0`` and ``per_row = T / R``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, list[float]] = {}  # kind -> [n, R, RR, T, RT]
        self._fits: dict[str, tuple[float, float]] = {}  # kind -> (overhead ms, ms per row)

    def record(self, kind: str, rows: int, seconds: float) -> None:
        """One timed call of ``kind`` on ``rows`` rows that took ``seconds`` (any thread)."""
        ms, keep = seconds * 1000, 1 - SMOOTHING
        with self._lock:
            n, r, rr, t, rt = (keep * s for s in self._sums.get(kind, [0.0] * 5))
            sums = [n + 1, r + rows, rr + rows * rows, t + ms, rt + rows * ms]
            self._sums[kind] = sums
            self._fits[kind] = _fit(*sums)

    def estimate(self, kind: str) -> tuple[float, float] | None:
        """``(overhead ms, ms per row)`` of ``kind``, else of ``decode`` (the warm-up times it)."""
        return self._fits.get(kind) or self._fits.get("decode")

    def cost_ms(self, kind: str, rows: int) -> float:
        """Expected milliseconds of one call of ``kind`` on ``rows`` rows (0 before any timing)."""
        fit = self.estimate(kind)
        return 0.0 if fit is None else fit[0] + fit[1] * rows


def _fit(n: float, r: float, rr: float, t: float, rt: float) -> tuple[float, float]:
    spread = n * rr - r * r  # n² times the weighted variance of the rows
    if spread > 1e-9 * n * rr:
        per_row = (n * rt - r * t) / spread
        overhead = (t - per_row * r) / n
        if per_row >= 0 and overhead >= 0:
            return overhead, per_row
    return 0.0, t / r if r > 0 else 0.0


@dataclass(frozen=True)
class Admitted:
    """One admitted request: its kind and rows of work, and the milliseconds its queue counts."""

    kind: str
    rows: float
    counted_ms: float


class WorkQueue:
    """One work class: the expected milliseconds admitted and not finished, and their bound.

    A request of ``rows`` rows of ``kind`` work counts ``slowdown(now)`` times its estimate
    ``costs.cost_ms(kind, rows)``. The slowdown is learnt from the requests released while
    the queue was backlogged (other requests still admitted at the previous release), so
    that it measures throughput, not the latency of a lone request: for each time constant
    τ of ``SLOWDOWN_MEMORY_S``, the wall-clock milliseconds between those releases over the
    estimates of the requests released, both summed with weights ``exp(-age / τ)``, the
    estimates at the cost model's current fit (so that its scale cancels out: only its
    shape, overhead against rows and kind against kind, weighs the requests). The slowdown
    is the larger of the two ratios: it rises within a fraction of a second when the server
    slows down, and falls back over a second or so when it speeds up.

    ``pending`` counts requests let in by ``AdmissionMiddleware`` whose bodies are still
    being parsed; each is expected to cost ``typical_ms`` (a running average of admitted
    costs), so that a burst is refused before parsing rather than after it.
    """

    def __init__(self, name: str, max_queue_ms: float, metrics: Metrics, costs: CostModel,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.name = name
        self.max_queue_ms = max_queue_ms
        self.costs = costs
        self.queued_ms = 0.0
        self.peak_ms = 0.0
        self.pending = 0
        self.typical_ms = 0.0
        self.active = 0  # requests admitted and not finished
        self._clock = clock
        # per τ: [weighted wall ms, {kind: [weighted requests, weighted rows]}]
        self._sums: list[list] = [[0.0, {}] for _ in SLOWDOWN_MEMORY_S]
        self._observed = 0.0  # the clock at the last observation
        self._mark = 0.0  # the clock at the last release, or when the queue last became busy
        self._backlogged = False  # whether requests were left admitted at _mark
        self._depth = metrics.queue_ms.labels(name)
        self._peak = metrics.queue_peak_ms.labels(name)
        metrics.queue_limit_ms.labels(name).set(max_queue_ms)

    def slowdown(self) -> float:
        """Wall-clock milliseconds per estimated millisecond (1 until the queue was backlogged)."""
        ratios = []
        for wall_ms, kinds in self._sums:
            fits = ((self.costs.estimate(kind), n, rows) for kind, (n, rows) in kinds.items())
            work_ms = sum(fit[0] * n + fit[1] * rows for fit, n, rows in fits if fit)
            if wall_ms <= 0 or work_ms <= 0:
                return 1.0
            ratios.append(wall_ms / work_ms)
        return max(ratios)

    def expected_ms(self) -> float:
        """Admitted work plus the expected cost of the requests still being parsed."""
        return self.queued_ms + self.pending * self.typical_ms

    def full(self) -> bool:
        return (self.queued_ms > 0 or self.pending > 0) and self.expected_ms() >= self.max_queue_ms

    def refusal(self) -> Overloaded:
        return Overloaded(self.name, self.expected_ms(), self.max_queue_ms)

    def add(self, kind: str, rows: float) -> Admitted:
        """Admit ``rows`` rows of ``kind`` work, or raise ``Overloaded``.

        A request larger than the whole bound enters only an empty queue, and counts as
        filling it, so the depth never passes the bound.
        """
        cost_ms = self.costs.cost_ms(kind, rows) * self.slowdown()
        if self.queued_ms > 0 and self.queued_ms + cost_ms > self.max_queue_ms:
            raise self.refusal()
        cost_ms = min(cost_ms, self.max_queue_ms)
        self.typical_ms += SMOOTHING * (cost_ms - self.typical_ms) if self.typical_ms else cost_ms
        if self.active == 0:
            self._mark, self._backlogged = self._clock(), False
        self.active += 1
        self._set_depth(self.queued_ms + cost_ms)
        return Admitted(kind, rows, cost_ms)

    def remove(self, admitted: Admitted) -> None:
        """Release a finished (or abandoned) request, and learn from its time when backlogged."""
        now = self._clock()
        if self._backlogged:
            self.observe(1000 * (now - self._mark), admitted.kind, admitted.rows, now)
        self.active -= 1
        self._mark, self._backlogged = now, self.active > 0
        self._set_depth(max(0.0, self.queued_ms - admitted.counted_ms) if self.active else 0.0)

    def observe(self, wall_ms: float, kind: str, rows: float, now: float) -> None:
        """``wall_ms`` of wall-clock time, up to ``now`` (the clock), served ``rows`` of ``kind``."""
        for sums, memory_s in zip(self._sums, SLOWDOWN_MEMORY_S):
            keep = math.exp(-(now - self._observed) / memory_s)
            sums[0] = keep * sums[0] + wall_ms
            for counts in sums[1].values():
                counts[:] = keep * counts[0], keep * counts[1]
            counts = sums[1].setdefault(kind, [0.0, 0.0])
            counts[:] = counts[0] + 1, counts[1] + rows
        self._observed = now

    def _set_depth(self, queued_ms: float) -> None:
        self.queued_ms = queued_ms
        self._depth.set(queued_ms)
        if queued_ms > self.peak_ms:
            self.peak_ms = queued_ms
            self._peak.set(queued_ms)
