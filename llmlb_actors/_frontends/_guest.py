"""Trio as a guest on the caller's asyncio loop (``trio.lowlevel.start_guest_run``).

Trio's scheduler runs in callbacks of the asyncio loop, on the loop's own
thread; only its I/O wait moves to a helper thread when it has nothing to
run. Both sides share the thread, so the hub is plain calls: asyncio code
starts trio tasks and cancels scopes directly, trio code resolves asyncio
futures directly.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from ._host import BalancerHost
from ._hubs import Hub, direct
from ._runtime import Runtime

if TYPE_CHECKING:
    import outcome

__all__ = ["GuestBalancer", "wait_shielded"]


async def wait_shielded(future: asyncio.Future[Any]) -> bool:
    """Wait for ``future`` even if this task is cancelled meanwhile.

    Returns whether a cancellation arrived (the caller re-raises it once its
    clean-up is done). Used only for waits that trio bounds: a job's end
    after its cancel scope was cancelled, a balancer's shutdown.
    """
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


class _GuestRun:
    """The one trio guest run on one asyncio loop.

    A loop can host one guest run at a time, so every balancer opened on the
    loop lives in it: the first one opened starts it, the last one closed
    ends it (and waits for it to end, so the loop may stop right after).
    """

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GuestRun]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.users = 0
        self.stopping = False
        self.nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[outcome.Outcome[None]] = loop.create_future()

    @classmethod
    async def attach(cls, loop: asyncio.AbstractEventLoop) -> _GuestRun:
        while True:
            run = cls._by_loop.get(loop)
            if run is None:
                run = cls(loop)
                run._start()
                cls._by_loop[loop] = run
            if not run.stopping:
                break
            await wait_shielded(run.finished)  # the last user is waiting for it too
        run.users += 1
        cancelled = await wait_shielded(run.ready)
        if cancelled or run.ready.exception() is not None:
            run.release()
            if cancelled:
                raise asyncio.CancelledError
            run.ready.result()
        return run

    def release(self) -> asyncio.Future[outcome.Outcome[None]] | None:
        """One balancer fewer; the last one stops the run (returns what to wait for)."""
        self.users -= 1
        if self.users or self.stopping:
            return None
        self.stopping = True
        if self._stop is not None:
            self._stop.set()
        return self.finished

    def _start(self) -> None:
        loop = self.loop
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=self._done,
            # Leave the loop's signal wake-up fd alone (asyncio uses it for its own
            # signal handlers); the balancer does not listen for signals.
            host_uses_signal_set_wakeup_fd=True,
        )

    async def _main(self) -> None:
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.ready.set_result(None)
            await self._stop.wait()

    def _done(self, result: outcome.Outcome[None]) -> None:
        if self._by_loop.get(self.loop) is self:
            del self._by_loop[self.loop]
        if not self.ready.done():
            self.ready.set_exception(RuntimeError("the trio guest run ended before it started"))
        self.finished.set_result(result)


class GuestBalancer(Runtime):
    """One balancer inside the loop's guest run."""

    def __init__(self, config: Any, options: dict[str, Any]) -> None:
        self.hub = Hub(direct, direct)
        self.host = BalancerHost(self.hub, config, options)
        self._run: _GuestRun | None = None
        self._stopped: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Start the balancer; raises what starting it raised (`ConfigError`...)."""
        loop = asyncio.get_running_loop()
        run = self._run = await _GuestRun.attach(loop)
        started: asyncio.Future[BaseException | None] = loop.create_future()
        stopped = self._stopped = loop.create_future()
        assert run.nursery is not None
        run.nursery.start_soon(self._serve, started, stopped)
        cancelled = await wait_shielded(started)
        error = started.result()
        if error is not None:
            await self._finish()
            raise error
        if cancelled:
            await self.aclose()
            raise asyncio.CancelledError

    async def _serve(
        self, started: asyncio.Future[BaseException | None], stopped: asyncio.Future[None]
    ) -> None:
        try:
            await self.host.serve(started.set_result)
        finally:
            stopped.set_result(None)

    async def aclose(self) -> None:
        """Close the balancer and wait until it has (even if cancelled meanwhile)."""
        self.host.close()
        cancelled = await self._finish()
        error = self.host.close_error
        if error is not None:
            raise error
        if cancelled:
            raise asyncio.CancelledError

    async def _finish(self) -> bool:
        assert self._run is not None
        assert self._stopped is not None
        cancelled = await wait_shielded(self._stopped)
        finished = self._run.release()
        if finished is not None:
            cancelled |= await wait_shielded(finished)
            finished.result().unwrap()
        return cancelled
