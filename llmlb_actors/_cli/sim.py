"""``llmlb sim``: the simulator alone on 127.0.0.1. Strictly private.

stdout carries only the TOML config, so ``llmlb sim > sim.toml`` (or
``--write-config FILE``) gives a file ``llmlb --config`` and ``load_config``
read as is; what a person reads (the banner, the URLs) goes to stderr.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import trio

from ..sim import serve_simulator
from .errors import CommandError
from .fleets import parse_providers
from .text import plural

if TYPE_CHECKING:
    import argparse

    from ..sim import SimProvider, Simulator

__all__ = ["check_config_path", "run_sim"]


def check_config_path(path: str) -> None:
    """Refuse a ``--write-config`` path that cannot be written, before serving."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CommandError(f"--write-config {path} is a directory; give a file path")
    if not os.path.isdir(parent):
        raise CommandError(f"--write-config {path}: directory {parent} does not exist")


def config_toml(providers: list[SimProvider], sim: Simulator) -> str:
    lines = ["# llmlb sim: a config for `llmlb --config` / `load_config`", ""]
    for p in providers:
        lines += [
            "[[providers]]",
            f'name = "{p.name}"',
            f'provider = "{p.protocol}"',
            f'model = "{p.model_id}"',
            f'base_url = "{sim.base_url(p.name)}"',
        ]
        if p.api_key is not None:
            lines.append('api_key_env = "LLMLB_SIM_KEY"  # export the key you gave in --providers')
        else:
            lines.append("api_key_required = false  # it takes any key, or none")
        lines.append("")
    return "\n".join(lines)


def _write(path: str, text: str) -> None:
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)  # a reader never sees half a config
    except OSError as exc:
        raise CommandError(f"--write-config {path}: {exc.strerror or exc}") from None


async def run_sim(args: argparse.Namespace) -> int:
    """Serve the simulated providers on 127.0.0.1 until Ctrl-C."""
    providers = parse_providers(args.providers, base_port=args.port)
    if args.write_config:
        check_config_path(args.write_config)
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(serve_simulator, providers)
        toml = config_toml(providers, sim)
        if args.write_config:
            _write(args.write_config, toml)
        else:
            sys.stdout.write(toml)
            sys.stdout.flush()
        err = sys.stderr
        print(f"llmlb sim: {plural(len(providers), 'provider')} on 127.0.0.1", file=err)
        for p in providers:
            key = "any key" if p.api_key is None else "its key"
            print(
                f"  {p.name:<12} {p.protocol:<18} model={p.model_id:<14} "
                f"base_url={sim.base_url(p.name)}  ({key})",
                file=err,
            )
        if args.write_config:
            print(f"llmlb sim: config written to {args.write_config}", file=err)
        print("llmlb sim: serving until Ctrl-C", file=err, flush=True)
    return 0
