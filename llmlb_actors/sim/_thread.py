"""The simulator on a trio thread of its own, for asyncio and synchronous code."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

import trio

from ._simulator import Simulator, open_simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from .._config import ProviderConfig
    from ._behaviour import Behaviour, SimProvider
    from ._stats import SimStats

__all__ = ["SimulatorThread"]


class SimulatorThread:
    """``with SimulatorThread([SimProvider(...)]) as sim:`` — the simulator on its own thread.

    `open_simulator` runs inside a trio run; code that is not trio (asyncio,
    scripts, notebooks, the asyncio and sync front-ends) starts it here
    instead, and talks to it over loopback as to any server. The methods
    mirror `Simulator`'s and run on the simulator's thread, so they may be
    called from any thread or event loop (they block for a moment).
    """

    def __init__(self, providers: Iterable[SimProvider], *, host: str = "127.0.0.1") -> None:
        self._providers = list(providers)
        self._host = host
        self._sim: Simulator | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._crash_reported = False
        self._thread = threading.Thread(target=self._run, name="llmlb-simulator", daemon=True)

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every simulated provider and the thread (idempotent).

        Raises:
            RuntimeError: the simulator's trio run crashed after it started (from
                that error; raised once).
        """
        if self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # it crashed meanwhile: reported below
                self._call(self._stop.set)
        self._thread.join()
        if self._error is not None and self._sim is not None and not self._crash_reported:
            self._crash_reported = True
            raise self._crashed()

    def _crashed(self) -> RuntimeError:
        error = RuntimeError("the simulator thread crashed")
        error.__cause__ = self._error
        return error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # raised on entering, or (once started) by close()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with open_simulator(self._providers, host=self._host) as sim:
            self._sim = sim
            self._ready.set()
            await self._stop.wait()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the simulator's thread (from a trio task of another run too,
        which ``trio.from_thread`` refuses)."""
        assert self._token is not None, "the simulator is not running"
        done = threading.Event()
        box: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

        try:
            self._token.run_sync_soon(run)
        except trio.RunFinishedError:
            raise self._not_running() from self._error
        # A run that crashed never runs what was queued: do not wait for it forever.
        while not done.wait(0.1):
            if not self._thread.is_alive() and not done.is_set():
                raise self._not_running()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _not_running(self) -> RuntimeError:
        if self._error is not None:
            return self._crashed()
        return RuntimeError("the simulator is not running")

    @property
    def simulator(self) -> Simulator:
        """The `Simulator` itself: only for code on the simulator's thread."""
        assert self._sim is not None, "the simulator is not running"
        return self._sim

    @property
    def names(self) -> list[str]:
        names: list[str] = self._call(lambda: self.simulator.names)
        return names

    def base_url(self, name: str) -> str:
        url: str = self._call(self.simulator.base_url, name)
        return url

    def provider_config(self, name: str, **overrides: Any) -> ProviderConfig:
        """A `ProviderConfig` pointing at this simulated provider; ``overrides`` win."""
        config: ProviderConfig = self._call(
            lambda: self.simulator.provider_config(name, **overrides)
        )
        return config

    def script(self, name: str, outcomes: Iterable[str]) -> None:
        """Queue exact outcomes for the next chat requests (see `Simulator.script`)."""
        self._call(self.simulator.script, name, list(outcomes))

    def set_behaviour(self, name: str, behaviour: Behaviour) -> None:
        self._call(self.simulator.set_behaviour, name, behaviour)

    def stats(self, name: str) -> SimStats:
        """An immutable snapshot of the provider's counters."""
        stats: SimStats = self._call(self.simulator.stats, name)
        return stats
