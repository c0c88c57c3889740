"""A simulated provider's own rate limiter: the quotas a real API enforces, exactly.

======== ===========================================================================
quota    rule
======== ===========================================================================
rpm      at most ``ceil(rpm / 60)`` requests in any rolling 1-second window, as
         Azure enforces RPM (a request at ``t`` is refused when ``ceil(rpm / 60)``
         others arrived in ``(t - 1, t]``). The headers report a per-minute bucket
         (capacity ``rpm``, refilling ``rpm / 60`` per second), as OpenAI's do.
tpm      a bucket of ``tpm`` tokens refilling ``tpm / 60`` per second; a request is
         charged its prompt plus its reply (both counted in words, as the
         simulator's usage is) when it arrives, and refused if the bucket lacks that
rpd      at most ``rpd`` requests per day; the day starts with the first request
======== ===========================================================================

Deliberately independent of the balancer's own budget code (``llmlb_actors._quota``):
a test of the balancer against the simulator must not share the arithmetic it checks.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

__all__ = ["DAY", "QuotaState", "Refusal", "SimQuota"]

DAY = 86_400.0


class Refusal(NamedTuple):
    """Why a request was refused and how long until it would be admitted."""

    kind: str  # "requests", "tokens" or "day"
    wait: float
    limit: int
    requested: int


class QuotaState(NamedTuple):
    """What the rate-limit headers report at one moment (``None``: no such quota)."""

    rpm: int | None
    remaining_requests: int
    reset_requests: float
    tpm: int | None
    remaining_tokens: int
    reset_tokens: float
    rpd: int | None
    remaining_day: int
    reset_day: float


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / 60.0
        self.level = float(capacity)
        self.updated = now

    def refill(self, now: float) -> float:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now
        return self.level

    def wait_for(self, amount: float, now: float) -> float:
        missing = amount - self.refill(now)
        return 0.0 if missing <= 0 else missing / self.rate

    def to_full(self, now: float) -> float:
        return (self.capacity - self.refill(now)) / self.rate


class SimQuota:
    """The quotas of one simulated provider; ``now`` is the server's trio clock."""

    def __init__(self, rpm: int | None, tpm: int | None, rpd: int | None, now: float) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.rpd = rpd
        self.per_second = None if rpm is None else math.ceil(rpm / 60)
        self._arrivals: deque[float] = deque()
        self._requests = None if rpm is None else _Bucket(rpm, now)
        self._tokens = None if tpm is None else _Bucket(tpm, now)
        self._day_start: float | None = None
        self._day_count = 0

    def _window_wait(self, now: float) -> float:
        arrivals = self._arrivals
        while arrivals and arrivals[0] + 1.0 <= now:
            arrivals.popleft()
        assert self.per_second is not None
        excess = len(arrivals) - self.per_second
        return 0.0 if excess < 0 else arrivals[excess] + 1.0 - now

    def _day_wait(self, now: float) -> float:
        if self._day_start is not None and now >= self._day_start + DAY:
            self._day_start = None
            self._day_count = 0
        assert self.rpd is not None
        if self._day_count < self.rpd or self._day_start is None:
            return 0.0
        return self._day_start + DAY - now

    def admit(self, tokens: int, now: float) -> Refusal | None:
        """Count a request of ``tokens`` now, or say why it is refused (then nothing is counted)."""
        if self.per_second is not None:
            wait = self._window_wait(now)
            if wait > 0:
                assert self.rpm is not None
                return Refusal("requests", wait, self.rpm, 1)
        if self._tokens is not None and self.tpm is not None:
            if tokens > self.tpm:
                return Refusal("tokens", 60.0, self.tpm, tokens)
            wait = self._tokens.wait_for(tokens, now)
            if wait > 0:
                return Refusal("tokens", wait, self.tpm, tokens)
        if self.rpd is not None:
            wait = self._day_wait(now)
            if wait > 0:
                return Refusal("day", wait, self.rpd, 1)
        if self.per_second is not None:
            self._arrivals.append(now)
        if self._requests is not None:
            self._requests.refill(now)
            self._requests.level = max(0.0, self._requests.level - 1)
        if self._tokens is not None:
            self._tokens.refill(now)
            self._tokens.level -= tokens
        if self.rpd is not None:
            if self._day_start is None:
                self._day_start = now
            self._day_count += 1
        return None

    def state(self, now: float) -> QuotaState:
        requests, tokens = self._requests, self._tokens
        day_left = 0
        day_reset = 0.0
        if self.rpd is not None:
            self._day_wait(now)
            day_left = self.rpd - self._day_count
            day_reset = 0.0 if self._day_start is None else self._day_start + DAY - now
        return QuotaState(
            rpm=self.rpm,
            remaining_requests=0 if requests is None else math.floor(requests.refill(now)),
            reset_requests=0.0 if requests is None else requests.to_full(now),
            tpm=self.tpm,
            remaining_tokens=0 if tokens is None else max(0, math.floor(tokens.refill(now))),
            reset_tokens=0.0 if tokens is None else tokens.to_full(now),
            rpd=self.rpd,
            remaining_day=day_left,
            reset_day=day_reset,
        )
