"""Attempt timeouts for one provider actor, without a deadline move per attempt.

A worker runs its attempts in one long-lived cancel scope. Moving that scope's
deadline for each attempt is exact but costs ~1.8 µs (trio re-registers the
deadline through a context manager and a heap): the largest single cost the
actor layer had per whole response. An attempt's deadline is its start plus the
provider's timeout, or its request's deadline if that comes first; both grow in
the order a provider's mailbox hands out first attempts. So a FIFO queue holds
them, and one task sleeps until the oldest unfinished one and cancels its
worker's scope there: the same instant the scope's own deadline would have
fired. An attempt costs a deque append; the task wakes about once per timeout
while attempts finish in time.

A deadline out of order (a retry or a hedge, whose request started earlier) and
streams (whose idle deadline moves per read anyway) keep an exact scope
deadline. Strictly private.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import trio

__all__ = ["AttemptTimer", "Expirable"]


class Expirable(Protocol):
    """A worker's running attempt: ``serial`` changes when the attempt ends."""

    @property
    def serial(self) -> int: ...

    def expire(self) -> None:
        """Cut the attempt now (cancel its worker's scope)."""


class AttemptTimer:
    """Cuts attempts at their deadlines, oldest first."""

    __slots__ = ("_queue", "_sleeping_until", "_wakeup")

    def __init__(self) -> None:
        # (deadline, the attempt's serial, its worker's running attempt), in start order.
        self._queue: deque[tuple[float, int, Expirable]] = deque()
        self._wakeup: trio.Event | None = None  # set while `run` waits for an attempt
        self._sleeping_until = -math.inf  # while `run` sleeps until a deadline: that one

    def __len__(self) -> int:
        return len(self._queue)

    def watch(self, deadline: float, running: Expirable) -> bool:
        """Cut ``running``'s current attempt at ``deadline``.

        False if ``deadline`` comes before one already watched (the queue must
        stay in deadline order), or before the one `run` sleeps until (that
        attempt may have ended, but `run` would wake too late for this one): the
        caller then sets an exact deadline itself.
        """
        queue = self._queue
        # Attempts end in about the order they start: dropping the finished ones at
        # the head here keeps the queue near the number of attempts running.
        while queue and queue[0][2].serial != queue[0][1]:
            queue.popleft()
        if deadline < self._sleeping_until or (queue and deadline < queue[-1][0]):
            return False
        queue.append((deadline, running.serial, running))
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()
        return True

    async def run(self) -> None:
        """Until cancelled (with the actor): cut each attempt still running at its deadline."""
        queue = self._queue
        while True:
            while queue:
                deadline, serial, running = queue[0]
                if running.serial != serial:
                    queue.popleft()  # it ended in time
                elif trio.current_time() < deadline:
                    self._sleeping_until = deadline
                    try:
                        await trio.sleep_until(deadline)
                    finally:
                        self._sleeping_until = -math.inf
                else:
                    queue.popleft()
                    running.expire()
            wakeup = self._wakeup = trio.Event()
            await wakeup.wait()
