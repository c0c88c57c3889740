"""``llmlb bench``: throughput, latency percentiles, TTFT, distribution, errors.
Strictly private.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from .._balancer import open_balancer
from .._errors import LLMLBError, LoadBalancerError
from .._models import LLMRequest
from .._secrets import Redactor
from .._stats import percentile
from .common import console, deadline_overrides, observer, open_target
from .fleets import default_fleet
from .progress import open_progress

if TYPE_CHECKING:
    import argparse

    from .._balancer import Balancer
    from .progress import Progress

__all__ = ["run_bench"]


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.answered: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def success(self, provider: str, latency: float, ttft: float | None = None) -> None:
        self.latencies.append(latency)
        if ttft is not None:
            self.ttfts.append(ttft)
        self.answered[provider] = self.answered.get(provider, 0) + 1

    def failure(self, error: LLMLBError) -> None:
        label = type(error).__name__
        if isinstance(error, LoadBalancerError) and error.errors:
            last = error.errors[-1]
            label = f"HTTP {last.status}" if last.status is not None else last.kind
        self.errors[label] = self.errors.get(label, 0) + 1


def _ms_summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50": round(percentile(ordered, 0.50) * 1000, 3),
        "p90": round(percentile(ordered, 0.90) * 1000, 3),
        "p99": round(percentile(ordered, 0.99) * 1000, 3),
        "mean": round(sum(ordered) / len(ordered) * 1000, 3) if ordered else 0.0,
        "max": round(ordered[-1] * 1000, 3) if ordered else 0.0,
    }


async def _whole(lb: Balancer, n: int, concurrency: int, tally: _Tally, progress: Progress) -> None:
    requests = (LLMRequest(prompt=f"bench prompt {i}", id=str(i)) for i in range(n))
    async with lb.map(requests, concurrency=concurrency) as results:
        async for result in results:
            if result.response is not None:
                tally.success(result.response.provider, result.latency)
            else:
                assert result.error is not None
                tally.failure(result.error)
            progress.advance(error=not result.ok)


async def _streams(
    lb: Balancer, n: int, concurrency: int, tally: _Tally, progress: Progress
) -> None:
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            start = trio.current_time()
            first: float | None = None
            provider = ""
            try:
                async with lb.stream(LLMRequest(prompt=f"bench prompt {i}")) as chunks:
                    async for chunk in chunks:
                        if first is None and chunk.delta:
                            first = trio.current_time() - start
                        provider = chunk.provider or provider
            except LLMLBError as exc:
                tally.failure(exc)
                progress.advance(error=True)
                continue
            tally.success(provider, trio.current_time() - start, first)
            progress.advance()

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, n)):
            nursery.start_soon(worker)


async def run_bench(args: argparse.Namespace) -> int:
    """Send ``--requests`` prompts at ``--concurrency`` and report the numbers."""
    tally = _Tally()
    overrides = {"health_check_interval": None, **deadline_overrides(args)}
    async with (
        open_target(args, default_fleet(), overrides=overrides) as target,
        open_balancer(target.config) as lb,
        open_progress(
            args.requests, "bench", enabled=not args.json, observe=observer(lb)
        ) as progress,
    ):
        started = trio.current_time()
        run = _streams if args.stream else _whole
        await run(lb, args.requests, args.concurrency, tally, progress)
        elapsed = trio.current_time() - started
        stats = lb.get_stats()
    done = len(tally.latencies)
    report: dict[str, Any] = {
        "target": target.label,
        "strategy": target.config.strategy,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "stream": args.stream,
        "elapsed_s": round(elapsed, 4),
        "throughput_rps": round(args.requests / elapsed, 2) if elapsed > 0 else 0.0,
        "succeeded": done,
        "failed": sum(tally.errors.values()),
        "latency_ms": _ms_summary(tally.latencies),
        "ttft_ms": _ms_summary(tally.ttfts) if args.stream else None,
        "providers": {
            name: {
                "answered": tally.answered.get(name, 0),
                "share": round(tally.answered.get(name, 0) / done, 4) if done else 0.0,
                "attempts": s.total_requests,
                "failed_attempts": s.failed_requests,
            }
            for name, s in stats.items()
        },
        "errors": dict(sorted(tally.errors.items())),
    }
    redact = Redactor.for_balancer(target.config)
    if args.json:
        sys.stdout.write(redact(msgspec.json.encode(report).decode()) + "\n")
        return 0
    _print_report(report, redact)
    return 0


def _print_report(report: dict[str, Any], redact: Redactor) -> None:
    from rich.table import Table

    out = console()
    out.print(
        f"bench against {redact(report['target'])}: {report['requests']} requests, "
        f"concurrency {report['concurrency']}, {'streaming' if report['stream'] else 'whole'}, "
        f"strategy {report['strategy']}"
    )
    out.print(
        f"throughput {report['throughput_rps']:.1f} req/s over {report['elapsed_s']:.2f}s; "
        f"{report['succeeded']} succeeded, {report['failed']} failed"
    )
    table = Table(title="Latency (ms)", title_justify="left")
    for column in ("metric", "p50", "p90", "p99", "mean", "max"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in ("latency_ms", "ttft_ms"):
        row = report[metric]
        if row is not None:
            table.add_row(
                "time to first token" if metric == "ttft_ms" else "latency",
                *(f"{row[k]:.2f}" for k in ("p50", "p90", "p99", "mean", "max")),
            )
    out.print(table)
    providers = Table(title="Per provider", title_justify="left")
    for column in ("provider", "answered", "share", "attempts", "failed attempts"):
        providers.add_column(column, justify="left" if column == "provider" else "right")
    for name, row in report["providers"].items():
        providers.add_row(
            name,
            str(row["answered"]),
            f"{100 * row['share']:.1f}%",
            str(row["attempts"]),
            str(row["failed_attempts"]),
        )
    out.print(providers)
    if report["errors"]:
        out.print("Errors: " + ", ".join(f"{k}: {v}" for k, v in report["errors"].items()))
