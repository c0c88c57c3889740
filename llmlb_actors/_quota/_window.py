"""A rolling request window: at most ``cap`` events in any half-open window ``[t, t + period)``."""

from __future__ import annotations

import contextlib
from collections import deque

__all__ = ["RollingWindow", "move_last"]


def move_last(times: deque[float], old: float, now: float) -> None:
    """Replace one ``old`` entry of the ordered ``times`` by ``now`` (>= every entry)."""
    with contextlib.suppress(ValueError):  # else it had left: the event counts from now
        times.remove(old)
    times.append(now)


class RollingWindow:
    """Admission times of the last ``period`` seconds; pure, ``now`` comes from the caller.

    An event at ``now`` is admitted when fewer than ``cap`` earlier events lie in
    ``(now - period, now]``. Then no half-open window ``[t, t + period)`` ever
    holds more than ``cap`` events: if it held ``cap + 1``, the last of them saw
    the ``cap`` before it within ``period`` and was refused. An event leaves at
    exactly ``its time + period``. Times passed to `add` never decrease.
    """

    __slots__ = ("_times", "cap", "period")

    def __init__(self, cap: int, period: float = 1.0) -> None:
        self.cap = cap
        self.period = period
        self._times: deque[float] = deque()

    def _prune(self, now: float) -> None:
        times = self._times
        period = self.period
        while times and times[0] + period <= now:
            times.popleft()

    def count(self, now: float) -> int:
        """Events in ``(now - period, now]``."""
        self._prune(now)
        return len(self._times)

    def remaining(self, now: float) -> int:
        return max(0, self.cap - self.count(now))

    def earliest(self, now: float) -> float:
        """The first time ``>= now`` at which one more event is admitted."""
        self._prune(now)
        times = self._times
        excess = len(times) - self.cap
        if excess < 0:
            return now
        # The oldest ``excess + 1`` events must leave first.
        return max(now, times[excess] + self.period)

    def add(self, now: float) -> None:
        self._times.append(now)

    def move(self, old: float, now: float) -> None:
        """An event counted at ``old`` really happened ``now`` (the latest time so far)."""
        move_last(self._times, old, now)

    def full_at(self, now: float) -> float:
        """When the window is empty again (every event has left)."""
        self._prune(now)
        return self._times[-1] + self.period if self._times else now
