"""Scale checks: N requests in flight at once, and a long batch with bounded memory.

``python -m benchmarks._scale '<ScaleSpec JSON>'`` runs one check in a fresh
process pinned to the client core and prints one JSON line.

* ``inflight``: N requests started at once against the simulator with 1 s of
  latency (every provider limit set above N). Memory per in-flight request is
  (highest RSS sampled while they run - RSS just before they start) / N.
* ``batch``: N requests through ``lb.map`` (or, if the batch API is missing,
  a bounded producer in this file); peak RSS is recorded after 1k, 10k, 50k
  and 100k results to show it stays flat.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from ._common import PROMPT, current_rss_kib, peak_rss_kib, pin, proc_cpu_seconds, raise_fd_limit
from ._results import PointSpec
from ._upstream import Upstream

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llmlb_actors._balancer import Balancer
    from llmlb_actors._models import LLMRequest

__all__ = ["ScaleSpec", "run_scale"]


class ScaleSpec(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    """``"inflight"`` or ``"batch"``."""
    requests: int
    upstream: Upstream
    concurrency: int = 512
    """Batch only: ``lb.map`` concurrency."""
    checkpoints: list[int] = msgspec.field(default_factory=lambda: [1_000, 10_000, 50_000])
    pin_core: int | None = None


def _balancer(spec: ScaleSpec, limit: int) -> Any:
    from llmlb_actors._balancer import open_balancer

    from ._clients_trio import balancer_config

    point = PointSpec(config="llmlb-1", concurrency=limit, upstream=spec.upstream)
    config = balancer_config(point, 1)
    config = msgspec.structs.replace(config, global_timeout=600.0, queue_size=max(1024, limit))
    return open_balancer(config)


def _request() -> LLMRequest:
    from llmlb_actors._models import LLMRequest

    return LLMRequest(prompt=PROMPT)


async def _warm(lb: Balancer, n: int = 32) -> None:
    request = _request()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(lb.request, request)


async def _inflight(spec: ScaleSpec) -> dict[str, Any]:
    n = spec.requests
    request = _request()
    async with _balancer(spec, n) as lb:
        await _warm(lb)
        actor = lb._supervisor.actors[lb.config.providers[0].name]
        gc.collect()
        baseline = current_rss_kib()
        peak_before = peak_rss_kib()
        highest = baseline
        most_running = 0
        ok = 0
        failed = 0
        first_error: str | None = None
        done = trio.Event()

        async def one() -> None:
            nonlocal ok, failed, first_error
            try:
                await lb.request(request)
            except Exception as exc:
                failed += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
            else:
                ok += 1
            if ok + failed == n:
                done.set()

        timeline: list[tuple[float, int, int, int]] = []

        async def watch() -> None:
            nonlocal highest, most_running
            t0 = time.perf_counter()
            while True:
                highest = max(highest, current_rss_kib())
                most_running = max(most_running, actor.active)
                timeline.append(
                    (round(time.perf_counter() - t0, 2), actor.active, actor.queued, ok)
                )
                await trio.sleep(0.02)

        start = time.perf_counter()
        cpu0 = time.process_time()
        upstream0 = proc_cpu_seconds(spec.upstream.pids)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            for _ in range(n):
                nursery.start_soon(one)
            await done.wait()
            nursery.cancel_scope.cancel()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        upstream_cpu = proc_cpu_seconds(spec.upstream.pids) - upstream0
        highest = max(highest, current_rss_kib())
    return {
        "kind": "inflight",
        "requests": n,
        "ok": ok,
        "failed": failed,
        "first_error": first_error,
        "seconds": seconds,
        "cpu_us_per_req": cpu / n * 1e6,
        "most_attempts_running": most_running,
        "upstream_cpu_pct": upstream_cpu / seconds * 100,
        "baseline_rss_mib": baseline / 1024,
        "highest_rss_mib": highest / 1024,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "peak_rss_before_mib": peak_before / 1024,
        "kib_per_in_flight": (highest - baseline) / n,
        "upstream_latency_s": spec.upstream.latency,
        # (seconds, attempts running, calls queued in the mailbox, succeeded), every 0.2 s
        "timeline": timeline[::10],
    }


def _inputs(n: int) -> Iterator[LLMRequest]:
    from llmlb_actors._models import LLMRequest

    for i in range(n):
        yield LLMRequest(prompt=PROMPT, id=str(i))


async def _batch(spec: ScaleSpec) -> dict[str, Any]:
    n = spec.requests
    marks = sorted({*(c for c in spec.checkpoints if c < n), n})
    rss_at: dict[str, float] = {}
    ok = 0
    failed = 0
    count = 0
    uses_map = True
    async with _balancer(spec, spec.concurrency) as lb:
        await _warm(lb)
        gc.collect()
        baseline = current_rss_kib()
        start = time.perf_counter()
        cpu0 = time.process_time()

        def record(success: bool) -> None:
            nonlocal ok, failed, count
            count += 1
            if success:
                ok += 1
            else:
                failed += 1
            if count == marks[0]:
                marks.pop(0)
                rss_at[str(count)] = peak_rss_kib() / 1024

        if hasattr(lb, "map"):
            async with lb.map(_inputs(n), concurrency=spec.concurrency) as results:
                async for result in results:
                    record(result.ok)
        else:  # before the batch API landed: a bounded producer, same memory bound
            uses_map = False
            limiter = trio.CapacityLimiter(spec.concurrency)

            async def one(request: LLMRequest) -> None:
                try:
                    await lb.request(request)
                except Exception:
                    record(False)
                else:
                    record(True)
                finally:
                    limiter.release_on_behalf_of(request)

            async with trio.open_nursery() as nursery:
                for request in _inputs(n):
                    await limiter.acquire_on_behalf_of(request)
                    nursery.start_soon(one, request)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    return {
        "kind": "batch",
        "requests": n,
        "ok": ok,
        "failed": failed,
        "uses_lb_map": uses_map,
        "concurrency": spec.concurrency,
        "seconds": seconds,
        "rps": n / seconds,
        "cpu_us_per_req": cpu / n * 1e6,
        "baseline_rss_mib": baseline / 1024,
        "peak_rss_mib_at": rss_at,
    }


def run_scale(spec: ScaleSpec) -> dict[str, Any]:
    """Run one scale check in this process."""
    if spec.kind == "inflight":
        return trio.run(_inflight, spec)
    if spec.kind == "batch":
        return trio.run(_batch, spec)
    raise ValueError(f"unknown scale check {spec.kind!r}")


def main() -> None:
    spec = msgspec.json.decode(sys.argv[1], type=ScaleSpec)
    if spec.pin_core is not None:
        pin(spec.pin_core)
    raise_fd_limit()
    sys.stdout.write(msgspec.json.encode(run_scale(spec)).decode() + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
