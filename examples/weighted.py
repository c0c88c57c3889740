"""Weighted: smooth weighted round-robin, exact proportions in every window.

Runs against the loopback simulator: no API keys, no network. Weights 3:2:1
mean every six consecutive requests go three to "big", two to "medium" and one
to "small", interleaved (as nginx does it) rather than in bursts.
"""

from __future__ import annotations

from collections import Counter

import trio

import llmlb_actors as llmlb
from llmlb_actors.sim import SimProvider, open_simulator

WEIGHTS = {"big": 3, "medium": 2, "small": 1}


async def main() -> None:
    simulated = [
        SimProvider(name="big", protocol="openai", api_key="sk-big"),
        SimProvider(name="medium", protocol="mistral", api_key="sk-medium"),
        SimProvider(name="small", protocol="cohere", api_key="sk-small"),
    ]
    async with open_simulator(simulated) as sim:
        providers = [sim.provider_config(name, weight=w) for name, w in WEIGHTS.items()]
        async with llmlb.open_balancer(strategy="weighted", providers=providers) as lb:
            picks = []
            for n in range(12):
                resp = await lb.request(llmlb.LLMRequest(prompt=f"Request number {n}"))
                picks.append(resp.provider)

    for start in range(0, len(picks), 6):
        window = picks[start : start + 6]
        print(f"requests {start + 1:>2}-{start + 6:<2}: {' '.join(window)}")
        assert Counter(window) == Counter(WEIGHTS), window
    print("share per provider:", dict(Counter(picks)))


if __name__ == "__main__":
    trio.run(main)
