"""Batch prompting: `Balancer.map` runs many requests with bounded concurrency and memory.

Usage (the only form; see `BatchMap` for why it is a context manager)::

    async with lb.map(requests, concurrency=64) as results:
        async for result in results:
            ...

Memory stays bounded whatever the input size: the input is pulled one item
at a time, at most ``concurrency`` requests run at once, and at most
``concurrency + buffer`` items are between "taken from the input" and "handed
to you". When that window is full the producer waits, so an early slow request
under ``ordered=True`` (or a slow consumer) pauses the input instead of
growing a buffer.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import trio

from ._errors import ConfigError, LLMError, LLMLBError, LoadBalancerError
from ._groups import unwrap_group
from ._models import LLMRequest, LLMResponse

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

__all__ = ["BatchMap", "BatchResult", "BatchResults", "BatchStatistics", "RequestFunction"]


class RequestFunction(Protocol):
    """What a batch calls for each item: `Balancer.request`'s signature."""

    def __call__(
        self, request: LLMRequest, /, *, timeout: float | None = None
    ) -> Awaitable[LLMResponse]: ...


class BatchResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one request of a batch: exactly one per input item.

    Attributes:
        index: position of the item in the input (0-based).
        id: the request's ``id`` (``LLMRequest.id``), if it had one.
        response: the answer, or ``None`` when the request failed.
        error: the typed failure (`LoadBalancerError` with every attempt's
            `LLMError` in ``.errors``, or `ConfigError` for an input item that
            is not an `LLMRequest`), or ``None`` on success.
        provider: the provider that answered, or the last one tried.
        attempts: attempts made (0 when the item never reached a provider).
        latency: seconds from start to outcome, retries included.
    """

    index: int
    id: str | None = None
    response: LLMResponse | None = None
    error: LLMLBError | None = None
    provider: str | None = None
    attempts: int = 0
    latency: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the request got an answer."""
        return self.response is not None

    def error_summary(self) -> dict[str, Any] | None:
        """The error as JSON-ready data (type, message, one entry per attempt), or ``None``.

        Holds provider names, statuses and provider messages; never keys.
        """
        error = self.error
        if error is None:
            return None
        attempts: list[LLMError] = error.errors if isinstance(error, LoadBalancerError) else []
        return {
            "type": type(error).__name__,
            "message": getattr(error, "message", str(error)),
            "attempts": [
                {
                    "provider": e.provider,
                    "status": e.status,
                    "kind": e.kind,
                    "retryable": e.retryable,
                    "message": e.message,
                }
                for e in attempts
            ],
        }


class BatchStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a running batch (see `BatchResults.statistics`).

    ``issued == consumed + buffered + in_flight`` always holds.
    """

    issued: int
    """Items taken from the input so far."""
    in_flight: int
    """Requests running now (never more than ``concurrency``)."""
    buffered: int
    """Finished results not yet handed to the consumer."""
    consumed: int
    """Results handed to the consumer."""
    max_in_flight: int
    """Highest ``in_flight`` seen during the run."""
    max_buffered: int
    """Highest ``buffered`` seen during the run."""
    concurrency: int
    window: int
    """Bound on ``in_flight + buffered`` (``concurrency + buffer``)."""


class BatchResults:
    """The async iterator of one batch's results. Get it from ``async with lb.map(...)``.

    Iterating yields one `BatchResult` per input item, in completion order
    (or input order with ``ordered=True``). If iterating the *input* raised,
    that exception is raised here after the results of every item taken
    before it.
    """

    def __init__(self, *, concurrency: int, window: int, ordered: bool) -> None:
        self._concurrency = concurrency
        self._window = window
        self._ordered = ordered
        self._ready: deque[BatchResult] = deque()
        self._by_index: dict[int, BatchResult] = {}
        self._issued = 0
        self._in_flight = 0
        self._consumed = 0
        self._max_in_flight = 0
        self._max_buffered = 0
        self._input_done = False
        self._input_error: Exception | None = None
        # Exactly one task ever waits on each of these: the consumer and the producer.
        self._consumer_wake: trio.Event | None = None
        self._producer_wake: trio.Event | None = None

    def statistics(self) -> BatchStatistics:
        """Counters of this batch right now."""
        return BatchStatistics(
            issued=self._issued,
            in_flight=self._in_flight,
            buffered=self._buffered,
            consumed=self._consumed,
            max_in_flight=self._max_in_flight,
            max_buffered=self._max_buffered,
            concurrency=self._concurrency,
            window=self._window,
        )

    @property
    def _buffered(self) -> int:
        return self._issued - self._in_flight - self._consumed

    # -- consumer side ----------------------------------------------------------

    def __aiter__(self) -> BatchResults:
        return self

    async def __anext__(self) -> BatchResult:
        # A ready result is returned without a schedule point: yielding per
        # result would hand over at most one result per scheduler pass and
        # starve the requests. Fairness is kept anyway:
        # the buffer holds at most ``window`` results, then this has to wait.
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            result = self._take()
            if result is not None:
                self._consumed += 1
                _wake(self._producer_wake)
                self._producer_wake = None
                return result
            if self._input_done and self._consumed == self._issued:
                error, self._input_error = self._input_error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            self._consumer_wake = event = trio.Event()
            await event.wait()

    def _take(self) -> BatchResult | None:
        if self._ordered:
            return self._by_index.pop(self._consumed, None)
        return self._ready.popleft() if self._ready else None

    # -- producer side ------------------------------------------------------------

    async def _produce(
        self,
        request_fn: RequestFunction,
        requests: Iterable[Any] | AsyncIterable[Any],
        nursery: trio.Nursery,
        timeout: float | None,
    ) -> None:
        try:
            if isinstance(requests, AsyncIterable):
                iterator = aiter(requests)
                try:
                    # Admit before pulling: an item is never taken from the input
                    # until there is room for it.
                    while True:
                        await self._admit()
                        try:
                            item = await anext(iterator)
                        except StopAsyncIteration:
                            break
                        self._start(nursery, request_fn, item, timeout)
                finally:
                    if inspect.isasyncgen(iterator):
                        # We own the iteration we started; close it so its cleanup
                        # runs now, not whenever it is garbage-collected.
                        await iterator.aclose()
            else:
                sync_iterator = iter(requests)
                try:
                    while True:
                        await self._admit()
                        try:
                            item = next(sync_iterator)
                        except StopIteration:
                            break
                        self._start(nursery, request_fn, item, timeout)
                finally:
                    if inspect.isgenerator(sync_iterator):
                        sync_iterator.close()  # e.g. a reader's open file closes now
        except Exception as exc:
            self._input_error = exc
        finally:
            self._input_done = True
            _wake(self._consumer_wake)

    async def _admit(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while self._in_flight >= self._concurrency or (
            self._issued - self._consumed >= self._window
        ):
            self._producer_wake = event = trio.Event()
            await event.wait()

    def _start(
        self, nursery: trio.Nursery, request_fn: RequestFunction, item: Any, timeout: float | None
    ) -> None:
        index = self._issued
        self._issued += 1
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        nursery.start_soon(self._run_one, request_fn, index, item, timeout)

    async def _run_one(
        self, request_fn: RequestFunction, index: int, item: Any, timeout: float | None
    ) -> None:
        start = trio.current_time()
        if isinstance(item, LLMRequest):
            try:
                response = await request_fn(item, timeout=timeout)
            except LLMLBError as exc:
                result = _failure(index, item.id, exc, trio.current_time() - start)
            else:
                result = BatchResult(
                    index=index,
                    id=item.id,
                    response=response,
                    provider=response.provider,
                    attempts=response.attempts,
                    latency=trio.current_time() - start,
                )
        else:
            error = ConfigError(
                f"item {index} is a {type(item).__name__}, not an LLMRequest",
                field=f"requests[{index}]",
            )
            result = _failure(index, None, error, 0.0)
        self._finish(result)

    def _finish(self, result: BatchResult) -> None:
        self._in_flight -= 1
        if self._ordered:
            self._by_index[result.index] = result
        else:
            self._ready.append(result)
        self._max_buffered = max(self._max_buffered, self._buffered)
        _wake(self._consumer_wake)
        self._consumer_wake = None
        _wake(self._producer_wake)
        self._producer_wake = None


def _failure(index: int, id_: str | None, error: LLMLBError, latency: float) -> BatchResult:
    errors = error.errors if isinstance(error, LoadBalancerError) else []
    return BatchResult(
        index=index,
        id=id_,
        error=error,
        provider=errors[-1].provider if errors else None,
        attempts=len(errors),
        latency=latency,
    )


def _wake(event: trio.Event | None) -> None:
    if event is not None:
        event.set()


class BatchMap:
    """What `Balancer.map` returns: an async context manager around one batch run.

    ``async with lb.map(requests) as results: async for r in results: ...``

    Why a context manager and not a bare async iterator: the batch runs its
    requests in a trio nursery, and trio forbids yielding out of a nursery
    from an async generator, because nothing guarantees the generator is
    closed (and its tasks stopped) when the consumer stops iterating. The
    ``async with`` block gives the nursery a scope: leaving it (normally,
    by ``break``, by an exception or by cancellation) cancels every request
    still running and returns only once they have all stopped. Items not yet
    taken from the input are never taken.

    Using it directly in ``async for`` raises `TypeError` with this advice.
    """

    def __init__(
        self,
        request_fn: RequestFunction,
        requests: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int,
        ordered: bool,
        buffer: int | None,
        timeout: float | None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(
                f"concurrency must be an integer >= 1, got {concurrency!r}", field="concurrency"
            )
        if buffer is None:
            buffer = concurrency
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 0:
            raise ConfigError(f"buffer must be an integer >= 0, got {buffer!r}", field="buffer")
        if not isinstance(requests, Iterable | AsyncIterable):
            raise TypeError(
                f"requests must be an iterable or async iterable of LLMRequest, "
                f"got {type(requests).__name__}"
            )
        self._request_fn = request_fn
        self._requests = requests
        self._ordered = bool(ordered)
        self._concurrency = concurrency
        self._window = concurrency + buffer
        self._timeout = timeout
        self._cm: AbstractAsyncContextManager[BatchResults] | None = None

    def __aiter__(self) -> AsyncIterator[BatchResult]:
        raise TypeError(
            "lb.map(...) is an async context manager: "
            "use `async with lb.map(requests) as results: async for r in results: ...`"
        )

    async def __aenter__(self) -> BatchResults:
        if self._cm is not None:
            raise RuntimeError("a BatchMap can be entered only once; call lb.map(...) again")
        self._cm = self._run()
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._cm is not None
        return await self._cm.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[BatchResults]:
        results = BatchResults(
            concurrency=self._concurrency, window=self._window, ordered=self._ordered
        )
        body: BaseException | None = None  # what the caller's block raised
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    results._produce, self._request_fn, self._requests, nursery, self._timeout
                )
                try:
                    yield results
                except BaseException as exc:
                    body = exc
                    raise
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            failure = unwrap_group(group, body)
        if failure is not None:
            raise failure  # outside the except clause: see unwrap_group
