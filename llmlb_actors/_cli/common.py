"""What the ``llmlb`` subcommands share: the target (a config file or the simulator),
the run fingerprint and the stats tables. Strictly private.

Everything a command writes (terminal, output files) goes through a
`Redactor.for_balancer` of its config (`.._secrets`).

rich is imported inside the functions that draw, so ``llmlb --help`` stays fast.
"""

from __future__ import annotations

import hashlib
import random
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from .._config import BalancerConfig
from .._loading import load_config
from .._transport._settings import proxy_label
from ..sim import Simulator

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

    from rich.console import Console

    from .._balancer import Balancer
    from .._secrets import Redactor
    from .._stats import BalancerTotals, ProviderStats
    from ..sim import SimProvider

__all__ = [
    "Target",
    "config_fingerprint",
    "console",
    "deadline_overrides",
    "observer",
    "open_target",
    "print_provider_table",
    "providers_fingerprint",
    "run_seed",
]

SIMULATOR = "simulator"


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """What a command runs against, once resolved."""

    config: BalancerConfig
    label: str
    """``"simulator"`` or the config file's path."""
    simulator: Simulator | None = None


def run_seed(args: argparse.Namespace, config_seed: int | None) -> int:
    """``--seed``, else the config's seed, else a fresh one (recorded, so a run can be redone)."""
    seed: int | None = getattr(args, "seed", None)
    if seed is not None:
        return seed
    if config_seed is not None:
        return config_seed
    return random.SystemRandom().randrange(2**31)


@asynccontextmanager
async def open_target(
    args: argparse.Namespace,
    sim_providers: Iterable[SimProvider],
    *,
    sim_overrides: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AsyncIterator[Target]:
    """The balancer config from ``--config``, or a simulator started for the block.

    ``overrides`` and the command's ``--strategy`` win over the file;
    ``sim_overrides`` apply only to the simulator's config. A command with a
    ``--seed`` option always gets a seed (see `run_seed`).
    """
    fields: dict[str, Any] = dict(overrides or {})
    strategy = getattr(args, "strategy", None)
    if strategy is not None:
        fields["strategy"] = strategy

    def finish(config: BalancerConfig) -> BalancerConfig:
        if hasattr(args, "seed"):
            config = msgspec.structs.replace(config, seed=run_seed(args, config.seed))
        return config

    if getattr(args, "config", None):
        config = msgspec.structs.replace(load_config(args.config), **fields)
        yield Target(config=finish(config), label=str(args.config))
        return
    from ..sim import open_simulator

    async with open_simulator(list(sim_providers)) as sim:
        config = BalancerConfig(
            providers=[sim.provider_config(name) for name in sim.names],
            **{**dict(sim_overrides or {}), **fields},
        )
        yield Target(config=finish(config), label=SIMULATOR, simulator=sim)


def deadline_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--timeout`` and ``--max-retries`` as config overrides (they win over the file)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "timeout", None) is not None:
        overrides["request_timeout"] = args.timeout
    if getattr(args, "max_retries", None) is not None:
        overrides["max_retries"] = args.max_retries
    return overrides


def observer(lb: Balancer) -> Callable[[], tuple[int, int]]:
    """What a progress line shows of a running balancer: ``(in flight, retries)``."""

    def observe() -> tuple[int, int]:
        totals = lb.get_totals()
        return totals.in_flight, totals.retries

    return observe


_NETWORK: dict[str, object] = {
    "proxy": None,
    "trust_env": True,
    "ca_bundle": None,
    "ssl_context": None,
}


def _network_value(name: str, value: Any) -> object:
    if name == "proxy":
        return proxy_label(value)
    if name == "ssl_context":
        return "custom"
    return value


def config_fingerprint(config: BalancerConfig, *, simulated: bool) -> str:
    """A hash of everything that shapes a run, without secrets.

    Keys are left out, and so are header values (they may carry credentials);
    for simulator runs the ephemeral ports are left out too, so the same
    command gives the same fingerprint.
    """
    providers = []
    for p in config.providers:
        providers.append(
            {
                "name": p.name,
                "protocol": p.protocol_name,
                "model": p.model,
                "base_url": None if simulated else p.base_url,
                "weight": p.weight,
                "timeout": p.timeout,
                "max_retries": p.max_retries,
                "max_concurrency": p.max_concurrency,
                "mailbox_size": p.mailbox_size,
                "headers": sorted(p.headers),
                "api_version": p.api_version,
                "has_key": p.api_key is not None,
            }
        )
        if p.proxy is not None:
            providers[-1]["proxy"] = proxy_label(p.proxy)  # never its credentials
    fields = {
        name: getattr(config, name)
        for name in config.__struct_fields__
        if name not in ("providers", "custom_strategy", "transport", "seed", *_NETWORK)
    }
    # Network settings count only when set, so runs from before they existed still match.
    for name, default in _NETWORK.items():
        value = getattr(config, name)
        if value != default:
            fields[name] = _network_value(name, value)
    fields["transport"] = config.transport if isinstance(config.transport, str) else "custom"
    fields["custom_strategy"] = config.custom_strategy is not None
    fields["providers"] = providers
    digest = hashlib.sha256(msgspec.json.encode(fields, order="sorted")).hexdigest()
    return f"sha256:{digest[:16]}"


def providers_fingerprint(config: BalancerConfig, *, simulated: bool) -> str:
    """A hash of who answers and what they are asked: each provider's name, protocol,
    model, endpoint, API version and header names.

    This is a batch job's identity on the config side. Routing and pacing
    knobs (strategy, weights, timeouts, retries, concurrency) are left out:
    changing them between runs does not change what an answer means, and a
    resume with a longer ``--timeout`` must not be refused.
    """
    providers = [
        {
            "name": p.name,
            "protocol": p.protocol_name,
            "model": p.model,
            "base_url": None if simulated else p.base_url,
            "api_version": p.api_version,
            "headers": sorted(p.headers),
        }
        for p in config.providers
    ]
    digest = hashlib.sha256(msgspec.json.encode(providers, order="sorted")).hexdigest()
    return f"sha256:{digest[:16]}"


def console(file: TextIO | None = None) -> Console:
    """A rich console on stdout (plain text when it is not a terminal)."""
    from rich.console import Console

    stream = file or sys.stdout
    # rich assumes 80 columns off a terminal; logs are better with whole tables.
    width = None if stream.isatty() else 160
    return Console(file=stream, highlight=False, soft_wrap=False, width=width)


def print_provider_table(
    out: Console,
    stats: Mapping[str, ProviderStats],
    totals: BalancerTotals,
    redact: Redactor,
    *,
    title: str = "Providers",
    extra: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """The per-provider table (``tries`` counts attempts, retries included) and the totals."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # Short headers: the table should fit an 80-column terminal.
    columns = ["provider", "tries", "ok", "fail", "avg ms", "p50", "p99", "circuit"]
    extra_columns = sorted({k for row in (extra or {}).values() for k in row})
    for name in columns + extra_columns:
        if name == "provider":
            table.add_column(name, no_wrap=True)
        else:
            table.add_column(name, justify="right")
    for name, s in stats.items():
        row = [
            f"{s.name} ({s.protocol})",
            str(s.total_requests),
            str(s.successful_requests),
            str(s.failed_requests),
            f"{s.average_response_time:.1f}",
            f"{s.p50_ms:.1f}",
            f"{s.p99_ms:.1f}",
            s.circuit_state if s.in_rotation else "removed",
        ]
        row += [(extra or {}).get(name, {}).get(k, "") for k in extra_columns]
        table.add_row(*(redact(cell) for cell in row))
    out.print(table)
    out.print(
        f"Totals: {totals.requests} requests, {totals.succeeded} succeeded, "
        f"{totals.failed} failed, {totals.retries} retries, {totals.rerouted} re-routed, "
        f"{sum(s.total_tokens for s in stats.values())} tokens"
    )
