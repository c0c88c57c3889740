"""The cross-thread hand-over (`Batcher`) under the garbage collector.

A sync stream, batch or balancer dropped without ``close()`` cancels its work
from ``__del__`` (or a ``weakref.finalize``) through the balancer's batcher.
When the dropped object sits in a reference cycle, the collector runs that on
whichever thread allocates when a collection is due: possibly a thread in the
middle of a hand-over through the same batcher, holding its lock.
"""

from __future__ import annotations

import gc
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

import pytest

from llmlb_actors._frontends import _hubs as hubs
from llmlb_actors._frontends._hubs import Batcher

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def collections_only_where_we_say() -> Iterator[None]:
    """No automatic collection: the dropped object is finalized exactly where forced."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Dropped:
    """Stands for a dropped stream: its finalizer hands a cancellation over."""

    def __init__(self, batcher: Batcher, ran: list[str]) -> None:
        self.batcher = batcher
        self.ran = ran
        self.cycle = self  # only the collector frees it

    def __del__(self) -> None:
        self.batcher(self.ran.append, "cancellation from a finalizer")


class _CollectOnAppend(deque[Any]):
    """A queue whose append allocates just when a collection is due."""

    def append(self, item: Any) -> None:
        gc.collect()
        super().append(item)


def _hand_over_while_collecting(batcher: Batcher, ran: list[str]) -> threading.Thread:
    _Dropped(batcher, ran)
    batcher._items = _CollectOnAppend()
    caller = threading.Thread(
        target=batcher, args=(ran.append, "the hand-over"), name="caller", daemon=True
    )
    caller.start()
    caller.join(10)
    return caller


def test_a_finalizer_handing_over_inside_a_hand_over_does_not_deadlock() -> None:
    scheduled: list[Any] = []
    ran: list[str] = []
    batcher = Batcher(scheduled.append)
    caller = _hand_over_while_collecting(batcher, ran)
    assert not caller.is_alive(), "the caller deadlocked on the batcher's own lock"
    assert len(scheduled) == 1  # one wake-up for the batch
    scheduled[0]()
    assert ran == ["cancellation from a finalizer", "the hand-over"]


def test_a_finalizer_handing_over_inside_a_drain_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduled: list[Any] = []
    ran: list[str] = []
    batcher = Batcher(scheduled.append)
    batcher(ran.append, "queued")
    _Dropped(batcher, ran)

    def collecting_deque() -> deque[Any]:
        gc.collect()  # the drain allocates its fresh queue just when a collection is due
        return deque()

    monkeypatch.setattr(hubs, "deque", collecting_deque)
    drainer = threading.Thread(target=scheduled[0], name="drainer", daemon=True)
    drainer.start()
    drainer.join(10)
    assert not drainer.is_alive(), "the drain deadlocked on the batcher's own lock"
    assert ran == ["queued", "cancellation from a finalizer"]
    assert len(scheduled) == 2  # the nested hand-over asked for a drain of its own...
    scheduled[1]()  # ...which finds nothing left: it ran in the batch being drained
    assert ran == ["queued", "cancellation from a finalizer"]
