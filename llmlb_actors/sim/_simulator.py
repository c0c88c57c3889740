"""The simulator handle: many simulated providers, each on its own loopback port."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._behaviour import Behaviour, SimProvider, check_outcome
from ._server import ProviderServer
from ._stats import SimStats, StatsRecorder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

    from .._config import ProviderConfig

__all__ = ["Simulator", "open_simulator", "serve_simulator"]

_LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1"}
_ROOT_BASE = frozenset({"anthropic", "gemini", "cohere", "azure"})


def _loopback(host: str) -> str:
    """The address to bind; refuses anything but loopback."""
    try:
        return _LOOPBACK[host]
    except (KeyError, TypeError):
        raise ValueError(
            f"the simulator only binds loopback (127.0.0.1 or localhost), not {host!r}"
        ) from None


class Simulator:
    """Handle on a running simulator, as yielded by `open_simulator`.

    Each simulated provider listens on its own port, so a provider can be
    stopped (connections refused) without touching the others.
    """

    def __init__(self, nursery: trio.Nursery, host: str, redirect_port: int) -> None:
        self._nursery = nursery
        self._host = host
        self._redirect_port = redirect_port
        self._servers: dict[str, ProviderServer] = {}

    def _server(self, name: str) -> ProviderServer:
        try:
            return self._servers[name]
        except KeyError:
            raise KeyError(f"no simulated provider named {name!r}") from None

    # addresses ----------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Names of every provider added, running or stopped."""
        return list(self._servers)

    @property
    def redirect_port(self) -> int:
        """The loopback port ``redirect`` points at; it refuses every connection."""
        return self._redirect_port

    def provider(self, name: str) -> SimProvider:
        """The provider's definition (with its current behaviour)."""
        server = self._server(name)
        return server.spec

    def port(self, name: str) -> int:
        return self._server(name).port

    def url(self, name: str) -> str:
        """``http://127.0.0.1:PORT``, the provider's origin."""
        server = self._server(name)
        return f"http://{server.host}:{server.port}"

    def base_url(self, name: str) -> str:
        """The ``base_url`` a `ProviderConfig` for this provider wants.

        OpenAI-style protocols include ``/v1``; Anthropic, Gemini, Cohere and
        Azure adapters add their own versioned paths to the bare origin.
        """
        server = self._server(name)
        url = self.url(name)
        return url if server.spec.protocol in _ROOT_BASE else url + "/v1"

    def provider_config(self, name: str, **overrides: Any) -> ProviderConfig:
        """A `ProviderConfig` pointing at this simulated provider; ``overrides`` win."""
        from .._config import ProviderConfig

        spec = self._server(name).spec
        fields: dict[str, Any] = {
            "name": name,
            "provider": spec.protocol,
            "model": spec.model_id,
            "api_key": spec.api_key,
            # A simulated provider without a key of its own takes any key, or none.
            "api_key_required": spec.api_key is not None,
            "base_url": self.base_url(name),
        }
        fields.update(overrides)
        return ProviderConfig(**fields)

    # behaviour ----------------------------------------------------------

    def script(self, name: str, outcomes: Iterable[str]) -> None:
        """Queue exact outcomes for the next chat requests, first in first out.

        Once the queue is empty the behaviour's random ``faults`` apply again.
        Raises ``ValueError`` (queueing nothing) if any name is unknown.
        """
        server = self._server(name)
        checked = [check_outcome(outcome) for outcome in outcomes]
        server.script.extend(checked)

    def pending_script(self, name: str) -> list[str]:
        """Outcomes still queued for ``name``."""
        return list(self._server(name).script)

    def clear_script(self, name: str) -> None:
        self._server(name).script.clear()

    def set_behaviour(self, name: str, behaviour: Behaviour) -> None:
        """Replace the behaviour; the provider's random generator restarts from its seed."""
        if not isinstance(behaviour, Behaviour):
            raise TypeError("set_behaviour needs a Behaviour")
        server = self._server(name)
        server.set_behaviour(behaviour)
        server.spec = SimProvider(
            name=server.spec.name,
            protocol=server.spec.protocol,
            api_key=server.spec.api_key,
            model=server.spec.model,
            behaviour=behaviour,
            port=server.spec.port,
        )

    def stats(self, name: str) -> SimStats:
        """An immutable snapshot of the provider's counters."""
        return self._server(name).stats.snapshot()

    def reset_stats(self, name: str) -> None:
        server = self._server(name)
        fresh = StatsRecorder()
        fresh.open_connections = server.stats.open_connections  # a gauge, not a counter
        server.stats = fresh

    def is_running(self, name: str) -> bool:
        return self._server(name).running

    # runtime changes ----------------------------------------------------

    async def add(self, provider: SimProvider, *, port: int | None = None) -> str:
        """Start another simulated provider; returns its URL.

        A stopped provider's name may be reused (it starts fresh); a running
        one's may not.
        """
        if not isinstance(provider, SimProvider):
            raise TypeError("add needs a SimProvider")
        old = self._servers.get(provider.name)
        if old is not None and old.running:
            raise ValueError(f"a simulated provider named {provider.name!r} is already running")
        server = ProviderServer(provider, host=self._host, redirect_port=self._redirect_port)
        if port is not None:
            server.port = port
        await self._nursery.start(server.run)
        self._servers[provider.name] = server
        return self.url(provider.name)

    async def stop_provider(self, name: str) -> None:
        """Close the provider's listener and connections; new connections are refused."""
        await self._server(name).stop()

    async def restart_provider(self, name: str) -> None:
        """Listen again on the same port after `stop_provider` (stats and script kept)."""
        server = self._server(name)
        if not server.running:
            await self._nursery.start(server.run)

    async def aclose(self) -> None:
        """Stop every provider."""
        for server in list(self._servers.values()):
            await server.stop()


def _unused_port_socket() -> socket.socket:
    """A bound, never-listening socket: its port refuses connections while we hold it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def open_simulator(
    providers: Iterable[SimProvider] = (),
    *,
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
) -> AsyncIterator[Simulator]:
    """Run simulated providers for the duration of the ``async with`` block.

    Args:
        providers: the providers to start, each on its own port.
        host: ``127.0.0.1`` or ``localhost``; anything else raises ``ValueError``.
        ports: optional fixed port per provider name (default: ephemeral).

    Every listener and connection task is cancelled on exit. Run it inside the
    same ``trio.run`` as the code under test and ``trio.testing`` clocks apply
    to the simulated latency too.
    """
    bind = _loopback(host)
    specs = list(providers)
    names = [p.name for p in specs]
    if len(set(names)) != len(names):
        raise ValueError("simulated provider names must be unique")
    with _unused_port_socket() as dead:
        try:
            async with trio.open_nursery() as nursery:
                sim = Simulator(nursery, bind, dead.getsockname()[1])
                try:
                    for spec in specs:
                        await sim.add(spec, port=None if ports is None else ports.get(spec.name))
                    yield sim
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nursery wraps whatever the caller's block raised; give it back unwrapped.
            if len(group.exceptions) != 1:
                raise
            only = group.exceptions[0]
        else:
            return
    raise only


async def serve_simulator(
    providers: Iterable[SimProvider],
    *,
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a simulator until cancelled (for ``llmlb sim``); ``nursery.start`` gets the handle."""
    async with open_simulator(providers, host=host, ports=ports) as sim:
        task_status.started(sim)
        await trio.sleep_forever()
