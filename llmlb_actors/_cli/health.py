"""``llmlb health``: probe every provider once. Strictly private."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._balancer import open_balancer
from .._secrets import Redactor
from .common import console, open_target
from .fleets import batch_fleet

if TYPE_CHECKING:
    import argparse

__all__ = ["run_health"]


async def run_health(args: argparse.Namespace) -> int:
    """Probe every provider once; exit status 1 if any is down."""
    async with (
        open_target(args, batch_fleet(), overrides={"health_check_interval": None}) as target,
        open_balancer(target.config) as lb,
    ):
        health = await lb.health_check()
        stats = lb.get_stats()
    from rich.table import Table

    redact = Redactor.for_balancer(target.config)
    table = Table(title=f"Health of {target.label}", title_justify="left")
    for column in ("provider", "protocol", "model", "base_url", "status", "detail"):
        table.add_column(column)
    for provider in target.config.providers:
        up = health.get(provider.name, False)
        s = stats.get(provider.name)
        detail = "" if up or s is None else (s.out_of_rotation_reason or s.last_error or "")
        table.add_row(
            provider.name,
            provider.protocol_name,
            provider.model or "",
            redact(provider.base_url or "(default)"),
            "up" if up else "DOWN",
            redact(detail),
        )
    out = console()
    out.print(table)
    down = [name for name, ok in health.items() if not ok]
    out.print(
        f"{len(health) - len(down)}/{len(health)} up"
        + (f"; down: {', '.join(down)}" if down else "")
    )
    return 1 if down else 0
