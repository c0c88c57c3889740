"""The simulator on a trio thread of its own, for tests whose code under test is not trio.

The asyncio and synchronous front-ends run their own loops; the simulator
they talk to runs here, over loopback, as it would in another process.
Calls into it (``script``, ``stats``) run on its thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import trio

from llmlb_actors.sim import SimProvider, SimStats, Simulator, open_simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from llmlb_actors import ProviderConfig


class SimThread:
    """``with SimThread([SimProvider(...)]) as sim:`` — a running simulator on 127.0.0.1."""

    def __init__(self, providers: Iterable[SimProvider]) -> None:
        self._providers = list(providers)
        self._sim: Simulator | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)

    def __enter__(self) -> SimThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.call(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the simulator did not stop"

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with open_simulator(self._providers) as sim:
            self._sim = sim
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the simulator's thread; blocks briefly, from any thread or loop
        (also from a trio task of another run, which ``trio.from_thread`` refuses)."""
        assert self._token is not None
        done = threading.Event()
        box: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

        self._token.run_sync_soon(run)
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    @property
    def sim(self) -> Simulator:
        assert self._sim is not None
        return self._sim

    def provider_config(self, name: str, **overrides: Any) -> ProviderConfig:
        return self.call(lambda: self.sim.provider_config(name, **overrides))

    def script(self, name: str, outcomes: Iterable[str]) -> None:
        self.call(self.sim.script, name, list(outcomes))

    def stats(self, name: str) -> SimStats:
        stats: SimStats = self.call(self.sim.stats, name)
        return stats
