"""Per-provider statistics: a private mutable recorder and the public frozen snapshot."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import TYPE_CHECKING, Literal

import msgspec

from ._circuit import CircuitState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._models import Usage

__all__ = ["BalancerTotals", "ProviderHealth", "ProviderStats", "StatsRecorder", "percentile"]

LATENCY_WINDOW = 1024


class ProviderStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one provider's statistics (an attempt is one try at this provider).

    ``total_requests == successful_requests + failed_requests`` always holds;
    cancelled attempts count as failed and also in ``cancelled_requests``.
    Times are milliseconds unless the name says otherwise.
    """

    name: str
    protocol: str
    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    cancelled_requests: int = 0
    retries: int = 0
    """Attempts here that were retries of a request that had failed elsewhere or here."""
    average_response_time: float = 0.0
    """Mean latency of successful attempts, ms."""
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    is_healthy: bool = True
    in_rotation: bool = True
    last_request_time: float | None = None
    """Wall-clock time (``time.time()``) of the last finished attempt."""
    in_flight: int = 0
    queued: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    circuit_state: CircuitState = "closed"
    consecutive_failures: int = 0
    restarts: int = 0
    last_error: str | None = None
    out_of_rotation_reason: str | None = None
    streams_started: int = 0
    streams_completed: int = 0
    streams_failed: int = 0
    average_ttft_ms: float = 0.0
    """Mean time to first token of streams, ms."""
    rpm: int | None = None
    """Configured budgets (`ProviderConfig.rpm`, ``tpm``, ``rpd``, ``tpd``)."""
    tpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None
    learned_rpm: int | None = None
    """Limits the provider's rate-limit headers reported (the stricter one applies)."""
    learned_tpm: int | None = None
    remaining_requests: int | None = None
    """Requests its budgets admit now (``None``: nothing limits them)."""
    remaining_tokens: int | None = None
    """Tokens its budgets admit now (``None``: nothing limits them)."""
    refill_in: float = 0.0
    """Seconds until it admits a request again (0: now; ``inf``: after an answer)."""
    quota_reason: str | None = None
    """The budget behind a non-zero ``refill_in`` (``"rpm"``, ``"retry-after"``...)."""
    throttled: int = 0
    """Attempts here that had waited for budget before they were sent."""
    rate_limited: int = 0
    """Upstream 429 answers from this provider."""


class ProviderHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One provider's health as `Balancer.health_report` found it by probing it now."""

    name: str
    status: Literal["up", "down"]
    reason: str | None = None
    """Why it is down, in words: ``HTTP 401: <the provider's message>``, ``no answer
    within 10s (health_check_timeout)``, the connection or TLS failure, or ``out of
    rotation: ...`` (not probed). Never a key."""
    http_status: int | None = None
    """The probe's HTTP status when the provider answered with an error."""
    kind: str | None = None
    """The failure's `LLMError.kind` (``http``, ``timeout``, ``connection``...)."""
    latency: float = 0.0
    """Seconds the probe took (0 when the provider was not probed)."""

    @property
    def healthy(self) -> bool:
        """What `Balancer.health_check` reports for it."""
        return self.status == "up"


class BalancerTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Whole-balancer counters: ``requests == succeeded + failed + in_flight``."""

    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    in_flight: int = 0
    retries: int = 0
    """Attempts after a request's first that went to a provider (fail-overs included),
    counted when each one's outcome is in; a fail-over with nobody left to ask (every
    provider refused) is not one."""
    rerouted: int = 0
    quota_waits: int = 0
    """Requests that reached the head of the dispatcher's queue and waited there for a
    budget (those queued behind one wait with it, and are not counted again)."""
    quota_wait_seconds: float = 0.0
    """Their waits at the head of the queue, summed."""
    rate_limited: int = 0
    """Requests refused at once with `RateLimitedError` (``on_overload="fail"`` or deadline)."""


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of an ascending sequence; 0 when empty.

    The one definition behind `ProviderStats`, ``llmlb bench`` and the benchmarks, so
    that they agree on the same data: the smallest value with at least ``q`` of the
    samples at or below it (always an observed value, never an interpolation).
    """
    if not ordered:
        return 0.0
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


class StatsRecorder:
    """Mutable counters owned by one provider actor. Strictly private."""

    __slots__ = (
        "cancelled",
        "completion_tokens",
        "failed",
        "last_error",
        "last_request_time",
        "latencies",
        "latency_sum",
        "prompt_tokens",
        "rate_limited",
        "retries",
        "streams_completed",
        "streams_failed",
        "streams_started",
        "successful",
        "throttled",
        "total",
        "total_tokens",
        "ttft_count",
        "ttft_sum",
    )

    def __init__(self) -> None:
        self.total = 0
        self.successful = 0
        self.failed = 0
        self.cancelled = 0
        self.retries = 0
        self.latency_sum = 0.0
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.last_request_time: float | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_tokens = 0
        self.last_error: str | None = None
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_failed = 0
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.throttled = 0
        self.rate_limited = 0

    def success(self, seconds: float, usage: Usage | None, *, retry: bool) -> None:
        self.total += 1
        self.successful += 1
        self.retries += retry
        ms = seconds * 1000.0
        self.latency_sum += ms
        self.latencies.append(ms)
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.total_tokens += usage.total_tokens
        self.last_request_time = time.time()

    def failure(self, error: str, *, retry: bool, cancelled: bool = False) -> None:
        self.total += 1
        self.failed += 1
        self.retries += retry
        self.cancelled += cancelled
        if not cancelled:
            self.last_error = error
        self.last_request_time = time.time()

    def first_token(self, seconds: float) -> None:
        self.streams_started += 1
        self.ttft_sum += seconds * 1000.0
        self.ttft_count += 1

    @property
    def average_ms(self) -> float:
        return self.latency_sum / self.successful if self.successful else 0.0

    def percentiles(self) -> tuple[float, float, float]:
        ordered = sorted(self.latencies)
        return (
            percentile(ordered, 0.50),
            percentile(ordered, 0.95),
            percentile(ordered, 0.99),
        )

    @property
    def average_ttft_ms(self) -> float:
        return self.ttft_sum / self.ttft_count if self.ttft_count else 0.0
