"""`Balancer.map` at scale over loopback: 100,000 prompts against the simulator."""

from __future__ import annotations

from typing import TYPE_CHECKING

import llmlb_actors as llmlb
from llmlb_actors.sim import SimProvider, open_simulator

if TYPE_CHECKING:
    from collections.abc import Iterator

TOTAL = 100_000
CONCURRENCY = 64


async def test_hundred_thousand_prompts_in_bounded_memory() -> None:
    """Memory is flat: everything held per prompt is bounded by the window at every step.

    Checked on every result, not on time: the prompts taken from the input but
    not yet handed out, the requests in flight (in the batch and in the
    balancer), the reorder buffer, and the simulator's connection count.
    """
    pulled = 0

    def prompts() -> Iterator[llmlb.LLMRequest]:
        nonlocal pulled
        for i in range(TOTAL):
            pulled += 1
            yield llmlb.LLMRequest(prompt=f"p{i}", id=str(i))

    sims = [SimProvider(name="a", protocol="openai"), SimProvider(name="b", protocol="mistral")]
    async with open_simulator(sims) as sim:
        config = llmlb.BalancerConfig(
            providers=[sim.provider_config(name) for name in sim.names],
            health_check_interval=None,
        )
        async with llmlb.open_balancer(config) as lb:
            seen = 0
            ok = 0
            worst_ahead = 0
            worst_balancer_in_flight = 0
            async with lb.map(prompts(), concurrency=CONCURRENCY, ordered=True) as results:
                window = results.statistics().window
                async for result in results:
                    assert result.index == seen  # ordered
                    seen += 1
                    ok += result.ok
                    worst_ahead = max(worst_ahead, pulled - seen)
                    worst_balancer_in_flight = max(
                        worst_balancer_in_flight, lb.get_totals().in_flight
                    )
                stats = results.statistics()
            totals = lb.get_totals()
        connections = sum(sim.stats(name).connections for name in sim.names)
        served = sum(sim.stats(name).requests for name in sim.names)

    assert seen == ok == TOTAL
    assert served == TOTAL
    assert stats.issued == stats.consumed == TOTAL
    assert stats.max_in_flight == CONCURRENCY
    assert stats.max_buffered <= window == 2 * CONCURRENCY
    assert worst_ahead <= window
    assert worst_balancer_in_flight <= CONCURRENCY
    assert totals.requests == totals.succeeded == TOTAL
    # Keep-alive: connections scale with concurrency, not with the prompt count.
    assert connections <= 2 * CONCURRENCY
