"""Streams and batches for synchronous code: items handed over from the trio thread."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from .._batch import BatchResult
from .._errors import BalancerClosedError
from .._models import StreamChunk
from ._hubs import direct
from ._jobs import Job, Outbox, batch_statistics, run_map, run_stream
from ._runtime import call_sync

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType
    from typing import Self

    from .._batch import BatchStatistics
    from .._models import LLMRequest
    from ._runtime import Runtime

__all__ = ["BatchIterator", "Stream"]

#: Chunks of one stream on their way to (or waiting for) the consumer, at most.
STREAM_WINDOW = 64
#: Results of one batch between the trio side and the consumer, at most (beyond the
#: batch's own ``concurrency + buffer`` window).
MAP_HANDOVER = 64


_END = object()

T = TypeVar("T")


class _Inbox:
    """A consumer thread's end of an `Outbox` (pushes arrive on the trio thread).

    The trio side holds this object (its bound methods), never the stream or
    batch the user holds: so a stream dropped mid-way is collected, and its
    ``__del__`` can cancel the job.
    """

    def __init__(self, rt: Runtime, capacity: int) -> None:
        self.rt = rt
        self._mutex = threading.Lock()
        self._items: deque[Any] = deque()
        self._waiter: threading.Lock | None = None
        self._taken = 0
        self._credit_batch = max(1, capacity // 2)
        self.outbox = Outbox(capacity)
        self.outbox.push = self._push
        self.outbox.to_host = direct
        self.job: Job | None = None
        self._open = False
        self._done = False
        self._error_raised = False

    # trio thread
    def _push(self, item: Any) -> None:
        with self._mutex:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.release()

    def _opened(self, _job: Job) -> None:
        with self._mutex:
            self._open = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.release()

    def finished(self, job: Job) -> None:
        with self._mutex:
            job.done = True
            self._done = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.release()

    # consumer thread
    def _wait(self, ready: Callable[[], object]) -> None:
        """Block until ``ready()``; on Ctrl-C stop the job (upstream closed), then re-raise."""
        while True:
            with self._mutex:
                if ready():
                    return
                waiter = self._waiter = threading.Lock()
                waiter.acquire()
            try:
                waiter.acquire()
            except BaseException:
                self.stop()
                raise

    def start(self, job: Job) -> None:
        self.job = job
        job.on_open = self._opened
        self.rt.submit(job)
        self._wait(lambda: self._open or self._done)
        if not self._open:
            raise job.error or BalancerClosedError("the balancer is closed")

    def next(self) -> Any:
        """The next item, `_END` at the end; raises the job's error once (after its items)."""
        try:
            self._wait(lambda: self._items or self._done)
        except BaseException:
            self.stop()
            raise
        if self._items:
            item = self._items.popleft()
            self._taken += 1
            if self._taken >= self._credit_batch:
                taken, self._taken = self._taken, 0
                with contextlib.suppress(BalancerClosedError):  # the job ended meanwhile
                    self.rt.hub.to_trio(self.outbox.add_credit, taken)
            return item
        assert self.job is not None
        error = self.job.error
        if error is not None and not self._error_raised:
            self._error_raised = True
            raise error
        return _END

    def stop(self) -> None:
        """Cancel the job unless it ended, and wait until it has (upstream closed)."""
        job = self.job
        if job is None or self._done:
            return
        self.rt.cancel(job)
        self._wait(lambda: self._done)

    def abandon(self) -> None:
        """Cancel the job without waiting (from ``__del__``, on any thread)."""
        job = self.job
        if job is not None and not self._done:
            self.rt.cancel(job)


class _Handover(Generic[T]):
    """Items of one job, iterated on the consumer's thread (and a context manager)."""

    def __init__(
        self, rt: Runtime, window: int, run: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self._inbox = _Inbox(rt, window)
        self._run = run
        self._args = args

    def _ensure_started(self) -> None:
        inbox = self._inbox
        if inbox.job is None:
            inbox.start(Job(self._run, None, (*self._args, inbox.outbox), inbox.finished))

    def __enter__(self) -> Self:
        self._ensure_started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        self._ensure_started()
        item = self._inbox.next()
        if item is _END:
            raise StopIteration
        return cast("T", item)

    def close(self) -> None:
        """Stop now: the job's requests are cancelled (and closed) before this returns."""
        self._inbox.stop()

    def __del__(self) -> None:
        inbox = getattr(self, "_inbox", None)  # None if __init__ did not finish
        if inbox is not None:
            inbox.abandon()


class Stream(_Handover[StreamChunk]):
    """What `Balancer.stream` returns: an iterator of `StreamChunk` (and a context manager)."""

    def __init__(self, rt: Runtime, request: LLMRequest, timeout: float | None) -> None:
        super().__init__(rt, STREAM_WINDOW, run_stream, (request, timeout))

    def close(self) -> None:
        """Stop the stream now: the upstream response is closed before this returns."""
        self._inbox.stop()


class BatchIterator(_Handover[BatchResult]):
    """What `Balancer.map` returns: an iterator of `BatchResult` (and a context manager)."""

    def __init__(self, rt: Runtime, requests: Iterable[Any], options: dict[str, Any]) -> None:
        super().__init__(rt, MAP_HANDOVER, run_map, (requests, options))

    def statistics(self) -> BatchStatistics:
        """Counters of the batch right now (results on their way here count as consumed)."""
        self._ensure_started()
        stats: BatchStatistics = call_sync(self._inbox.rt, batch_statistics, self._inbox.job)
        return stats

    def close(self) -> None:
        """Stop the batch now: unfinished requests are cancelled before this returns."""
        self._inbox.stop()
