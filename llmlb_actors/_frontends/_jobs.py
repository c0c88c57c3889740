"""The trio side of the front-ends: one balancer, and one trio task per caller operation.

A host (asyncio task, caller thread) describes an operation as a `Job` and
hands it to `the trio side (`_host.BalancerHost.spawn`)`; the job runs in a trio task calling the
public trio `Balancer` API, under a cancel scope so the host can cancel it
exactly as trio code would cancel a call, and its outcome goes back to the
host through the hub. Calls (``lb.request`` and the like) run on a pool of
worker tasks, each keeping one cancel scope across calls; streams and
batches get a task each. Stream chunks and batch results travel through an
`Outbox` with credit-based flow control, so a slow host consumer pauses the
producer instead of growing a buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._errors import BalancerClosedError, LLMError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._balancer import Balancer
    from .._batch import BatchStatistics
    from .._models import LLMRequest, LLMResponse

__all__ = [
    "HostInput",
    "Job",
    "JobHost",
    "Outbox",
    "batch_statistics",
    "cancel_job",
    "request_fn",
    "run_map",
    "run_stream",
]


class JobHost(Protocol):
    """What a job's runner uses of the trio side (`_host.BalancerHost`)."""

    @property
    def balancer(self) -> Balancer: ...

    def opened(self, job: Job) -> None: ...

    def finish(self, job: Job) -> None: ...


class Job:
    """One operation a host asked for, and its outcome.

    The trio side writes ``value``/``error``/``opened`` and then hands
    ``on_done`` (and, for streams and batches, ``on_open``) to the host;
    the host reads the outcome only after that. ``waiter`` is the host's.
    ``runner`` is ``None`` for a call: ``value = await fn(lb, *args)`` on a
    call worker (or, through `_host.BalancerHost.call_now`, ``fn(lb, *args)``).
    """

    __slots__ = (
        "args",
        "cancel_requested",
        "done",
        "error",
        "fn",
        "on_done",
        "on_open",
        "opened",
        "results",
        "runner",
        "scope",
        "value",
        "waiter",
    )

    def __init__(
        self,
        runner: Callable[[JobHost, Job], Awaitable[None]] | None,
        fn: Any,
        args: tuple[Any, ...],
        on_done: Callable[[Job], object],
    ) -> None:
        self.runner = runner
        self.fn = fn
        self.args = args
        self.on_done = on_done
        self.on_open: Callable[[Job], object] | None = None
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False
        self.opened = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.results: Any = None
        self.waiter: Any = None
        self.done = False
        """Host side: set by the host's ``on_done`` (the host reads only its own flag)."""


def cancel_job(job: Job) -> None:
    """Trio side: cancel the job as trio code cancels a call (its scope), or before it starts."""
    job.cancel_requested = True
    if job.scope is not None:
        job.scope.cancel()


async def request_fn(lb: Balancer, request: LLMRequest, timeout: float | None) -> LLMResponse:
    """``lb.request`` as a job's ``fn`` (the other methods are used unbound: ``Balancer.x``)."""
    return await lb.request(request, timeout=timeout)


def batch_statistics(_lb: Balancer, job: Job) -> BatchStatistics:
    """A running batch job's ``results.statistics()`` (for `_host.BalancerHost.call_now`)."""
    assert job.results is not None
    stats: BatchStatistics = job.results.statistics()
    return stats


class Outbox:
    """The trio end of a bounded hand-over of items to the host.

    The host starts with ``capacity`` credits and returns them as it takes
    items; with none left, `put` waits. So at most ``capacity`` items are
    ever on their way or waiting on the host side.
    """

    __slots__ = ("_credit", "_room", "push", "to_host")

    def __init__(self, capacity: int) -> None:
        self._credit = capacity
        self._room: trio.Event | None = None
        self.push: Callable[[Any], object] = _unset
        self.to_host: Callable[[Callable[[Any], object], Any], None] = _unset_path

    async def put(self, item: Any) -> None:
        while self._credit <= 0:
            room = self._room = trio.Event()
            await room.wait()
        self._credit -= 1
        self.to_host(self.push, item)

    def add_credit(self, n: int) -> None:
        """Trio side: the host took ``n`` items."""
        self._credit += n
        room, self._room = self._room, None
        if room is not None:
            room.set()


def _unset(_: Any) -> None:
    raise AssertionError("Outbox.push was not set by the host")


def _unset_path(_fn: Callable[[Any], object], _arg: Any) -> None:
    raise AssertionError("Outbox.to_host was not set by the host")


class HostInput:
    """A trio-side async iterator over an async iterable that lives on the host.

    Each ``__anext__`` asks the host to pull one item (``pull(self)``, run on
    the host) and waits for `deliver`. The batch admits before it pulls, so
    the host's iterable is read only when there is room.
    """

    __slots__ = ("_event", "_outcome", "_pull", "_to_host")

    def __init__(
        self,
        pull: Callable[[HostInput], object],
        to_host: Callable[[Callable[[Any], object], Any], None],
    ) -> None:
        self._pull = pull
        self._to_host = to_host
        self._event: trio.Event | None = None
        self._outcome: tuple[str, Any] = ("end", None)

    def __aiter__(self) -> HostInput:
        return self

    async def __anext__(self) -> Any:
        event = self._event = trio.Event()
        self._to_host(self._pull, self)
        await event.wait()
        kind, value = self._outcome
        if kind == "item":
            return value
        if kind == "error":
            raise value
        raise StopAsyncIteration

    def deliver(self, outcome: tuple[str, Any]) -> None:
        """Trio side: the host pulled ``("item", x)``, ``("end", None)`` or ``("error", exc)``."""
        self._outcome = outcome
        if self._event is not None:
            self._event.set()


# -- runners: each runs one job as a trio task ------------------------------------------------


async def run_stream(host: JobHost, job: Job) -> None:
    """Open ``lb.stream`` (failover happens here), then pump its chunks to the host."""
    request, timeout, outbox = job.args
    parts: list[str] = []
    try:
        with trio.CancelScope() as scope:
            job.scope = scope
            if job.cancel_requested:
                scope.cancel()
            try:
                async with host.balancer.stream(request, timeout=timeout) as chunks:
                    host.opened(job)
                    async for chunk in chunks:
                        if chunk.delta:
                            parts.append(chunk.delta)
                        await outbox.put(chunk)
            except Exception as exc:
                job.error = exc
    except trio.Cancelled:
        if job.opened:
            job.error = LLMError(
                "stream broken: the balancer was shut down before the stream ended",
                retryable=True,
                kind="cancelled",
                partial=True,
                partial_text="".join(parts),
            )
        else:
            job.error = BalancerClosedError("the balancer was shut down")
        raise
    finally:
        host.finish(job)


async def run_map(host: JobHost, job: Job) -> None:
    """Run ``lb.map`` and pump its results to the host."""
    requests, options, outbox = job.args
    try:
        with trio.CancelScope() as scope:
            job.scope = scope
            if job.cancel_requested:
                scope.cancel()
            try:
                async with host.balancer.map(requests, **options) as results:
                    job.results = results
                    host.opened(job)
                    async for result in results:
                        await outbox.put(result)
            except Exception as exc:
                job.error = exc
    except trio.Cancelled:
        job.error = BalancerClosedError("the balancer was shut down")
        raise
    finally:
        host.finish(job)
