"""What one measurement is asked to do (`PointSpec`) and what it found (`PointResult`).

Both travel as JSON between the runner and the benchmark processes. The
closed-loop bookkeeping (`Recorder`) is shared by the trio and asyncio loops:
it only counts and never awaits, so it costs the same under both.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import msgspec

from llmlb_actors._stats import percentile as _percentile

from ._common import peak_rss_kib, proc_cpu_seconds
from ._upstream import Upstream

__all__ = ["PointResult", "PointSpec", "Recorder", "percentile"]


class PointSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One configuration at one concurrency, in one process."""

    config: str
    concurrency: int
    upstream: Upstream
    rep: int = 0
    warmup_s: float = 1.0
    """Run at least this long before measuring (connections opened, code warm)."""
    warmup_requests: int = 50
    """…and until this many requests (at most ``concurrency``) have completed."""
    measure_s: float = 3.0
    """Measuring window; it ends earlier once ``max_requests`` completed in it."""
    max_requests: int | None = None
    pin_core: int | None = None
    profile: str | None = None
    """``"pyinstrument:<path>"`` or ``"cprofile:<path>"``: profile the measuring window."""


class PointResult(msgspec.Struct, kw_only=True):
    config: str
    concurrency: int
    rep: int
    requests: int
    """Requests completed (successfully or not) inside the window."""
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float = 0.0
    """The slowest request in the window (bounds how far its edges can move ``littles_l``)."""
    cpu_us_per_req: float
    peak_rss_mib: float
    in_flight_mean: float
    """Requests in flight, sampled every 10 ms during the window."""
    littles_l: float
    """Throughput × mean latency: the concurrency the latencies imply (≈ C if C were really
    in flight all along). The requests that complete in the window include time from
    before it, so with C workers it is at most ``C × (1 + max_ms / 1000 / seconds)``."""
    upstream_cpu_pct: float
    """CPU the upstream used during the window, in % of one core (100 = saturated)."""
    upstream_connections: int | None = None
    first_error: str | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a sorted list: the library's definition."""
    return _percentile(sorted_values, q / 100.0)


class Recorder:
    """Closed-loop bookkeeping: warm-up, then one measuring window.

    Workers call `started` / `finished` around each request. Latency samples
    are kept only for requests that *complete* inside the window, and the
    window ends with the request that fills it (``max_requests``): how soon
    the loop gets round to stopping does not change what was measured.
    """

    def __init__(self, spec: PointSpec) -> None:
        self.spec = spec
        self.measuring = False
        self.completed = 0
        self.in_flight = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None
        self.ttfc: list[float] = []
        self.chunks = 0
        self._warm_target = min(spec.concurrency, spec.warmup_requests)
        self._max = spec.max_requests
        self.in_flight_samples: list[int] = []
        self.on_warm: Any = None  # set by the loop: called once the warm-up count is reached
        self.on_full: Any = None  # called once max_requests completed inside the window
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._up0 = 0.0
        self._t1 = 0.0
        self._cpu1 = 0.0
        self._up1 = 0.0
        self._upstream_conns: int | None = None
        self.probe: Any = None  # optional: () -> dict[str, float], sampled with in_flight
        self._probe_sums: dict[str, float] = {}
        self._probe_max: dict[str, float] = {}
        self._probe_n = 0
        self._closing = threading.Lock()  # the threaded loop may end the window from two threads

    def sample(self) -> None:
        """Called every 10 ms during the window by the loop's sampler task."""
        self.in_flight_samples.append(self.in_flight)
        if self.probe is not None:
            self._probe_n += 1
            for key, value in self.probe().items():
                self._probe_sums[key] = self._probe_sums.get(key, 0.0) + value
                self._probe_max[key] = max(self._probe_max.get(key, value), value)

    def started(self) -> None:
        self.in_flight += 1

    def finished(self, seconds: float, error: BaseException | None, stream: Any) -> None:
        self.in_flight -= 1
        self.completed += 1
        if self.completed == self._warm_target and self.on_warm is not None:
            self.on_warm()
        if not self.measuring:
            return
        self.latencies.append(seconds)
        if error is not None:
            self.errors += 1
            if self.first_error is None:
                self.first_error = f"{type(error).__name__}: {error}"[:300]
        if stream is not None:
            ttfc, chunks = stream
            if ttfc is not None:
                self.ttfc.append(ttfc)
            self.chunks += chunks
        if self._max is not None and len(self.latencies) >= self._max:
            self.end_window()
            if self.on_full is not None:
                self.on_full()

    def start_window(self) -> None:
        self._up0 = proc_cpu_seconds(self.spec.upstream.pids)
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()
        self.measuring = True

    def end_window(self) -> None:
        """End the window now, unless it has ended already (idempotent, thread-safe)."""
        with self._closing:
            if not self.measuring:
                return
            self._cpu1 = time.process_time()
            self._t1 = time.perf_counter()
            self.measuring = False
            self._up1 = proc_cpu_seconds(self.spec.upstream.pids)
            if self.spec.upstream.status_port is not None:
                from ._upstream import stub_status

                self._upstream_conns = stub_status(self.spec.upstream.status_port)

    def result(self, extra: dict[str, Any] | None = None) -> PointResult:
        spec = self.spec
        seconds = self._t1 - self._t0
        n = len(self.latencies)
        lat = sorted(self.latencies)
        mean = sum(lat) / n if n else 0.0
        rps = n / seconds if seconds > 0 else 0.0
        samples = self.in_flight_samples
        extra = dict(extra or {})
        if self.ttfc:
            ttfc = sorted(self.ttfc)
            extra["ttfc_p50_ms"] = percentile(ttfc, 50) * 1000
            extra["ttfc_p99_ms"] = percentile(ttfc, 99) * 1000
            extra["chunks_per_s"] = self.chunks / seconds if seconds > 0 else 0.0
            extra["chunks"] = self.chunks
        for key, total in self._probe_sums.items():
            extra[f"{key}_mean"] = total / self._probe_n
            extra[f"{key}_max"] = self._probe_max[key]
        return PointResult(
            config=spec.config,
            concurrency=spec.concurrency,
            rep=spec.rep,
            requests=n,
            errors=self.errors,
            seconds=seconds,
            rps=rps,
            p50_ms=percentile(lat, 50) * 1000,
            p99_ms=percentile(lat, 99) * 1000,
            mean_ms=mean * 1000,
            max_ms=lat[-1] * 1000 if lat else 0.0,
            cpu_us_per_req=(self._cpu1 - self._cpu0) / n * 1e6 if n else 0.0,
            peak_rss_mib=peak_rss_kib() / 1024,
            in_flight_mean=sum(samples) / len(samples) if samples else float(spec.concurrency),
            littles_l=rps * mean,
            upstream_cpu_pct=(self._up1 - self._up0) / seconds * 100 if seconds > 0 else 0.0,
            upstream_connections=self._upstream_conns,
            first_error=self.first_error,
            extra={**extra, "pid": os.getpid()},
        )
