"""Outlier ejection by success rate, growing ejection times, and the panic threshold.

Consecutive failures already open a provider's circuit (`_circuit`). This adds
Envoy-style *outlier detection* for the provider that fails often but not in a
row (one key answering 30 % 503s):

**The success-rate rule.** Envoy ejects a host whose success rate is below
``mean - 1.9 sigma`` of all hosts' rates, and only with at least 5 hosts of 100
requests each: with 2-4 providers the standard deviation of so few rates means
nothing. Here each provider is compared with **the others pooled**: it is an
outlier when, over the last `INTERVAL` seconds,

- it and the others each made at least `MIN_VOLUME` attempts,
- its success rate is at least `MIN_GAP` (10 points) below the others' pooled rate, and
- the gap is significant: a two-proportion z-test gives ``z >= Z_THRESHOLD`` (3.0).

This works from two providers up, needs no shape assumption about the others,
and does not eject a provider for one or two unlucky failures at low volume. When
every provider fails alike (an outage) no one is an outlier: the rates are equal.

**Ejection time** is `BASE_EJECTION` x the number of ejections, capped at
`MAX_EJECTION` (Envoy's defaults, 30 s and 300 s); one ejection is forgiven for
every `BASE_EJECTION` seconds spent back in rotation without one.

**Limits.** An ejection never leaves fewer than half the providers admissible
(so never the last one), and if fewer than half are admissible anyway (circuits
open, Retry-After pending), ejections are ignored: traffic spreads over the
ejected providers too rather than piling onto the survivors (Envoy's panic
threshold, 50 %).

Only failures that say something about the provider count (retryable errors and
refusals: 5xx, 429, timeouts, resets, bad answers, 401/403/404); a request's own
fault (400, 422), a cancellation and a hedge that lost are neither successes nor
failures. Pure: every function takes ``now`` and the counts from the caller.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BASE_EJECTION",
    "INTERVAL",
    "MAX_EJECTION",
    "MIN_GAP",
    "MIN_VOLUME",
    "Z_THRESHOLD",
    "Counts",
    "Ejection",
    "SuccessWindow",
    "ejection_allowed",
    "in_panic",
    "is_outlier",
]

INTERVAL: Final = 10.0
MIN_VOLUME: Final = 20
MIN_GAP: Final = 0.10
Z_THRESHOLD: Final = 3.0
BASE_EJECTION: Final = 30.0
MAX_EJECTION: Final = 300.0


class Counts(NamedTuple):
    successes: int
    failures: int

    @property
    def total(self) -> int:
        return self.successes + self.failures


def is_outlier(mine: Counts, others: Counts) -> bool:
    """Is a provider with ``mine`` an outlier against ``others`` pooled (see the module doc)?"""
    n_mine, n_others = mine.total, others.total
    if n_mine < MIN_VOLUME or n_others < MIN_VOLUME:
        return False
    rate_mine = mine.successes / n_mine
    rate_others = others.successes / n_others
    gap = rate_others - rate_mine
    if gap < MIN_GAP:
        return False
    pooled = (mine.successes + others.successes) / (n_mine + n_others)
    # gap > 0 means neither rate is 0 and 1 alike, so pooled is strictly inside (0, 1).
    spread = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_mine + 1.0 / n_others))
    return gap >= Z_THRESHOLD * spread


def in_panic(admissible: int, total: int) -> bool:
    """Fewer than half the providers admissible: ignore ejections."""
    return 2 * admissible < total


def ejection_allowed(admissible: int, total: int) -> bool:
    """May one of ``admissible`` providers (of ``total``) be ejected now?

    Only if at least half would stay admissible, which also keeps the last one in.
    """
    remaining = admissible - 1
    return remaining >= 1 and not in_panic(remaining, total)


class Ejection:
    """One provider's ejection state. Strictly private."""

    __slots__ = ("count", "ejections", "reason", "started", "until")

    def __init__(self) -> None:
        self.count = 0  # the multiplier of the next ejection time, minus one
        self.started = float("-inf")
        self.until = float("-inf")
        self.reason: str | None = None
        self.ejections = 0  # all ejections so far, for stats

    def active(self, now: float) -> bool:
        return now < self.until

    def eject(self, now: float, reason: str) -> float:
        """Eject from ``now``; returns the ejection time in seconds."""
        if self.count and now > self.until:
            self.count = max(0, self.count - int((now - self.until) // BASE_EJECTION))
        self.count += 1
        self.ejections += 1
        duration = min(MAX_EJECTION, BASE_EJECTION * self.count)
        self.started = now
        self.until = now + duration
        self.reason = f"{reason}; out for {duration:g} s"
        return duration


class SuccessWindow:
    """Per-provider success and failure counts over about the last `INTERVAL` seconds.

    Built from cumulative counters the caller already keeps, sampled only when a
    failure is recorded, so a success costs nothing here. A snapshot of every
    provider's counters (as they were just before that failure) is kept for each
    whole second in which a failure happened, and the window starts at the oldest
    snapshot younger than `INTERVAL`: while failures keep coming that is about
    `INTERVAL` ago; after a quiet spell it is the first failure of the new spell,
    so a long healthy past does not dilute a provider that just started failing.
    Strictly private.
    """

    __slots__ = ("_snapshots",)

    def __init__(self) -> None:
        self._snapshots: deque[tuple[float, dict[str, Counts]]] = deque()

    def on_failure(
        self, now: float, failing: str, totals: Mapping[str, Counts]
    ) -> dict[str, Counts]:
        """The window's counts, right after ``failing`` recorded one failure into ``totals``."""
        snapshots = self._snapshots
        if not snapshots or math.floor(snapshots[-1][0]) < math.floor(now):
            before = dict(totals)
            if failing in before:
                mine = before[failing]
                before[failing] = Counts(mine.successes, mine.failures - 1)
            snapshots.append((now, before))
        horizon = now - INTERVAL
        while snapshots[0][0] <= horizon:  # the one just taken (at ``now``) always stays
            snapshots.popleft()
        base = snapshots[0][1]
        window: dict[str, Counts] = {}
        for name, count in totals.items():
            start = base.get(name, Counts(0, 0))
            window[name] = Counts(
                count.successes - start.successes, count.failures - start.failures
            )
        return window

    def forget(self, name: str) -> None:
        """A provider was removed."""
        for _, snapshot in self._snapshots:
            snapshot.pop(name, None)
