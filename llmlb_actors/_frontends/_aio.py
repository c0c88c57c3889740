"""The balancer from asyncio code: ``async with aio.open_balancer(config) as lb``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Literal

from .._balancer import Balancer as TrioBalancer
from .._errors import ConfigError
from ._aio_streams import BatchMap, BatchResults, Stream, check_loop
from ._guest import GuestBalancer, wait_shielded
from ._hubs import Batcher
from ._jobs import Job, request_fn
from ._runtime import call_sync
from ._thread import TrioThread

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterable
    from types import TracebackType

    from .._config import BalancerConfig, ProviderConfig
    from .._models import LLMRequest, LLMResponse
    from .._stats import BalancerTotals, ProviderStats
    from ._runtime import Runtime

__all__ = ["Balancer", "BatchMap", "BatchResults", "Stream", "open_balancer"]

Runner = Literal["guest", "thread"]


def _wake(job: Job) -> None:
    job.done = True
    waiter = job.waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _cancel_and_wait(rt: Runtime, job: Job) -> None:
    """Cancel ``job`` upstream and wait until the trio side has finished it.

    Trio bounds that wait (cancellation is prompt), so another cancellation
    meanwhile is only remembered: the caller re-raises its own.
    """
    rt.cancel(job)
    loop = asyncio.get_running_loop()
    while not job.done:
        waiter = job.waiter = loop.create_future()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter


async def _run_job(rt: Runtime, loop: asyncio.AbstractEventLoop, job: Job) -> Any:
    waiter = job.waiter = check_loop(rt, loop).create_future()
    rt.submit(job)
    try:
        await waiter
    except asyncio.CancelledError:
        await _cancel_and_wait(rt, job)
        raise
    error = job.error
    if error is not None:
        raise error
    return job.value


class Balancer:
    """The trio balancer as asyncio code uses it. Get one from `open_balancer`.

    Same strategies, retries, stats and errors as `llmlb_actors.Balancer`;
    call it from the loop it was opened on. Cancelling a call (``task.cancel()``,
    ``asyncio.timeout``) cancels its attempt upstream as trio cancellation
    does: the connection is closed and the provider counts it as cancelled.
    """

    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        self._rt = runtime
        self._loop = loop

    @property
    def config(self) -> BalancerConfig:
        """The configuration the balancer was opened with."""
        return self._rt.host.balancer.config

    async def request(self, request: LLMRequest, *, timeout: float | None = None) -> LLMResponse:
        """Answer ``request``; see `llmlb_actors.Balancer.request` (same errors)."""
        job = Job(None, request_fn, (request, timeout), _wake)
        response: LLMResponse = await _run_job(self._rt, self._loop, job)
        return response

    def stream(self, request: LLMRequest, *, timeout: float | None = None) -> Stream:
        """``async with lb.stream(req) as chunks: async for chunk in chunks``.

        Failover happens before the first chunk (inside ``async with``);
        after it a failure raises `LLMError` with ``partial=True``. Leaving
        the block early or being cancelled closes the upstream response.
        """
        return Stream(self._rt, self._loop, request, timeout)

    def map(
        self,
        requests: Iterable[LLMRequest] | AsyncIterable[LLMRequest],
        *,
        concurrency: int = 64,
        ordered: bool = False,
        buffer: int | None = None,
        timeout: float | None = None,
    ) -> BatchMap:
        """``async with lb.map(reqs, concurrency=64) as results: async for r in results``.

        As `llmlb_actors.Balancer.map`: lazy, bounded, one `BatchResult` per
        item. An async iterable is read on this loop; a plain iterable on the
        balancer's trio side.
        """
        options = {
            "concurrency": concurrency,
            "ordered": ordered,
            "buffer": buffer,
            "timeout": timeout,
        }
        return BatchMap(self._rt, self._loop, requests, options)

    def get_stats(self) -> dict[str, ProviderStats]:
        """``{name: ProviderStats}`` for every current provider."""
        stats: dict[str, ProviderStats] = call_sync(self._rt, TrioBalancer.get_stats)
        return stats

    def get_totals(self) -> BalancerTotals:
        """Balancer-wide counters."""
        totals: BalancerTotals = call_sync(self._rt, TrioBalancer.get_totals)
        return totals

    def get_healthy_providers(self) -> list[ProviderConfig]:
        """Configs of the providers in rotation whose circuit is closed."""
        healthy: list[ProviderConfig] = call_sync(self._rt, TrioBalancer.get_healthy_providers)
        return healthy

    async def health_check(self) -> dict[str, bool]:
        """Probe every provider now, concurrently; returns ``{name: healthy}``."""
        result: dict[str, bool] = await _run_job(
            self._rt, self._loop, Job(None, TrioBalancer.health_check, (), _wake)
        )
        return result

    async def add_provider(self, config: ProviderConfig) -> None:
        """Start a provider at runtime."""
        await _run_job(self._rt, self._loop, Job(None, TrioBalancer.add_provider, (config,), _wake))

    async def remove_provider(self, name: str) -> None:
        """Take a provider out of rotation, drain it, stop it and drop its stats."""
        await _run_job(
            self._rt, self._loop, Job(None, TrioBalancer.remove_provider, (name,), _wake)
        )


# -- opening ----------------------------------------------------------------------------------


class _ThreadRuntime(TrioThread):
    """A trio thread whose answers hop to the asyncio loop (one wake-up per batch)."""

    def __init__(self, config: Any, options: dict[str, Any]) -> None:
        self._loop = asyncio.get_running_loop()
        super().__init__(config, options, Batcher(self._loop.call_soon_threadsafe))
        self._stopped: asyncio.Future[None] = self._loop.create_future()

    async def start(self) -> None:
        started: asyncio.Future[BaseException | None] = self._loop.create_future()
        stopped = self._stopped
        self.launch(
            lambda error: self._to_host(_resolve, (started, error)),
            lambda: self._to_host(_resolve, (stopped, None)),
        )
        cancelled = await wait_shielded(started)
        error = started.result()
        if error is not None:
            await wait_shielded(stopped)
            self.join()
            raise error
        if cancelled:
            await self.aclose()
            raise asyncio.CancelledError

    async def aclose(self) -> None:
        self.request_close()
        cancelled = await wait_shielded(self._stopped)
        self.join()
        error = self.host.close_error or self.crash
        if error is not None:
            raise error
        if cancelled:
            raise asyncio.CancelledError


def _resolve(pair: tuple[asyncio.Future[Any], Any]) -> None:
    future, value = pair
    if not future.done():
        future.set_result(value)


class _Opened:
    """The async context manager `open_balancer` returns."""

    def __init__(self, config: BalancerConfig | None, options: dict[str, Any], runner: str) -> None:
        if runner not in ("guest", "thread"):
            raise ConfigError(f"runner must be 'guest' or 'thread', got {runner!r}", field="runner")
        self._config = config
        self._options = options
        self._runner = runner
        self._runtime: GuestBalancer | _ThreadRuntime | None = None

    async def __aenter__(self) -> Balancer:
        if self._runtime is not None:
            raise RuntimeError("open_balancer(...) can be entered only once")
        if self._runner == "guest":
            runtime: GuestBalancer | _ThreadRuntime = GuestBalancer(self._config, self._options)
        else:
            runtime = _ThreadRuntime(self._config, self._options)
        await runtime.start()
        self._runtime = runtime
        return Balancer(runtime, asyncio.get_running_loop())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._runtime is not None
        await self._runtime.aclose()


def open_balancer(
    config: BalancerConfig | None = None, *, runner: Runner = "thread", **fields: Any
) -> _Opened:
    """Run a balancer for an ``async with`` block, for the running asyncio loop.

    Arguments as `llmlb_actors.open_balancer` (a `BalancerConfig`, or its
    fields as keywords; ``rng``). The balancer runs on trio: on a trio
    thread of its own (``runner="thread"``, the default), or as a trio guest
    on this loop (``runner="guest"``, ``trio.lowlevel.start_guest_run``).
    Both cost the same per request; the thread keeps the balancer running
    while the loop is busy (README: "Using it from asyncio"). Leaving the
    block shuts it down: requests still in flight from other tasks get
    `BalancerClosedError`.

    Raises:
        ConfigError: the configuration is invalid (on entering the block).
    """
    return _Opened(config, fields, runner)
