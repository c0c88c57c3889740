"""``llmlb demo --scenario quota``: pooled quota without 429s. Strictly private.

Three simulated providers with quotas (rpm 600, 600 and 300: a pooled 1,500
requests a minute, each enforced as a rolling 1-second window). The balancer
knows the first two limits from its config and learns the third from the
provider's own rate-limit headers; every prompt is sent only when a budget
admits it, so the upstream 429 column stays at zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import trio

from .._balancer import open_balancer
from .._models import LLMRequest
from .._secrets import Redactor
from .common import console, open_target, print_provider_table
from .fleets import quota_fleet
from .progress import open_progress

if TYPE_CHECKING:
    import argparse

    from .._config import BalancerConfig
    from .._stats import ProviderStats

__all__ = ["run_quota_demo"]

#: What the balancer is told: alpha and beta's limits; gamma's it learns from headers.
CONFIGURED_RPM = {"alpha": 600, "beta": 600}


def _with_limits(config: BalancerConfig) -> BalancerConfig:
    providers = [
        msgspec.structs.replace(p, rpm=CONFIGURED_RPM[p.name]) if p.name in CONFIGURED_RPM else p
        for p in config.providers
    ]
    return msgspec.structs.replace(config, providers=providers)


def _limit(stats: ProviderStats) -> str:
    if stats.rpm is not None:
        return f"{stats.rpm}"
    if stats.learned_rpm is not None:
        return f"{stats.learned_rpm} (learned)"
    return "-"


async def run_quota_demo(args: argparse.Namespace) -> int:
    out = console()
    # Probing: gamma's first answer says its limits before a burst can overrun them.
    overrides = {"health_check_interval": None, "quota_probe": True}
    strategy = args.strategy or "quota"
    async with open_target(args, quota_fleet(), sim_overrides=overrides) as target:
        sim = target.simulator
        config = target.config
        if args.strategy is None:
            config = msgspec.structs.replace(config, strategy=strategy)
        if sim is not None:
            config = _with_limits(config)
        pooled = sum(sim.provider(n).behaviour.rpm or 0 for n in sim.names) if sim else 0
        out.print(
            f"llmlb demo --scenario quota: {args.requests} prompts, concurrency "
            f"{args.concurrency}, strategy {config.strategy}, against "
            + ", ".join(
                f"{p.name} ({p.protocol_name}, rpm {sim.provider(p.name).behaviour.rpm})"
                if sim
                else p.name
                for p in config.providers
            )
            + (
                f" — pooled {pooled:,} rpm. alpha and beta's limits are configured; "
                "gamma's are learned from its headers."
                if sim
                else ""
            )
        )
        requests = (
            LLMRequest(prompt=f"One line on pacing to a quota, #{i}", max_tokens=32, id=f"q-{i}")
            for i in range(args.requests)
        )
        failed = 0
        started = trio.current_time()
        async with (
            open_progress(args.requests, "demo", interval=1.0) as progress,
            open_balancer(config) as lb,
        ):
            async with lb.map(requests, concurrency=args.concurrency) as results:
                async for result in results:
                    progress.advance(error=not result.ok)
                    failed += not result.ok
            stats = lb.get_stats()
            totals = lb.get_totals()
        elapsed = trio.current_time() - started
        upstream = {n: sim.stats(n).rate_limited for n in sim.names} if sim else {}
    extra = {
        name: {
            "rpm": _limit(s),
            "waited": str(s.throttled),
            "429s": str(upstream.get(name, s.rate_limited)),
        }
        for name, s in stats.items()
    }
    print_provider_table(
        out,
        stats,
        totals,
        Redactor.for_balancer(config),
        title="Per provider (attempts)",
        extra=extra,
    )
    rate = (args.requests - failed) / max(elapsed, 1e-9) * 60
    share = f" = {rate / pooled:.0%} of the pooled {pooled:,} rpm" if pooled else ""
    out.print(
        f"Prompts: {args.requests - failed} answered, {failed} failed, in {elapsed:.1f}s "
        f"({rate:,.0f} a minute{share}); {totals.quota_waits} waited for a budget "
        f"({totals.quota_wait_seconds:.1f} s in all); upstream 429s: "
        f"{sum(upstream.values()) if upstream else sum(s.rate_limited for s in stats.values())}."
    )
    return 0
