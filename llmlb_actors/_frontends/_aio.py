"""The balancer from asyncio code: ``async with aio.open_balancer(config) as lb``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Literal

from .._balancer import Balancer as TrioBalancer
from .._errors import BalancerClosedError, ConfigError
from ._guest import GuestBalancer, wait_shielded
from ._hubs import Batcher
from ._jobs import HostInput, Job, Outbox, batch_statistics, request_fn, run_map, run_stream
from ._runtime import call_sync
from ._thread import TrioThread

if TYPE_CHECKING:
    from types import TracebackType

    from .._batch import BatchResult, BatchStatistics
    from .._config import BalancerConfig, ProviderConfig
    from .._models import LLMRequest, LLMResponse, StreamChunk
    from .._stats import BalancerTotals, ProviderStats
    from ._runtime import Runtime

__all__ = ["Balancer", "BatchMap", "BatchResults", "Stream", "open_balancer"]

Runner = Literal["guest", "thread"]

#: Chunks of one stream on their way to (or waiting for) the consumer, at most.
STREAM_WINDOW = 64
#: Results of one batch between the trio side and the consumer, at most (beyond the
#: batch's own ``concurrency + buffer`` window).
MAP_HANDOVER = 64


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


def _check_loop(rt: Runtime, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    running = asyncio.get_running_loop()
    if running is not loop:
        if rt.host.closed:
            raise BalancerClosedError("the balancer is closed")
        # Answers are delivered to the loop the balancer was opened on.
        raise RuntimeError(
            "this llmlb_actors.aio balancer belongs to another event loop: "
            "use it from the loop it was opened on"
        )
    return running


async def _run_job(rt: Runtime, loop: asyncio.AbstractEventLoop, job: Job) -> Any:
    waiter = job.waiter = _check_loop(rt, loop).create_future()
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


# -- streams and batches: items from an Outbox, on the loop ---------------------------------


_END = object()


class _Inbox:
    """The loop's end of an `Outbox`: items arrive here, credit goes back as they are taken."""

    def __init__(self, rt: Runtime, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        self._rt = rt
        self._loop = loop
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._taken = 0
        self._credit_batch = max(1, capacity // 2)
        self._outbox = Outbox(capacity)
        self._outbox.push = self._push
        self._outbox.to_host = rt.hub.to_host
        self._job: Job | None = None
        self._open = False
        self._done = False
        self._error_raised = False

    # called by the trio side, through the hub
    def _push(self, item: Any) -> None:
        self._items.append(item)
        self._wake()

    def _opened(self, _job: Job) -> None:
        self._open = True
        self._wake()

    def _finished(self, job: Job) -> None:
        job.done = True
        self._done = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        await waiter

    async def _start(self, job: Job) -> None:
        _check_loop(self._rt, self._loop)
        self._job = job
        job.on_open = self._opened
        self._rt.submit(job)
        try:
            while not (self._open or self._done):
                await self._wait()
        except asyncio.CancelledError:
            await self._stop()
            raise
        if not self._open:
            raise job.error or BalancerClosedError("the balancer is closed")

    async def _next(self) -> Any:
        while True:
            if self._items:
                item = self._items.popleft()
                self._taken += 1
                if self._taken >= self._credit_batch:
                    taken, self._taken = self._taken, 0
                    with contextlib.suppress(BalancerClosedError):  # the job ended meanwhile
                        self._rt.hub.to_trio(self._outbox.add_credit, taken)
                return item
            if self._done:
                assert self._job is not None
                error = self._job.error
                if error is not None and not self._error_raised:
                    self._error_raised = True
                    raise error
                return _END
            await self._wait()

    async def _stop(self) -> None:
        """Cancel the job unless it ended, and wait until it has (upstream closed)."""
        job = self._job
        if job is None or self._done:
            return
        self._rt.cancel(job)
        cancelled = False
        while not self._done:
            try:
                await self._wait()
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError


class Stream(_Inbox):
    """What `Balancer.stream` returns: an async context manager, then an async iterator."""

    def __init__(
        self,
        rt: Runtime,
        loop: asyncio.AbstractEventLoop,
        request: LLMRequest,
        timeout: float | None,
    ) -> None:
        super().__init__(rt, loop, STREAM_WINDOW)
        self._request = request
        self._timeout = timeout

    async def __aenter__(self) -> Stream:
        if self._job is not None:
            raise RuntimeError("a stream can be entered only once; call lb.stream(...) again")
        job = Job(run_stream, None, (self._request, self._timeout, self._outbox), self._finished)
        await self._start(job)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._job is None:
            raise TypeError(
                "lb.stream(...) is an async context manager: "
                "use `async with lb.stream(request) as chunks: async for chunk in chunks: ...`"
            )
        item = await self._next()
        if item is _END:
            raise StopAsyncIteration
        chunk: StreamChunk = item
        return chunk


class BatchResults(_Inbox):
    """The async iterator of one batch's results (`llmlb_actors.BatchResult` each)."""

    def __init__(
        self, rt: Runtime, loop: asyncio.AbstractEventLoop, source: AsyncIterable[Any] | None
    ) -> None:
        super().__init__(rt, loop, MAP_HANDOVER)
        self._source = source
        self._source_iter: AsyncIterator[Any] | None = None
        self._pull_task: asyncio.Task[None] | None = None

    def __aiter__(self) -> BatchResults:
        return self

    async def __anext__(self) -> BatchResult:
        item = await self._next()
        if item is _END:
            raise StopAsyncIteration
        result: BatchResult = item
        return result

    def statistics(self) -> BatchStatistics:
        """Counters of the batch right now (see `llmlb_actors.BatchResults.statistics`).

        Results on their way to this loop (at most 64) count as consumed.
        """
        stats: BatchStatistics = call_sync(self._rt, batch_statistics, self._job)
        return stats

    # the host half of a HostInput: the batch's input read on this loop
    def _pull(self, source: HostInput) -> None:
        self._pull_task = self._loop.create_task(self._pull_one(source))

    async def _pull_one(self, source: HostInput) -> None:
        if self._source_iter is None:
            assert self._source is not None
            self._source_iter = aiter(self._source)
        try:
            item = await anext(self._source_iter)
        except StopAsyncIteration:
            outcome: tuple[str, Any] = ("end", None)
        except Exception as exc:
            outcome = ("error", exc)
        else:
            outcome = ("item", item)
        with contextlib.suppress(BalancerClosedError):  # the batch ended meanwhile
            self._rt.hub.to_trio(source.deliver, outcome)

    async def _close_input(self) -> None:
        task = self._pull_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if inspect.isasyncgen(self._source_iter):
            # We started the iteration, so we close it: its clean-up runs now.
            await self._source_iter.aclose()


class BatchMap:
    """What `Balancer.map` returns: ``async with lb.map(reqs) as results: async for r in results``.

    Leaving the block cancels what is unfinished, as in trio code.
    """

    def __init__(
        self,
        rt: Runtime,
        loop: asyncio.AbstractEventLoop,
        requests: Iterable[LLMRequest] | AsyncIterable[LLMRequest],
        options: dict[str, Any],
    ) -> None:
        if not isinstance(requests, Iterable | AsyncIterable):
            raise TypeError(
                f"requests must be an iterable or async iterable of LLMRequest, "
                f"got {type(requests).__name__}"
            )
        self._rt = rt
        self._loop = loop
        self._requests = requests
        self._options = options
        self._results: BatchResults | None = None

    def __aiter__(self) -> AsyncIterator[BatchResult]:
        raise TypeError(
            "lb.map(...) is an async context manager: "
            "use `async with lb.map(requests) as results: async for r in results: ...`"
        )

    async def __aenter__(self) -> BatchResults:
        if self._results is not None:
            raise RuntimeError("a BatchMap can be entered only once; call lb.map(...) again")
        requests: Any = self._requests
        source = requests if isinstance(requests, AsyncIterable) else None
        results = self._results = BatchResults(self._rt, self._loop, source)
        if source is not None:
            requests = HostInput(results._pull, self._rt.hub.to_host)
        job = Job(run_map, None, (requests, self._options, results._outbox), results._finished)
        try:
            await results._start(job)
        except BaseException:
            await results._close_input()
            raise
        return results

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._results is not None
        try:
            await self._results._stop()
        finally:
            await self._results._close_input()


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
