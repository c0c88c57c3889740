"""What a front-end holds: the trio side of one balancer and the hub to reach it."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from .._errors import BalancerClosedError
from ._host import BalancerHost
from ._jobs import Job, cancel_job

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._hubs import Hub

__all__ = ["Runtime", "call_sync"]


class Runtime:
    """A running trio side (guest run or thread) as the host's code uses it.

    Every method is called on the host side. ``hub`` and ``host`` are set
    once the trio side has started.
    """

    hub: Hub
    host: BalancerHost

    def submit(self, job: Job) -> None:
        """Start ``job`` on the trio side.

        Raises:
            BalancerClosedError: the trio side has ended (the job is not started).
        """
        self.hub.to_trio(self.host.spawn, job)

    def call_now(self, job: Job) -> None:
        """Run a synchronous balancer method on the trio side (``job.fn(lb, *args)``)."""
        self.hub.to_trio(self.host.call_now, job)

    def cancel(self, job: Job) -> None:
        """Cancel ``job`` upstream (a no-op once it has finished or the trio side ended)."""
        with contextlib.suppress(BalancerClosedError):
            self.hub.to_trio(cancel_job, job)

    def request_close(self) -> None:
        """Ask the trio side to close the balancer (idempotent)."""
        with contextlib.suppress(BalancerClosedError):
            self.hub.to_trio(BalancerHost.close, self.host)


def _release(job: Job) -> None:
    job.done = True
    job.waiter.release()


def call_sync(rt: Runtime, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(lb, *args)`` for a synchronous balancer method, run on the trio side.

    The caller blocks for the hand-over (microseconds: it waits behind the
    hand-overs queued before it, never behind a request). Once the trio side
    has ended nothing else touches the balancer, so it runs here.
    """
    job = Job(None, fn, args, _release)
    lock = job.waiter = threading.Lock()
    lock.acquire()
    try:
        rt.call_now(job)
    except BalancerClosedError:
        return fn(rt.host.balancer, *args)
    lock.acquire()
    if job.error is not None:
        raise job.error
    return job.value
