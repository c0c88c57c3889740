"""The keep-alive pool of one origin: O(1) checkout, a connection cap, FIFO waiting.

The pool only does bookkeeping; it never opens sockets. `acquire` returns an
idle connection, or ``None`` meaning "you now hold a slot: open a connection
on it". Every slot taken must be given back exactly once, by `release` (the
connection is clean and may be reused) or `discard` (it was closed, or never
opened). When the cap is reached, callers queue in FIFO order and a freed
connection or slot is handed to the oldest waiter directly, so a newcomer
can never overtake a task that has been waiting. Strictly private.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar

import trio

from ._base import PoolTimeout, TransportError

__all__ = ["IDLE_EXPIRY", "OriginPool", "PooledConnection"]

#: Seconds a connection may sit idle before it is closed instead of reused.
#: Many servers close idle keep-alive connections after a few seconds (uvicorn
#: and Node use 5 s); not offering an old one avoids most of the stale-socket
#: retries. httpx uses the same default.
IDLE_EXPIRY = 5.0


class PooledConnection(Protocol):
    idle_since: float
    reused: bool

    def close(self) -> None: ...


C = TypeVar("C", bound=PooledConnection)


_WAITING = "waiting"
_GRANTED = "granted"  # owns the connection in `conn`, or a slot when it is None
_CLOSED = "closed"  # woken by `OriginPool.close`; owns nothing


class _Waiter(Generic[C]):
    __slots__ = ("conn", "event", "state")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.state = _WAITING
        self.conn: C | None = None


class OriginPool(Generic[C]):
    """Idle connections (a LIFO stack) and open-connection accounting for one origin."""

    __slots__ = ("_cap", "_closed", "_idle", "_open", "_waiters")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._idle: deque[C] = deque()
        self._open = 0
        self._waiters: deque[_Waiter[C]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Slots taken: connections idle, in use, or being opened."""
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def acquire(self, now: float, timeout: float | None) -> C | None:
        """An idle connection, or ``None``: a slot to open a new one on.

        The fast path does not checkpoint; the caller's first send does.

        Raises:
            PoolTimeout: no connection or slot freed within ``timeout``.
            TransportError: the pool was closed.
        """
        if self._closed:
            raise TransportError("transport is closed")
        idle = self._idle
        while idle:
            conn = idle.pop()  # LIFO: the warmest socket, least likely closed by the server
            if now - conn.idle_since < IDLE_EXPIRY:
                return conn
            conn.close()
            self._open -= 1
        if self._open < self._cap:
            self._open += 1
            return None
        return await self._wait(timeout)

    async def _wait(self, timeout: float | None) -> C | None:
        waiter: _Waiter[C] = _Waiter()
        self._waiters.append(waiter)
        try:
            if timeout is None:
                await waiter.event.wait()
            else:
                with trio.move_on_after(timeout):
                    await waiter.event.wait()
        except BaseException:
            if waiter.state is _GRANTED:
                # Handed a connection or slot, then cancelled before using it: pass it on.
                self._give_back(waiter.conn)
            elif waiter.state is _WAITING:
                self._waiters.remove(waiter)
            raise
        if waiter.state is _WAITING:
            self._waiters.remove(waiter)
            raise PoolTimeout(f"no connection free within {timeout} s")
        if waiter.state is _CLOSED or self._closed:
            if waiter.state is _GRANTED:
                self._give_back(waiter.conn)
            raise TransportError("transport is closed")
        return waiter.conn

    def _give_back(self, conn: C | None) -> None:
        if conn is not None:
            self.release(conn, conn.idle_since)
        else:
            self.discard()

    def release(self, conn: C, now: float) -> None:
        """Give back a clean connection for reuse (to the oldest waiter, else idle)."""
        conn.reused = True
        if self._closed:
            conn.close()
            self._open -= 1
            return
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.state = _GRANTED
            waiter.conn = conn
            waiter.event.set()
            return
        conn.idle_since = now
        idle = self._idle
        idle.append(conn)
        # Prune at most one expired connection from the cold end per release:
        # O(1), and LIFO checkout would otherwise never reach it.
        if now - idle[0].idle_since >= IDLE_EXPIRY:
            idle.popleft().close()
            self._open -= 1

    def discard(self) -> None:
        """A slot's connection was closed (or never opened): free the slot."""
        if self._waiters and not self._closed:
            waiter = self._waiters.popleft()
            waiter.state = _GRANTED
            waiter.event.set()
            return
        self._open -= 1

    def close(self) -> None:
        """Close idle connections and wake every waiter (they get `TransportError`)."""
        self._closed = True
        while self._idle:
            self._idle.popleft().close()
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.state = _CLOSED
            waiter.event.set()
