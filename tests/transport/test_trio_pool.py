"""The trio transport's per-origin pool bookkeeping, without sockets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from llmlb_actors._transport._base import PoolTimeout, TransportError
from llmlb_actors._transport._pool import IDLE_EXPIRY, OriginPool

if TYPE_CHECKING:
    from trio.testing import MockClock


class FakeConn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.idle_since = 0.0
        self.reused = False
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def test_lifo_reuse_and_cap() -> None:
    pool: OriginPool[FakeConn] = OriginPool(2)
    assert await pool.acquire(0.0, None) is None  # a slot: open a connection
    assert await pool.acquire(0.0, None) is None
    assert pool.open_connections == 2
    a, b = FakeConn("a"), FakeConn("b")
    pool.release(a, 0.0)
    pool.release(b, 1.0)
    assert (a.reused, b.reused) == (True, True)
    assert await pool.acquire(1.0, None) is b  # the most recently used first
    assert await pool.acquire(1.0, None) is a
    assert pool.open_connections == 2


async def test_expired_idle_connections_are_closed(autojump_clock: MockClock) -> None:
    pool: OriginPool[FakeConn] = OriginPool(2)
    await pool.acquire(0.0, None)
    old = FakeConn("old")
    pool.release(old, 0.0)
    assert await pool.acquire(IDLE_EXPIRY + 1, None) is None  # a new slot, not the old socket
    assert old.closed
    assert pool.open_connections == 1


async def test_release_prunes_the_cold_end() -> None:
    pool: OriginPool[FakeConn] = OriginPool(3)
    for _ in range(2):
        await pool.acquire(0.0, None)
    cold, warm = FakeConn("cold"), FakeConn("warm")
    pool.release(cold, 0.0)
    pool.release(warm, IDLE_EXPIRY + 1)
    assert cold.closed
    assert not warm.closed
    assert (pool.idle_connections, pool.open_connections) == (1, 1)


async def test_waiter_gets_the_released_connection_or_slot(autojump_clock: MockClock) -> None:
    pool: OriginPool[FakeConn] = OriginPool(1)
    assert await pool.acquire(0.0, None) is None
    got: list[FakeConn | None] = []

    async def wait() -> None:
        got.append(await pool.acquire(0.0, None))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        conn = FakeConn("c")
        pool.release(conn, 0.0)  # straight to the first waiter, never idle
        assert pool.idle_connections == 0
        await trio.testing.wait_all_tasks_blocked()
        pool.discard()  # the second waiter gets the slot
    assert got == [conn, None]
    assert pool.open_connections == 1


async def test_grant_survives_a_late_cancel() -> None:
    """A waiter handed a connection keeps it even if cancelled before it runs
    (trio delivers the wake-up, not the cancel); nothing is lost or doubled."""
    pool: OriginPool[FakeConn] = OriginPool(1)
    await pool.acquire(0.0, None)
    got: list[str] = []
    conn = FakeConn("c")
    first = trio.CancelScope()

    async def first_waiter() -> None:
        with first:
            mine = await pool.acquire(0.0, None)
            assert mine is conn
            got.append("first")
            pool.release(mine, 0.0)

    async def second_waiter() -> None:
        assert await pool.acquire(0.0, None) is conn
        got.append("second")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first_waiter)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second_waiter)
        await trio.testing.wait_all_tasks_blocked()
        pool.release(conn, 0.0)  # granted to the first waiter...
        first.cancel()  # ...which is cancelled before it runs
    assert got == ["first", "second"]
    assert pool.open_connections == 1


async def test_cancelled_waiter_leaves_the_queue() -> None:
    pool: OriginPool[FakeConn] = OriginPool(1)
    await pool.acquire(0.0, None)
    got: list[FakeConn | None] = []
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def cancelled() -> None:
            with scope:
                await pool.acquire(0.0, None)

        async def later() -> None:
            got.append(await pool.acquire(0.0, None))

        nursery.start_soon(cancelled)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(later)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        pool.discard()  # the freed slot skips the departed waiter
    assert got == [None]
    assert pool.open_connections == 1


async def test_pool_timeout_and_close(autojump_clock: MockClock) -> None:
    pool: OriginPool[FakeConn] = OriginPool(1)
    await pool.acquire(0.0, None)
    with pytest.raises(PoolTimeout):
        await pool.acquire(0.0, 2.0)
    assert trio.current_time() == pytest.approx(2.0)
    errors: list[BaseException] = []

    async def wait() -> None:
        try:
            await pool.acquire(0.0, None)
        except TransportError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        pool.close()
    assert [str(e) for e in errors] == ["transport is closed"]
    conn = FakeConn("late")
    pool.release(conn, 0.0)  # an exchange that ends after close: closed, not pooled
    assert conn.closed
    assert pool.open_connections == 0
    with pytest.raises(TransportError, match="closed"):
        await pool.acquire(0.0, None)
