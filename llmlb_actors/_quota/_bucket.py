"""A continuously refilling token bucket with reserve, reconcile and refund."""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]

#: Tokens are integers; refill arithmetic is not. A level this close to a cost admits it,
#: so a wait computed as ``(cost - level) / rate`` never ends a hair short of the cost.
EPSILON = 1e-6


class TokenBucket:
    """``capacity`` units refilling ``capacity / period`` per second; pure, ``now`` from the caller.

    `take` happens only when `earliest` said the cost fits, so it never drives
    the level below zero; `reconcile` may (a reply longer than its reservation
    is charged after the fact), and the debt then delays later admissions
    until refill pays it back. ``full_at`` is when a provider said the bucket
    is full again (its reset header): the level jumps to capacity then, even
    with an unknown refill rate (``rate == 0``).
    """

    __slots__ = ("capacity", "full_at", "level", "rate", "updated")

    def __init__(self, capacity: float, now: float, *, period: float = 60.0) -> None:
        self.capacity = float(capacity)
        self.rate = self.capacity / period if period > 0 and math.isfinite(capacity) else 0.0
        self.level = self.capacity
        self.updated = now
        self.full_at = math.inf

    def refill(self, now: float) -> None:
        if now >= self.full_at:
            self.level = max(self.level, self.capacity)
            self.full_at = math.inf
        elif now > self.updated and self.rate > 0.0 and self.level < self.capacity:
            self.level = min(self.capacity, self.level + self.rate * (now - self.updated))
        if now > self.updated:
            self.updated = now

    def earliest(self, cost: float, now: float) -> float:
        """The first time ``>= now`` at which ``cost`` fits; ``inf`` if it never can."""
        if cost > self.capacity + EPSILON:
            return math.inf
        self.refill(now)
        missing = cost - self.level
        if missing <= EPSILON:
            return now
        by_rate = now + missing / self.rate if self.rate > 0.0 else math.inf
        return min(by_rate, self.full_at)

    def take(self, cost: float, now: float) -> None:
        self.refill(now)
        self.level -= cost

    def refund(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)

    def charge(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount

    def reconcile(self, reserved: float, used: float, now: float) -> None:
        """Give back what a reservation did not use, or charge what it used beyond it."""
        if used < reserved:
            self.refund(reserved - used, now)
        elif used > reserved:
            self.charge(used - reserved, now)

    def observe(self, remaining: float | None, reset_at: float | None, now: float) -> None:
        """Fold in a provider's own count: the lower level wins; a reset says when it is full."""
        self.refill(now)
        if remaining is not None and remaining < self.level:
            self.level = remaining
        if reset_at is not None and self.level < self.capacity:
            self.full_at = max(now, reset_at)

    def resize(self, capacity: float, now: float, *, period: float = 60.0) -> None:
        self.refill(now)
        self.capacity = float(capacity)
        self.rate = self.capacity / period if period > 0 else 0.0
        self.level = min(self.level, self.capacity)

    def remaining(self, now: float) -> float:
        self.refill(now)
        return self.level

    def time_to_full(self, now: float) -> float:
        self.refill(now)
        if self.level >= self.capacity:
            return 0.0
        by_rate = (self.capacity - self.level) / self.rate if self.rate > 0.0 else math.inf
        return min(by_rate, self.full_at - now)
