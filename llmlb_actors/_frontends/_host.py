"""The trio side of one front-end balancer: the trio `Balancer`, its callers' tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .._balancer import open_balancer
from .._errors import BalancerClosedError
from .._groups import collapse_group

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._balancer import Balancer
    from ._hubs import Hub
    from ._jobs import Job

__all__ = ["BalancerHost"]

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
