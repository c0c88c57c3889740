"""``llmlb sim``: the simulator alone on 127.0.0.1. Strictly private."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import trio

from ..sim import serve_simulator
from .fleets import parse_providers

if TYPE_CHECKING:
    import argparse

__all__ = ["run_sim"]


async def run_sim(args: argparse.Namespace) -> int:
    """Serve the simulated providers on 127.0.0.1 until Ctrl-C."""
    providers = parse_providers(args.providers, base_port=args.port)
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(serve_simulator, providers)
        print(f"llmlb simulator: {len(providers)} providers on 127.0.0.1 (Ctrl-C to stop)")
        for p in providers:
            key = "any key" if p.api_key is None else "its key"
            print(
                f"  {p.name:<12} {p.protocol:<18} model={p.model_id:<14} "
                f"base_url={sim.base_url(p.name)}  ({key})"
            )
        print("\nA config for `llmlb --config` / `load_config` (TOML):\n")
        for p in providers:
            print("[[providers]]")
            print(f'name = "{p.name}"')
            print(f'provider = "{p.protocol}"')
            print(f'model = "{p.model_id}"')
            print(f'base_url = "{sim.base_url(p.name)}"')
            if p.api_key is not None:
                print('api_key_env = "LLMLB_SIM_KEY"  # export the key you gave in --providers')
            print()
        sys.stdout.flush()
    return 0
