"""Retry and hedge budgets: spending capped by a fraction of recent requests, plus a floor.

A `WindowBudget` is Finagle's ``RetryBudget`` (a token bucket whose deposits and
withdrawals expire after a window): every request deposits ``ratio`` of a token,
every retry (or hedge) withdraws one, and both count only while they are younger
than ``window`` seconds. A floor of ``floor_per_second x window`` tokens is always
there, so a client that sends few requests can still retry a few. So at any moment

    spends in the last window <= floor_per_second * window + ratio * requests in it

and over a long run spends stay within ``ratio`` of the requests plus the floor's
rate. When every provider fails at once, retries therefore add at most ``ratio``
(plus the floor) to the load instead of multiplying it by ``max_retries + 1``.

Time is cut into buckets of ``granularity`` seconds; the window is the current
bucket and the ones before it, ``window / granularity`` in all. Pure: every method
takes ``now`` from the caller.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["RETRY_FLOOR_PER_SECOND", "WINDOW", "WindowBudget"]

#: The window of both budgets, seconds (Finagle's default ``ttl``).
WINDOW = 10.0
#: Retries always allowed per second of the window, whatever the request rate (Finagle's
#: ``minRetriesPerSec``): 100 retries per 10 s window.
RETRY_FLOOR_PER_SECOND = 10.0

# Floating-point slack: 0.05 x 20 deposits must buy exactly one token.
_EPSILON = 1e-9


class WindowBudget:
    """Spending limited to ``ratio`` of the deposits of the last ``window`` seconds, plus a floor.

    Strictly private; `spent` and `refused` are running totals for stats.
    """

    __slots__ = ("_buckets", "_count", "_granularity", "ratio", "refused", "reserve", "spent")

    def __init__(
        self,
        ratio: float,
        *,
        floor_per_second: float = 0.0,
        window: float = WINDOW,
        granularity: float = 1.0,
    ) -> None:
        if not ratio > 0 or not math.isfinite(ratio):
            raise ValueError(f"ratio must be a finite number > 0, got {ratio!r}")
        if not granularity > 0 or not window >= granularity:
            raise ValueError("need 0 < granularity <= window")
        self.ratio = ratio
        self.reserve = floor_per_second * window
        self._granularity = granularity
        self._count = max(1, round(window / granularity))
        # [bucket index, deposits, spends], oldest first; only buckets inside the window.
        self._buckets: deque[list[int]] = deque()
        self.spent = 0
        self.refused = 0

    def _current(self, now: float) -> list[int]:
        index = math.floor(now / self._granularity)
        buckets = self._buckets
        oldest = index - self._count
        while buckets and buckets[0][0] <= oldest:
            buckets.popleft()
        if buckets and buckets[-1][0] >= index:
            return buckets[-1]  # a clock never runs backwards; an equal index is this bucket
        bucket = [index, 0, 0]
        buckets.append(bucket)
        return bucket

    def deposit(self, now: float, count: int = 1) -> None:
        """``count`` requests were made at ``now``."""
        self._current(now)[1] += count

    def balance(self, now: float) -> float:
        """Tokens available at ``now`` (spending one needs at least 1)."""
        self._current(now)
        deposits = 0
        spends = 0
        for _, deposited, spent in self._buckets:
            deposits += deposited
            spends += spent
        return self.reserve + self.ratio * deposits - spends

    def try_spend(self, now: float) -> bool:
        """Take one token if there is one; False (and counted as refused) if not."""
        if self.balance(now) + _EPSILON >= 1.0:
            self._buckets[-1][2] += 1
            self.spent += 1
            return True
        self.refused += 1
        return False
