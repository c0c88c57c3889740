"""`AttemptTimer`: attempts cut at their deadlines, oldest first (virtual time)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from llmlb_actors._actors._expiry import AttemptTimer

if TYPE_CHECKING:
    from trio.testing import MockClock


class Attempt:
    """A worker's running attempt, as the timer sees it."""

    def __init__(self) -> None:
        self.serial = 0
        self.expired_at: list[float] = []

    def begin(self) -> None:
        self.serial += 1

    def end(self) -> None:
        self.serial += 1

    def expire(self) -> None:
        self.expired_at.append(trio.current_time())


async def test_cuts_only_what_is_still_running_at_exactly_its_deadline(
    autojump_clock: MockClock,
) -> None:
    timer = AttemptTimer()
    fast, slow, late = Attempt(), Attempt(), Attempt()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        for attempt in (fast, slow):
            attempt.begin()
            assert timer.watch(trio.current_time() + 10.0, attempt)
            await trio.sleep(1.0)
        fast.end()  # at 2 s, before its deadline (10 s)
        late.begin()
        assert timer.watch(trio.current_time() + 10.0, late)
        await trio.sleep(30.0)
        nursery.cancel_scope.cancel()
    assert fast.expired_at == []
    assert slow.expired_at == [11.0]
    assert late.expired_at == [12.0]


async def test_a_new_attempt_of_the_same_worker_is_not_cut_by_the_old_deadline(
    autojump_clock: MockClock,
) -> None:
    timer = AttemptTimer()
    worker = Attempt()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        worker.begin()
        assert timer.watch(10.0, worker)
        await trio.sleep(5.0)
        worker.end()
        worker.begin()  # the next attempt, at 5 s: its deadline is 15 s
        assert timer.watch(15.0, worker)
        await trio.sleep(9.0)
        assert worker.expired_at == []
        await trio.sleep(2.0)
        nursery.cancel_scope.cancel()
    assert worker.expired_at == [15.0]


async def test_wakes_for_the_first_attempt_after_idling(autojump_clock: MockClock) -> None:
    timer = AttemptTimer()
    attempt = Attempt()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        await trio.sleep(100.0)  # nothing to watch: the timer waits without a deadline
        attempt.begin()
        assert timer.watch(103.0, attempt)
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    assert attempt.expired_at == [103.0]


def test_refuses_a_deadline_before_one_it_watches() -> None:
    """The queue must stay in deadline order: the caller then sets an exact deadline."""
    timer = AttemptTimer()
    first, second = Attempt(), Attempt()
    first.begin()
    second.begin()
    assert timer.watch(10.0, first)
    assert not timer.watch(9.0, second)
    assert timer.watch(10.0, second)


def test_finished_attempts_do_not_pile_up() -> None:
    """Without the timer task running (it wakes about once per timeout), the queue holds
    about the attempts running, not every attempt since it last woke."""
    timer = AttemptTimer()
    workers = [Attempt() for _ in range(4)]
    for i in range(10_000):
        worker = workers[i % 4]
        worker.end()
        worker.begin()
        assert timer.watch(60.0 + i, worker)
        assert len(timer) <= 4


async def test_an_earlier_deadline_than_the_one_it_sleeps_until_is_refused(
    autojump_clock: MockClock,
) -> None:
    """The timer sleeps until the oldest deadline it saw. If that attempt ended and a retry
    with an earlier deadline (its request started long ago) comes next, the timer would
    wake too late for it: it refuses, and the worker sets an exact deadline instead. Once
    the timer has woken, the same deadline is accepted again."""
    timer = AttemptTimer()
    first, retry, later = Attempt(), Attempt(), Attempt()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        first.begin()
        assert timer.watch(124.0, first)
        await trio.sleep(1.0)
        first.end()
        retry.begin()
        assert not timer.watch(120.0, retry)
        await trio.sleep(130.0)  # the timer woke at 124, found nothing left, and waits
        later.begin()
        assert timer.watch(trio.current_time() + 5.0, later)
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    assert first.expired_at == retry.expired_at == []
    assert later.expired_at == [136.0]
