"""Latency: adaptive routing to the provider with the lowest smoothed latency.

Runs against the loopback simulator: no API keys, no network. Every provider is
tried once (unmeasured providers come first), then requests go to the fastest.
When the fastest one slows down, its smoothed latency rises past the next one's
and traffic moves there, with no configuration change.
"""

from __future__ import annotations

from collections import Counter

import trio
import trio.testing

import llmlb_actors as llmlb
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator

LATENCY = {"us-east": 0.01, "eu-west": 0.08, "ap-south": 0.2}


async def run_phase(lb: llmlb.Balancer, label: str, count: int) -> Counter[str]:
    picks: Counter[str] = Counter()
    seconds: dict[str, list[float]] = {}
    for n in range(count):
        resp = await lb.request(llmlb.LLMRequest(prompt=f"{label} {n}"))
        picks[resp.provider] += 1
        seconds.setdefault(resp.provider, []).append(resp.latency)
    print(f"{label}: {dict(picks)}")
    for name, times in seconds.items():
        print(f"  {name:<8} answered in {1000 * sum(times) / len(times):5.0f} ms on average")
    return picks


async def main() -> None:
    simulated = [
        SimProvider(name=name, protocol="openai", behaviour=Behaviour(latency=seconds))
        for name, seconds in LATENCY.items()
    ]
    async with open_simulator(simulated) as sim:
        providers = [sim.provider_config(name) for name in LATENCY]
        # seed: any random choice the strategy makes is the same on every run.
        async with llmlb.open_balancer(strategy="latency", providers=providers, seed=7) as lb:
            # Probe everyone once first, so connection set-up does not count as latency.
            print("health:", await lb.health_check())
            first = await run_phase(lb, "phase 1, us-east fastest", 60)
            assert first.most_common(1)[0][0] == "us-east", first

            sim.set_behaviour("us-east", Behaviour(latency=1.0))  # us-east degrades
            second = await run_phase(lb, "phase 2, us-east slowed to 1 s", 60)
            assert second["us-east"] <= 2, second  # the answers that showed it slowed
            assert second.most_common(1)[0][0] == "eu-west", second


if __name__ == "__main__":
    # Virtual time: the simulated latencies pass at once and exactly, so every machine,
    # however busy, sees the same latencies and the same picks (and it takes no time).
    # Leave out clock= to run on the real clock.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
