"""The balancer from synchronous code: ``with sync.open_balancer(config) as lb``.

The trio balancer runs on a thread of its own; each call hands a job to it
and blocks on a lock until the trio side answers. Any number of threads may
call at once, and a thread with a running asyncio loop (a notebook cell) may
call too: nothing here touches the caller's loop. Ctrl-C in a blocked call
cancels the job upstream, waits for the trio side to finish it, then raises
`KeyboardInterrupt`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any

from .._balancer import Balancer as TrioBalancer
from ._hubs import direct
from ._jobs import Job, request_fn
from ._runtime import call_sync
from ._sync_streams import BatchIterator, Stream
from ._thread import TrioThread

if TYPE_CHECKING:
    from types import TracebackType

    from .._config import BalancerConfig, ProviderConfig
    from .._models import LLMRequest, LLMResponse
    from .._stats import BalancerTotals, ProviderStats
    from ._runtime import Runtime

__all__ = ["Balancer", "BatchIterator", "Stream", "open_balancer"]


def _release(job: Job) -> None:
    job.done = True
    job.waiter.release()


def _block(rt: Runtime, job: Job, lock: threading.Lock) -> None:
    """Wait for ``job``; on Ctrl-C cancel it upstream and wait for that, then re-raise."""
    try:
        lock.acquire()
    except BaseException:
        rt.cancel(job)
        lock.acquire()  # trio bounds this wait; a second Ctrl-C abandons it
        raise


def _run_job(rt: Runtime, job: Job) -> Any:
    lock = job.waiter = threading.Lock()
    lock.acquire()
    rt.submit(job)
    _block(rt, job, lock)
    error = job.error
    if error is not None:
        raise error
    return job.value


class Balancer:
    """The trio balancer as synchronous code uses it. Get one from `open_balancer`.

    Thread-safe: any number of threads may call it at once. Same strategies,
    retries, stats and errors as `llmlb_actors.Balancer`.
    """

    def __init__(self, runtime: TrioThread) -> None:
        self._rt = runtime
        # A balancer dropped without close() still stops its thread.
        self._finalizer = weakref.finalize(self, runtime.request_close)

    @property
    def config(self) -> BalancerConfig:
        """The configuration the balancer was opened with."""
        return self._rt.host.balancer.config

    def request(self, request: LLMRequest, *, timeout: float | None = None) -> LLMResponse:
        """Answer ``request``; see `llmlb_actors.Balancer.request` (same errors)."""
        response: LLMResponse = _run_job(
            self._rt, Job(None, request_fn, (request, timeout), _release)
        )
        return response

    def stream(self, request: LLMRequest, *, timeout: float | None = None) -> Stream:
        """``for chunk in lb.stream(req)`` (or ``with lb.stream(req) as chunks``).

        Failover happens before the first chunk (at the first ``next``);
        after it a failure raises `LLMError` with ``partial=True``. The
        upstream response is closed when the stream ends, raises, is closed
        (``close()``, leaving the ``with`` block) or is garbage-collected.
        """
        return Stream(self._rt, request, timeout)

    def map(
        self,
        requests: Iterable[LLMRequest],
        *,
        concurrency: int = 64,
        ordered: bool = False,
        buffer: int | None = None,
        timeout: float | None = None,
    ) -> BatchIterator:
        """``for result in lb.map(requests, concurrency=64)``: one `BatchResult` per item.

        As `llmlb_actors.Balancer.map`: the input is read lazily (on the
        balancer's thread), at most ``concurrency`` requests run at once and
        memory stays bounded. Stopping early (``break`` then ``close()``, or
        a ``with`` block) cancels what is unfinished.
        """
        if isinstance(requests, AsyncIterable) or not isinstance(requests, Iterable):
            raise TypeError(
                f"requests must be an iterable of LLMRequest, got {type(requests).__name__}"
            )
        options = {
            "concurrency": concurrency,
            "ordered": ordered,
            "buffer": buffer,
            "timeout": timeout,
        }
        return BatchIterator(self._rt, requests, options)

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

    def health_check(self) -> dict[str, bool]:
        """Probe every provider now, concurrently; returns ``{name: healthy}``."""
        result: dict[str, bool] = _run_job(
            self._rt, Job(None, TrioBalancer.health_check, (), _release)
        )
        return result

    def add_provider(self, config: ProviderConfig) -> None:
        """Start a provider at runtime."""
        _run_job(self._rt, Job(None, TrioBalancer.add_provider, (config,), _release))

    def remove_provider(self, name: str) -> None:
        """Take a provider out of rotation, drain it, stop it and drop its stats."""
        _run_job(self._rt, Job(None, TrioBalancer.remove_provider, (name,), _release))

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the balancer down and wait for its thread (idempotent).

        Calls still in flight on other threads get `BalancerClosedError`.
        """
        self._finalizer.detach()
        self._rt.request_close()
        self._rt.join()
        error = self._rt.host.close_error or self._rt.crash
        if error is not None:
            self._rt.host.close_error = self._rt.crash = None
            raise error

    def __enter__(self) -> Balancer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_balancer(config: BalancerConfig | None = None, **fields: Any) -> Balancer:
    """Start a balancer on a trio thread of its own; use it in a ``with`` block.

    ``with sync.open_balancer(config) as lb: lb.request(...)``. Arguments as
    `llmlb_actors.open_balancer`. Without ``with``, call ``lb.close()``
    when done (a notebook may keep one open across cells).

    Raises:
        ConfigError: the configuration is invalid.
    """
    rt = TrioThread(config, fields, direct)
    ready = threading.Event()
    outcome: list[BaseException | None] = []

    def started(error: BaseException | None) -> None:
        outcome.append(error)
        ready.set()

    rt.launch(started, lambda: None)
    try:
        ready.wait()
    except BaseException:
        ready.wait()
        if outcome and outcome[0] is None:
            rt.request_close()
        rt.join()
        raise
    error = outcome[0]
    if error is not None:
        rt.join()
        raise error
    return Balancer(rt)
