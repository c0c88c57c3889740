"""The front-end configurations: the balancer from asyncio code and from threads.

- ``llmlb-aio``: ``llmlb_actors.aio`` (the default runner: trio on a thread of its own,
  a batched thread-safe hand-over each way), 1 provider, driven by the same asyncio
  closed loop as ``aiohttp``.
- ``llmlb-aio-guest``: the same with ``runner="guest"`` (trio as a guest run on the
  asyncio loop): the alternative the thread was chosen over.
- ``llmlb-sync``: ``llmlb_actors.sync`` from C caller threads in a closed loop.
- ``litellm-sync``: LiteLLM's ``Router.completion`` from C caller threads.

Compare with ``llmlb-1`` (the trio front-end, same provider set-up) for what a
front-end adds, and with ``aiohttp`` for the asyncio reference.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from ._clients_asyncio import FAKE_KEY, LITELLM_OFFLINE_ENV, closed_loop
from ._clients_trio import balancer_config
from ._common import MODEL, PROMPT
from ._results import PointResult, PointSpec, Recorder

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run_frontend_point", "threaded_closed_loop"]


def _details(lb: Any) -> dict[str, Any]:
    stats = lb.get_stats().values()
    return {
        "failed_attempts": sum(s.failed_requests for s in stats),
        "retries": lb.get_totals().retries,
    }


async def _aio(spec: PointSpec, runner: str) -> PointResult:
    from llmlb_actors import LLMRequest, aio

    request = LLMRequest(prompt=PROMPT)
    async with aio.open_balancer(balancer_config(spec, 1), runner=runner) as lb:  # type: ignore[arg-type]

        async def one() -> None:
            await lb.request(request)

        return await closed_loop(spec, one, lambda: _details(lb))


class _Caller:
    """One caller thread's own bookkeeping: nothing is shared, so nothing is locked.

    (A lock around a shared `Recorder` convoys: with 64 threads on one core, a
    thread preempted while holding it stalls the others, and the loop measured
    the lock, not the client.)
    """

    __slots__ = ("busy", "completed", "errors", "first_error", "latencies")

    def __init__(self) -> None:
        self.busy = False
        self.completed = 0
        self.errors = 0
        self.first_error: str | None = None
        self.latencies: list[float] = []


def threaded_closed_loop(
    spec: PointSpec, one: Callable[[], Any], extra: Callable[[], dict[str, Any]] | None = None
) -> PointResult:
    """``one()`` from ``spec.concurrency`` threads, each calling again as soon as it returns.

    Same warm-up, window and result as the asyncio and trio loops (a
    `Recorder` times the window and computes the result); each thread keeps
    its own counts, merged at the end. With ``max_requests``, each call that
    completes in the window takes a ticket, and the one that takes the last
    ticket ends the window: exactly that many are counted, however late the
    main thread wakes.
    """
    rec = Recorder(spec)
    callers = [_Caller() for _ in range(spec.concurrency)]
    window = {"measuring": False, "stop": False}
    perf = time.perf_counter
    limit = spec.max_requests
    tickets = itertools.count()  # next() is one C call under the GIL: no lock per request
    full = threading.Event()

    def worker(me: _Caller) -> None:
        while not window["stop"]:
            me.busy = True
            t0 = perf()
            try:
                one()
            except Exception as exc:
                error: Exception | None = exc
            else:
                error = None
            seconds = perf() - t0
            me.busy = False
            me.completed += 1
            if window["measuring"]:
                ticket = next(tickets)
                if limit is None or ticket < limit:
                    me.latencies.append(seconds)
                    if error is not None:
                        me.errors += 1
                        if me.first_error is None:
                            me.first_error = f"{type(error).__name__}: {error}"[:300]
                if ticket + 1 == limit:
                    window["measuring"] = False
                    rec.end_window()
                    full.set()
            if error is not None:
                time.sleep(0.001)  # a failure raised at once must not spin

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in callers]
    for thread in threads:
        thread.start()
    time.sleep(spec.warmup_s)
    warm_target = min(spec.concurrency, spec.warmup_requests)
    while sum(c.completed for c in callers) < warm_target:
        time.sleep(0.01)
    rec.start_window()
    window["measuring"] = True
    deadline = perf() + spec.measure_s
    while not full.wait(0.01) and perf() < deadline:
        rec.in_flight_samples.append(sum(c.busy for c in callers))
    window["measuring"] = False
    rec.end_window()  # at the deadline (without max_requests, or too slow to reach it)
    details = extra() if extra is not None else {}
    # Callers finish the call they are in, then stop (the smoke test measures in its own
    # process); a slow client's stragglers are left to the worker process's exit. Their
    # counts are read once they stopped: a caller may hold a ticket it has yet to record.
    window["stop"] = True
    deadline = perf() + 10.0
    for thread in threads:
        thread.join(max(0.0, deadline - perf()))
    for caller in callers:
        rec.latencies.extend(caller.latencies)
        rec.errors += caller.errors
        rec.first_error = rec.first_error or caller.first_error
    return rec.result(details)


def _sync(spec: PointSpec) -> PointResult:
    from llmlb_actors import LLMRequest, sync

    request = LLMRequest(prompt=PROMPT)
    with sync.open_balancer(balancer_config(spec, 1)) as lb:
        return threaded_closed_loop(spec, lambda: lb.request(request), lambda: _details(lb))


def _litellm_sync(spec: PointSpec) -> PointResult:
    os.environ.update(LITELLM_OFFLINE_ENV)  # before the import: it fetches a cost map otherwise
    import litellm
    from litellm.router import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    deployments = [
        {
            "model_name": "bench",
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": spec.upstream.base_url(i),
                "api_key": FAKE_KEY,
            },
        }
        for i in range(2)
    ]
    router = Router(model_list=deployments, num_retries=0, timeout=600)
    messages = [{"role": "user", "content": PROMPT}]

    def one() -> None:
        response = router.completion(model="bench", messages=messages)
        if not response.choices:
            raise RuntimeError("no choices in the reply")

    return threaded_closed_loop(spec, one)


def run_frontend_point(spec: PointSpec) -> PointResult:
    """Measure one front-end configuration in this process."""
    if spec.config == "llmlb-aio":
        return asyncio.run(_aio(spec, "thread"))
    if spec.config == "llmlb-aio-guest":
        return asyncio.run(_aio(spec, "guest"))
    if spec.config == "llmlb-sync":
        return _sync(spec)
    if spec.config == "litellm-sync":
        return _litellm_sync(spec)
    raise ValueError(f"unknown configuration {spec.config!r}")
