"""``llmlb demo``: the balancer against simulated providers, live progress. Strictly private."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .._balancer import open_balancer
from .._models import LLMRequest
from .._secrets import Redactor
from .common import console, observer, open_target, print_provider_table
from .fleets import demo_fleet
from .progress import open_progress

if TYPE_CHECKING:
    import argparse

__all__ = ["run_demo"]

# Short timeouts and backoff so the flaky provider's hangs are cut within the
# demo's few seconds, and a short cool-down so it comes back into rotation.
DEMO_SETTINGS = {
    "global_timeout": 2.0,
    "retry_delay": 0.05,
    "max_retry_delay": 0.5,
    "failure_threshold": 3,
    "cooldown": 1.0,
    "health_check_interval": 1.0,
    "health_check_timeout": 1.0,
}


async def run_demo(args: argparse.Namespace) -> int:
    """Run prompts through the balancer against three simulated providers, one flaky."""
    if getattr(args, "scenario", "faults") == "quota":
        from .demo_quota import run_quota_demo

        return await run_quota_demo(args)
    out = console()
    async with open_target(args, demo_fleet(), sim_overrides=DEMO_SETTINGS) as target:
        sim = target.simulator
        assert sim is not None
        config = target.config
        out.print(
            f"llmlb demo: {args.requests} prompts, concurrency {args.concurrency}, "
            f"strategy {config.strategy}, seed {config.seed}, against simulated providers "
            + ", ".join(f"{p.name} ({p.protocol_name})" for p in config.providers)
            + "; gamma is flaky (12% 503s, 2% hangs cut by a 2 s timeout)."
        )
        requests = (
            LLMRequest(prompt=f"Write a one-line joke about load balancer #{i}", id=f"demo-{i}")
            for i in range(args.requests)
        )
        latencies: list[float] = []
        failed = 0
        started = trio.current_time()
        async with (
            open_balancer(config) as lb,
            open_progress(args.requests, "demo", interval=1.0, observe=observer(lb)) as progress,
        ):
            async with lb.map(requests, concurrency=args.concurrency) as results:
                async for result in results:
                    progress.advance(error=not result.ok)
                    if result.ok:
                        latencies.append(result.latency)
                    else:
                        failed += 1
            stats = lb.get_stats()
            totals = lb.get_totals()
        elapsed = trio.current_time() - started
        injected = {name: {"faults": _faults(sim.stats(name).outcomes)} for name in sim.names}
    print_provider_table(
        out,
        stats,
        totals,
        Redactor.for_balancer(config),
        title="Per provider (attempts)",
        extra=injected,
    )
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else 0
    out.print(
        f"Prompts: {len(latencies)} answered, {failed} failed, in {elapsed:.2f}s "
        f"({args.requests / max(elapsed, 1e-9):.0f}/s); latency p50 {p50:.0f} ms, "
        f"p99 {p99:.0f} ms (retries and failover included)."
    )
    return 0


def _faults(outcomes: dict[str, int]) -> str:
    shown = [f"{name}x{count}" for name, count in sorted(outcomes.items()) if name != "ok"]
    return " ".join(shown) or "-"
