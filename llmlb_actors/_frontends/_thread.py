"""Trio on a thread of its own, serving one balancer to callers on other threads."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import trio

from ._host import BalancerHost
from ._hubs import Batcher, Hub
from ._runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["TrioThread"]


class TrioThread(Runtime):
    """``trio.run`` on a daemon thread hosting one balancer.

    Calls into trio go through a `Batcher` over ``TrioToken.run_sync_soon``
    (thread-safe; one wake-up of the trio loop per batch). The way back,
    ``to_host``, is the front-end's: the sync front-end answers on the trio
    thread itself (its callers wait on locks), the asyncio one hops to its
    loop. When the run ends, hand-overs still queued are answered with
    `BalancerClosedError` and later ones are refused.
    """

    def __init__(
        self,
        config: Any,
        options: dict[str, Any],
        to_host: Callable[[Callable[[Any], object], Any], None],
    ) -> None:
        self._config = config
        self._options = options
        self._to_host = to_host
        self._thread: threading.Thread | None = None
        self.crash: BaseException | None = None

    def launch(
        self,
        started: Callable[[BaseException | None], object],
        stopped: Callable[[], object],
    ) -> None:
        """Start the thread; ``started(error)`` and later ``stopped()`` are called on it."""
        self._thread = threading.Thread(
            target=self._run, args=(started, stopped), name="llmlb-balancer", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; returns whether it did."""
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(
        self, started: Callable[[BaseException | None], object], stopped: Callable[[], object]
    ) -> None:
        told: list[bool] = []

        def tell(error: BaseException | None) -> None:
            told.append(True)
            started(error)

        try:
            trio.run(self._main, tell)
        except BaseException as exc:
            if told:
                self.crash = exc
            else:
                started(exc)
        finally:
            stopped()

    async def _main(self, started: Callable[[BaseException | None], object]) -> None:
        token = trio.lowlevel.current_trio_token()
        to_trio = Batcher(token.run_sync_soon)
        self.hub = Hub(to_trio, self._to_host)
        host = self.host = BalancerHost(self.hub, self._config, self._options)
        try:
            await host.serve(started)
        finally:
            for fn, arg in to_trio.close():
                if fn == host.spawn:
                    host.fail(arg)
                elif fn == host.call_now:
                    host.call_now(arg)  # observation still works: nothing else runs now
