"""The trio side of the front-ends: one balancer, and one trio task per caller operation.

A host (asyncio task, caller thread) describes an operation as a `Job` and
hands it to `BalancerHost.spawn`; the job runs in a trio task calling the
public trio `Balancer` API, under a cancel scope so the host can cancel it
exactly as trio code would cancel a call, and its outcome goes back to the
host through the hub. Calls (``lb.request`` and the like) run on a pool of
worker tasks, each keeping one cancel scope across calls; streams and
batches get a task each. Stream chunks and batch results travel through an
`Outbox` with credit-based flow control, so a slow host consumer pauses the
producer instead of growing a buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .._balancer import open_balancer
from .._errors import BalancerClosedError, LLMError
from .._groups import collapse_group

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._balancer import Balancer
    from .._batch import BatchStatistics
    from .._models import LLMRequest, LLMResponse
    from ._hubs import Hub

__all__ = [
    "BalancerHost",
    "HostInput",
    "Job",
    "Outbox",
    "batch_statistics",
    "cancel_job",
    "request_fn",
    "run_map",
    "run_stream",
]


class Job:
    """One operation a host asked for, and its outcome.

    The trio side writes ``value``/``error``/``opened`` and then hands
    ``on_done`` (and, for streams and batches, ``on_open``) to the host;
    the host reads the outcome only after that. ``waiter`` is the host's.
    ``runner`` is ``None`` for a call: ``value = await fn(lb, *args)`` on a
    call worker (or, through `BalancerHost.call_now`, ``fn(lb, *args)``).
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
        runner: Callable[[BalancerHost, Job], Awaitable[None]] | None,
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
    """A running batch job's ``results.statistics()`` (for `BalancerHost.call_now`)."""
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


async def run_stream(host: BalancerHost, job: Job) -> None:
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


async def run_map(host: BalancerHost, job: Job) -> None:
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


# -- the balancer's trio side -------------------------------------------------------------------

#: Call workers kept parked after a burst; beyond this many, a worker ends when idle.
_MAX_IDLE_WORKERS = 1024


class _CallWorker:
    __slots__ = ("next", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.next: Job | None = None


class BalancerHost:
    """Trio side of one front-end balancer: the trio `Balancer` and its callers' tasks.

    Job tasks run in a nursery *around* the balancer, as callers' tasks do
    around ``open_balancer`` in trio code: when the balancer closes, calls in
    flight are answered with `BalancerClosedError` by the balancer itself,
    then whatever still runs (a stream waiting for its consumer, a request
    waiting out a backoff) is cancelled.
    """

    def __init__(self, hub: Hub, config: Any, options: dict[str, Any]) -> None:
        self.hub = hub
        self._config = config
        self._options = options
        self._lb: Balancer | None = None
        self._jobs: trio.Nursery | None = None
        self._idle: list[_CallWorker] = []
        self._closing = trio.Event()
        self.closed = False
        self.close_error: BaseException | None = None

    @property
    def balancer(self) -> Balancer:
        assert self._lb is not None
        return self._lb

    async def serve(self, started: Callable[[BaseException | None], object]) -> None:
        """Run the balancer until `close`; ``started(None)`` once it takes requests.

        A failure to start (a `ConfigError`) goes to ``started``; one while
        closing is kept in ``close_error`` for the host to raise.
        """
        told = False
        try:
            async with trio.open_nursery() as jobs:
                try:
                    async with open_balancer(self._config, **self._options) as lb:
                        self._lb = lb
                        self._jobs = jobs
                        told = True
                        started(None)
                        await self._closing.wait()
                finally:
                    self.closed = True
                    jobs.cancel_scope.cancel()
        except BaseException as exc:
            error = collapse_group(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if not told:
                started(error)
            elif not isinstance(error, trio.Cancelled):
                self.close_error = error
            if isinstance(error, trio.Cancelled | KeyboardInterrupt | SystemExit):
                raise

    def close(self) -> None:
        """Trio side: leave the balancer's block (its shutdown answers what is in flight)."""
        self._closing.set()

    # -- job hand-over (trio side) ---------------------------------------------------------

    def spawn(self, job: Job) -> None:
        if self.closed or self._jobs is None:
            self.fail(job)
        elif job.runner is not None:
            self._jobs.start_soon(job.runner, self, job)
        elif self._idle:
            worker = self._idle.pop()
            worker.next = job
            trio.lowlevel.reschedule(worker.task)
        else:
            self._jobs.start_soon(self._call_worker, job)

    async def _call_worker(self, job: Job | None) -> None:
        """Run calls one after another, parked in between.

        A task and a cancel scope per call cost about as much as the
        balancer's own hop (measured: ~9 µs of ~20); a worker keeps one scope
        for as long as none of its calls is cancelled. `cancel_job` reaches a
        call only while ``job.scope`` is set, i.e. while this worker runs it.
        """
        worker = _CallWorker(trio.lowlevel.current_task())
        lb = self.balancer
        while job is not None:
            try:
                with trio.CancelScope() as scope:
                    while job is not None:
                        job.scope = scope
                        if job.cancel_requested:
                            scope.cancel()
                        try:
                            job.value = await job.fn(lb, *job.args)
                        except Exception as exc:
                            job.error = exc
                        self.finish(job)
                        job = None
                        job = await self._park(worker)
            except trio.Cancelled:
                # Not this worker's scope: the balancer is shutting down around it.
                if job is not None:
                    job.error = BalancerClosedError("the balancer was shut down")
                    self.finish(job)
                raise
            if job is not None:  # its caller cancelled it; the scope is spent
                self.finish(job)
                job = await self._park(worker)

    async def _park(self, worker: _CallWorker) -> Job | None:
        """Wait for the next call (``None``: no more, the worker ends)."""
        if self.closed or len(self._idle) >= _MAX_IDLE_WORKERS:
            return None
        self._idle.append(worker)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._idle.remove(worker)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        job, worker.next = worker.next, None
        return job

    def call_now(self, job: Job) -> None:
        """Run a synchronous balancer method (``get_stats``...) here and answer at once.

        The answer is called here, not handed over: the host is blocked
        waiting for it (its ``on_done`` must be thread-safe, e.g. a lock).
        Observation works after the balancer closed, as in trio code.
        """
        if self._lb is None:
            job.error = BalancerClosedError("the balancer is closed")
        else:
            try:
                job.value = job.fn(self._lb, *job.args)
            except Exception as exc:
                job.error = exc
        job.on_done(job)

    def fail(self, job: Job) -> None:
        job.error = BalancerClosedError("the balancer is closed")
        self.finish(job)

    def opened(self, job: Job) -> None:
        job.opened = True
        on_open = job.on_open
        if on_open is not None:
            self.hub.to_host(on_open, job)

    def finish(self, job: Job) -> None:
        job.scope = None
        self.hub.to_host(job.on_done, job)
