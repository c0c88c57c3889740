"""The closed loop on trio: exactly C worker tasks, each sending its next request when one ends.

No limiter or semaphore sits between the workers and the client under test:
a load generator that awaits a `CapacityLimiter` before each request can cap
real concurrency far below C. The result
reports the concurrency actually achieved (``littles_l``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from ._profiling import WindowProfiler
from ._results import PointResult, PointSpec, Recorder

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["closed_loop"]


async def closed_loop(
    spec: PointSpec,
    one: Callable[[], Awaitable[Any]],
    extra: Callable[[], dict[str, Any]] | None = None,
    probe: Callable[[], dict[str, float]] | None = None,
) -> PointResult:
    """Run ``one()`` in a closed loop at ``spec.concurrency``; measure one window.

    ``one`` returns ``None`` for a whole response, or ``(ttfc_seconds, chunks)``
    for a stream. ``extra`` is read once at the end of the window, ``probe``
    every 10 ms during it (means and maxima are reported).
    """
    rec = Recorder(spec)
    rec.probe = probe
    warm = trio.Event()
    full = trio.Event()
    rec.on_warm = warm.set
    rec.on_full = full.set
    perf = time.perf_counter
    checkpoint = trio.lowlevel.checkpoint

    async def worker() -> None:
        while True:
            rec.started()
            t0 = perf()
            try:
                stream = await one()
            except Exception as exc:
                rec.finished(perf() - t0, exc, None)
                await checkpoint()  # a failure raised before any await must not spin
            else:
                rec.finished(perf() - t0, None, stream)

    async def sample() -> None:
        while True:
            await trio.sleep(0.01)
            rec.sample()

    profiler = WindowProfiler(spec.profile)
    async with trio.open_nursery() as nursery:
        for _ in range(spec.concurrency):
            nursery.start_soon(worker)
        await trio.sleep(spec.warmup_s)
        await warm.wait()
        profiler.start()
        rec.start_window()
        nursery.start_soon(sample)
        with trio.move_on_after(spec.measure_s):
            await full.wait()
        rec.end_window()
        profiler.stop()
        details = extra() if extra is not None else {}
        nursery.cancel_scope.cancel()
    return rec.result(details)
