"""Failover: always the first healthy provider; the backup answers only when it must.

Runs against the loopback simulator: no API keys, no network. The primary
(Anthropic) is scripted to be overloaded (529) and then to go down entirely; the
backup (Gemini) takes over, and the primary is used again once it recovers.
"""

from __future__ import annotations

import trio

import llmlb_actors as llmlb
from llmlb_actors.sim import SimProvider, open_simulator

SIMULATED = [
    SimProvider(name="claude", protocol="anthropic", api_key="sk-ant-demo"),
    SimProvider(name="gemini", protocol="gemini", api_key="demo-key"),
]


async def ask(lb: llmlb.Balancer, label: str, expected: str) -> None:
    resp = await lb.request(llmlb.LLMRequest(prompt="What is the capital of France?"))
    print(f"{label:<32} answered by {resp.provider:<6} after {resp.attempts} attempt(s)")
    assert resp.provider == expected, resp


async def main() -> None:
    async with (
        open_simulator(SIMULATED) as sim,
        llmlb.open_balancer(
            strategy="failover",
            providers=[sim.provider_config("claude"), sim.provider_config("gemini")],
            retry_delay=0.01,  # keep the demo fast
            failure_threshold=2,  # two failures in a row take the primary out of rotation
            cooldown=0.5,  # and it gets a trial request half a second later
            health_check_interval=None,
        ) as lb,
    ):
        await ask(lb, "healthy primary:", "claude")

        sim.script("claude", ["529"])  # Anthropic's "overloaded_error"
        await ask(lb, "primary overloaded once:", "gemini")

        await sim.stop_provider("claude")  # connections refused from now on
        await ask(lb, "primary down:", "gemini")
        await ask(lb, "primary down, circuit open:", "gemini")
        print("claude circuit:", lb.get_stats()["claude"].circuit_state)

        await sim.restart_provider("claude")
        await trio.sleep(0.7)  # past the cooldown: the next request is a trial
        await ask(lb, "primary back after cooldown:", "claude")
        print("claude circuit:", lb.get_stats()["claude"].circuit_state)

        for name, stats in lb.get_stats().items():
            print(
                f"{name}: {stats.successful_requests} ok, {stats.failed_requests} failed, "
                f"circuit {stats.circuit_state}"
            )


if __name__ == "__main__":
    trio.run(main)
