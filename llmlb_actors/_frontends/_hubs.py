"""Moving calls between the trio side and the host side (asyncio loop or caller threads).

A hub has two one-way paths, ``to_trio`` and ``to_host``, each running
``fn(arg)`` "soon" on the other side (one argument: no tuple of arguments to
build per hand-over). In a guest run both sides share one thread and both
paths are plain calls; across threads each path is a `Batcher`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from .._errors import BalancerClosedError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Batcher", "Hub", "direct"]

log = logging.getLogger("llmlb_actors")


def direct(fn: Callable[[Any], object], arg: Any) -> None:
    """The path between two sides that share a thread and a loop: just call."""
    fn(arg)


class Batcher:
    """Runs ``fn(arg)`` on the other side, with one wake-up per batch.

    ``schedule`` is the other side's thread-safe "run this soon" (trio's
    ``TrioToken.run_sync_soon``, asyncio's ``loop.call_soon_threadsafe``).
    Each costs a write to a wake-up socket and a pass of the other loop, so
    calls queue here and one scheduled drain runs every call queued before
    it. Order is kept: a cancellation never overtakes the job it cancels.
    """

    __slots__ = ("_closed", "_items", "_lock", "_schedule", "_scheduled")

    def __init__(self, schedule: Callable[[Callable[[], object]], object]) -> None:
        self._items: deque[tuple[Callable[[Any], object], Any]] = deque()
        self._scheduled = False
        self._schedule = schedule
        # Callers on many threads (the sync front-end) append while the drain swaps.
        # Reentrant: a garbage collection can start at any allocation made while the lock
        # is held, and finalize a dropped stream or balancer on this very thread, whose
        # ``__del__`` hands over its cancellation here. Each step below leaves the state
        # consistent for such a nested call (it lands in the batch being built or drained).
        self._lock = threading.RLock()
        self._closed = False

    def __call__(self, fn: Callable[[Any], object], arg: Any) -> None:
        with self._lock:
            if self._closed:
                raise BalancerClosedError("the balancer is closed")
            self._items.append((fn, arg))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._schedule(self._drain)
        except RuntimeError:
            # The other side has ended (trio.RunFinishedError, "Event loop is closed").
            # A trio side that ends closes this batcher first and answers what was queued;
            # a closed asyncio loop has nobody left to answer.
            log.debug("hand-over to a finished loop dropped")

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
            items, self._items = self._items, deque()
        for fn, arg in items:
            try:
                fn(arg)
            except Exception:  # one bad hand-over must not strand the rest of the batch
                log.exception("llmlb_actors front-end hand-over failed")

    def close(self) -> list[tuple[Callable[[Any], object], Any]]:
        """Refuse new calls; returns the ones queued but not yet run."""
        with self._lock:
            self._closed = True
            items, self._items = list(self._items), deque()
        return items


class Hub:
    """The two paths between one trio side and its host."""

    __slots__ = ("to_host", "to_trio")

    def __init__(
        self,
        to_trio: Callable[[Callable[[Any], object], Any], None],
        to_host: Callable[[Callable[[Any], object], Any], None],
    ) -> None:
        self.to_trio = to_trio
        self.to_host = to_host
