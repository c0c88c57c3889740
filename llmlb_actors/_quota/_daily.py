"""A rolling 24-hour budget counted in one-minute slots."""

from __future__ import annotations

import math
from collections import deque

__all__ = ["DailyBudget"]

DAY = 86_400.0


class DailyBudget:
    """At most ``limit`` units in any rolling ``day``; pure, ``now`` from the caller.

    Usage is counted per ``slot`` (60 s: at most 1,441 slots, whatever the
    traffic), and a slot leaves the window ``day`` seconds after the slot
    *ends*, so the count never under-estimates the real rolling sum. A rolling
    window is also safe for providers whose day is a calendar day: no calendar
    day can hold more than any 24 hours around it.
    """

    __slots__ = ("_slots", "day", "limit", "slot", "used")

    def __init__(self, limit: float, *, day: float = DAY, slot: float = 60.0) -> None:
        self.limit = float(limit)
        self.day = day
        self.slot = slot
        self.used = 0.0
        self._slots: deque[list[float]] = deque()  # [slot index, amount]

    def _expiry(self, index: float) -> float:
        return (index + 1.0) * self.slot + self.day

    def _prune(self, now: float) -> None:
        slots = self._slots
        while slots and self._expiry(slots[0][0]) <= now:
            self.used -= slots.popleft()[1]
        if not slots:
            self.used = 0.0  # no float drift survives an empty window

    def index(self, now: float) -> float:
        return math.floor(now / self.slot)

    def remaining(self, now: float) -> float:
        self._prune(now)
        return self.limit - self.used

    def earliest(self, amount: float, now: float) -> float:
        """The first time ``>= now`` at which ``amount`` more fits; ``inf`` if it never can."""
        if amount > self.limit:
            return math.inf
        self._prune(now)
        excess = self.used + amount - self.limit
        if excess <= 0:
            return now
        for index, used in self._slots:
            excess -= used
            if excess <= 0:
                return max(now, self._expiry(index))
        return math.inf  # unreachable while amount <= limit

    def take(self, amount: float, now: float) -> float:
        """Count ``amount`` now; returns the slot it went to (for `adjust`)."""
        self._prune(now)
        index = self.index(now)
        slots = self._slots
        if slots and slots[-1][0] == index:
            slots[-1][1] += amount
        else:
            slots.append([index, amount])
        self.used += amount
        return index

    def adjust(self, index: float, delta: float, now: float) -> None:
        """Correct an earlier `take` by ``delta`` (negative: a refund), in its own slot if it
        is still in the window, else in the current one (a charge) or nowhere (a refund)."""
        self._prune(now)
        for entry in self._slots:
            if entry[0] == index:
                old = entry[1]
                entry[1] = max(0.0, old + delta)
                self.used += entry[1] - old
                return
        if delta > 0:
            self.take(delta, now)

    def full_at(self, now: float) -> float:
        self._prune(now)
        return self._expiry(self._slots[-1][0]) if self._slots else now
