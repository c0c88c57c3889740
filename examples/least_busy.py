"""Least-busy: each request goes to the provider with the fewest requests in flight.

Runs against the loopback simulator: no API keys, no network. Six workers keep
requests coming; the fast provider finishes its requests sooner, so it is
less busy more often and ends up answering most of them, without the balancer
ever measuring latency.
"""

from __future__ import annotations

from collections import Counter

import trio

import llmlb_actors as llmlb
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator

LATENCY = {"fast": 0.01, "medium": 0.05, "slow": 0.15}


async def main() -> None:
    simulated = [
        SimProvider(name=name, protocol="openai", behaviour=Behaviour(latency=seconds))
        for name, seconds in LATENCY.items()
    ]
    async with open_simulator(simulated) as sim:
        providers = [sim.provider_config(name) for name in LATENCY]
        async with llmlb.open_balancer(strategy="least-busy", providers=providers) as lb:
            requests = (llmlb.LLMRequest(prompt=f"Task {n}") for n in range(60))
            picks: Counter[str] = Counter()
            async with lb.map(requests, concurrency=6) as results:
                async for result in results:
                    assert result.response is not None, result.error
                    picks[result.response.provider] += 1
            answered = {name: s.successful_requests for name, s in lb.get_stats().items()}

    for name, seconds in LATENCY.items():
        print(f"{name:<6} ({seconds * 1000:>3.0f} ms): {picks[name]:>2} requests")
    assert answered == dict(picks)
    assert picks["fast"] > picks["slow"], picks


if __name__ == "__main__":
    trio.run(main)
