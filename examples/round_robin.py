"""Round-robin over three providers that speak three different wire protocols.

Runs against the loopback simulator: no API keys, no network. Each request goes
to the next provider in configuration order; the usage of every answer is
parsed from that provider's own wire format (OpenAI, Anthropic, Gemini).
"""

from __future__ import annotations

import trio

import llmlb_actors as llmlb
from llmlb_actors.sim import SimProvider, open_simulator

SIMULATED = [
    SimProvider(name="openai", protocol="openai", api_key="sk-demo"),
    SimProvider(name="claude", protocol="anthropic", api_key="sk-ant-demo"),
    SimProvider(name="gemini", protocol="gemini", api_key="demo-key"),
]


async def main() -> None:
    async with open_simulator(SIMULATED) as sim:
        providers = [sim.provider_config(p.name) for p in SIMULATED]
        async with llmlb.open_balancer(strategy="round-robin", providers=providers) as lb:
            for n in range(6):
                resp = await lb.request(llmlb.LLMRequest(prompt=f"Name a prime number, try {n}"))
                print(
                    f"request {n + 1}: {resp.provider:<7} {resp.model:<11} "
                    f"tokens={resp.usage.total_tokens:<3} {resp.content!r}"
                )

            # Streams rotate too: this one goes to the provider after the last request's.
            request = llmlb.LLMRequest(prompt="Stream a short story", system="Be brief")
            async with lb.stream(request) as chunks:
                parts = [chunk async for chunk in chunks]
            last = parts[-1]
            print(
                f"stream from {last.provider}: {''.join(c.delta for c in parts)!r} "
                f"({len(parts)} chunks, finish={last.finish_reason})"
            )

            for name, stats in lb.get_stats().items():
                print(f"{name}: {stats.successful_requests} answered")


if __name__ == "__main__":
    trio.run(main)
