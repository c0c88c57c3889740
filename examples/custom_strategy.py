"""A custom strategy: the cheapest provider that still has headroom.

Runs against the loopback simulator: no API keys, no network. The strategy is a
plain function over read-only `ProviderState` snapshots (only the healthy
candidates for this attempt, in configuration order) that returns one of them.
Here: prefer the cheapest provider while it has fewer than two requests in
flight, and spill over to the next cheapest under load. A failed attempt is
retried on a provider not tried yet, so a failure also spills over.
"""

from __future__ import annotations

from collections import Counter

import trio

import llmlb_actors as llmlb
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator

PRICE_PER_1K_TOKENS = {"budget": 0.10, "standard": 0.50, "premium": 2.00}
MAX_IN_FLIGHT = 2


def cheapest_with_headroom(states: list[llmlb.ProviderState]) -> llmlb.ProviderState:
    roomy = [s for s in states if s.in_flight < MAX_IN_FLIGHT]
    return min(roomy or states, key=lambda s: (PRICE_PER_1K_TOKENS[s.name], s.in_flight))


async def main() -> None:
    simulated = [
        SimProvider(name=name, protocol="openai", behaviour=Behaviour(latency=0.2))
        for name in PRICE_PER_1K_TOKENS
    ]
    async with open_simulator(simulated) as sim:
        providers = [sim.provider_config(name) for name in PRICE_PER_1K_TOKENS]
        async with llmlb.open_balancer(
            strategy="custom",
            custom_strategy=cheapest_with_headroom,
            providers=providers,
            retry_delay=0.01,
        ) as lb:
            one_by_one: Counter[str] = Counter()
            for n in range(4):
                resp = await lb.request(llmlb.LLMRequest(prompt=f"Quiet hour {n}"))
                one_by_one[resp.provider] += 1
            print("one at a time:      ", dict(one_by_one))
            assert one_by_one == {"budget": 4}

            burst: Counter[str] = Counter()

            async def ask(n: int) -> None:
                resp = await lb.request(llmlb.LLMRequest(prompt=f"Rush hour {n}"))
                burst[resp.provider] += 1

            async with trio.open_nursery() as nursery:
                for n in range(6):
                    nursery.start_soon(ask, n)
            print("six at once:        ", dict(burst))
            assert burst == {"budget": 2, "standard": 2, "premium": 2}

            sim.script("budget", ["503"])
            resp = await lb.request(llmlb.LLMRequest(prompt="Budget is overloaded"))
            print(f"budget answers 503: answered by {resp.provider} in {resp.attempts} attempts")
            assert resp.provider == "standard"

            cost = sum(
                PRICE_PER_1K_TOKENS[name] * (stats.total_tokens / 1000)
                for name, stats in lb.get_stats().items()
            )
            print(f"estimated cost: ${cost:.4f}")


if __name__ == "__main__":
    trio.run(main)
