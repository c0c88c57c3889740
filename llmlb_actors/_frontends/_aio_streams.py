"""Streams and batches for asyncio code: items handed over from the trio side, on the loop."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from .._errors import BalancerClosedError
from ._jobs import HostInput, Job, Outbox, batch_statistics, run_map, run_stream
from ._runtime import call_sync

if TYPE_CHECKING:
    from types import TracebackType

    from .._batch import BatchResult, BatchStatistics
    from .._models import LLMRequest, StreamChunk
    from ._runtime import Runtime

__all__ = ["BatchMap", "BatchResults", "Stream", "check_loop"]

#: Chunks of one stream on their way to (or waiting for) the consumer, at most.
STREAM_WINDOW = 64
#: Results of one batch between the trio side and the consumer, at most (beyond the
#: batch's own ``concurrency + buffer`` window).
MAP_HANDOVER = 64


def check_loop(rt: Runtime, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """The running loop, if it is the balancer's (answers are delivered to that one)."""
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
        check_loop(self._rt, self._loop)
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
