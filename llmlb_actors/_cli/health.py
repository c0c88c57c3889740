"""``llmlb health``: probe every provider once and say why any is down. Strictly private."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._balancer import open_balancer
from .._secrets import Redactor
from .common import console, open_target
from .fleets import default_fleet

if TYPE_CHECKING:
    import argparse

__all__ = ["run_health"]


async def run_health(args: argparse.Namespace) -> int:
    """Probe every provider once; exit status 1 if any is down."""
    async with (
        open_target(args, default_fleet(), overrides={"health_check_interval": None}) as target,
        open_balancer(target.config) as lb,
    ):
        report = await lb.health_report()
    from rich.table import Table

    redact = Redactor.for_balancer(target.config)
    table = Table(title=f"Health of {target.label}", title_justify="left")
    for column in ("provider", "protocol", "model", "base_url", "status", "probe ms", "reason"):
        table.add_column(column, justify="right" if column == "probe ms" else "left")
    for provider in target.config.providers:
        health = report.get(provider.name)
        table.add_row(
            provider.name,
            provider.protocol_name,
            provider.model or "",
            redact(provider.base_url or "(default)"),
            "up" if health is not None and health.healthy else "DOWN",
            f"{health.latency * 1000:.0f}" if health is not None and health.latency else "-",
            redact(health.reason or "") if health is not None else "not probed",
        )
    out = console()
    out.print(table)
    down = [name for name, health in report.items() if not health.healthy]
    out.print(
        f"{len(report) - len(down)}/{len(report)} up"
        + (f"; down: {', '.join(down)}" if down else "")
    )
    return 1 if down else 0
