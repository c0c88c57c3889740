"""Several balancers, one quota: budgets and health shared through a real redis-server.

Balancers and simulated providers run in one trio run on virtual time
(``redis_clock``); the Redis scripts are given the same clock.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio

import llmlb_actors as llmlb
from llmlb_actors import LLMRequest
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator
from llmlb_actors.testing import ZeroJitter
from tests.shared.conftest import RedisServer, shared_store

if TYPE_CHECKING:
    import pytest

REQ = LLMRequest(prompt="Write a funny dad joke.", max_tokens=16)


async def fire(lbs: list[Any], count: int) -> list[Any]:
    """``count`` requests, dealt round-robin over the balancers, all at once."""
    results: list[Any] = [None] * count

    async def one(i: int) -> None:
        try:
            results[i] = await lbs[i % len(lbs)].request(REQ)
        except llmlb.LLMLBError as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return results


def sim_providers(*names: str, **behaviour: Any) -> list[SimProvider]:
    return [
        SimProvider(name=n, protocol="openai", behaviour=Behaviour(latency=0.1, **behaviour))
        for n in names
    ]


async def open_fleet(
    stack: AsyncExitStack, sim: Any, stores: list[Any], names: tuple[str, ...], **limits: Any
) -> list[Any]:
    lbs = []
    for store in stores:
        lbs.append(
            await stack.enter_async_context(
                llmlb.open_balancer(
                    providers=[sim.provider_config(n, **limits) for n in names],
                    health_check_interval=None,
                    rng=ZeroJitter(),
                    quota_store=store,
                    request_timeout=120,
                )
            )
        )
    return lbs


async def test_two_balancers_pool_one_quota(redis_server: RedisServer, redis_clock: Any) -> None:
    async with open_simulator(sim_providers("a", rpm=600)) as sim, AsyncExitStack() as stack:
        stores = [shared_store(redis_server.url, balancer_id=f"b{i}") for i in range(2)]
        lbs = await open_fleet(stack, sim, stores, ("a",), rpm=600)
        start = trio.current_time()
        results = await fire(lbs, 60)
        elapsed = trio.current_time() - start
        assert all(s.shared and s.local_decisions == 0 for s in stores)
    assert all(isinstance(r, llmlb.LLMResponse) for r in results), results
    assert sim.stats("a").rate_limited == 0
    assert sim.stats("a").requests == 60  # nothing sent twice
    # 10 a second fleet-wide, not 10 per balancer: 60 requests take ~5-6 s.
    assert elapsed >= 5.0


async def test_without_shared_state_each_balancer_spends_the_whole_quota(
    redis_clock: Any,
) -> None:
    """The failure shared state fixes, counted: two balancers each pace to the full
    limit, so the provider sees twice its quota and refuses the excess."""
    async with open_simulator(sim_providers("a", rpm=600)) as sim, AsyncExitStack() as stack:
        lbs = [
            await stack.enter_async_context(
                llmlb.open_balancer(
                    providers=[sim.provider_config("a", rpm=600)],
                    health_check_interval=None,
                    rng=ZeroJitter(),
                    request_timeout=120,
                )
            )
            for _ in range(2)
        ]
        await fire(lbs, 60)
    assert sim.stats("a").rate_limited > 0


async def test_an_open_circuit_is_honoured_by_the_other_balancer(
    redis_server: RedisServer, redis_clock: Any
) -> None:
    async with (
        open_simulator(sim_providers("bad", "good", rpm=6000)) as sim,
        AsyncExitStack() as stack,
    ):
        sim.set_behaviour("bad", Behaviour(latency=0.1, faults={"500": 1.0}))
        stores = [shared_store(redis_server.url, balancer_id=f"b{i}") for i in range(2)]
        a, b = await open_fleet(stack, sim, stores, ("bad", "good"), rpm=6000)
        await fire([a], 12)  # a opens its circuit on "bad"
        assert a.get_stats()["bad"].circuit_state == "open"
        await trio.sleep(0.5)  # the health news goes out in the background
        before = sim.stats("bad").requests
        results = await fire([b], 10)
        assert all(isinstance(r, llmlb.LLMResponse) for r in results)
        # b never saw "bad" fail: it stayed away because a's circuit is shared.
        assert sim.stats("bad").requests - before <= 1
        assert b.get_stats()["bad"].failed_requests <= 1


async def test_retry_after_seen_by_one_is_honoured_by_all(
    redis_server: RedisServer, redis_clock: Any
) -> None:
    async with open_simulator(sim_providers("a", "b", rpm=6000)) as sim, AsyncExitStack() as stack:
        stores = [shared_store(redis_server.url, balancer_id=f"b{i}") for i in range(2)]
        lb1, lb2 = await open_fleet(stack, sim, stores, ("a", "b"), rpm=6000)
        sim.set_behaviour("a", Behaviour(latency=0.1, retry_after=20.0))
        sim.script("a", ["429"])
        await fire([lb1], 2)
        await trio.sleep(0.5)
        before = sim.stats("a").requests
        await fire([lb2], 10)
        assert sim.stats("a").requests == before  # lb2 waits out lb1's Retry-After


async def test_limits_learned_by_one_balancer_pace_the_other(
    redis_server: RedisServer, redis_clock: Any
) -> None:
    """No configured limits: the provider's headers teach one balancer its rpm, and the
    other paces to it without ever reading a header of its own first."""
    async with open_simulator(sim_providers("a", rpm=600)) as sim, AsyncExitStack() as stack:
        stores = [shared_store(redis_server.url, balancer_id=f"b{i}") for i in range(2)]
        lb1, lb2 = await open_fleet(stack, sim, stores, ("a",))
        await fire([lb1], 1)
        await trio.sleep(2)
        await fire([lb1, lb2], 40)
    assert sim.stats("a").rate_limited == 0


async def test_redis_killed_mid_run_and_restarted(
    redis_server: RedisServer, redis_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 of redis-server in the middle of a batch: every request is answered exactly
    once, the balancers fall back to a local share (one warning each) and return to
    Redis when it is back."""
    caplog.set_level(logging.INFO, logger="llmlb_actors.shared")
    async with open_simulator(sim_providers("a", rpm=600)) as sim, AsyncExitStack() as stack:
        stores = [shared_store(redis_server.url, balancer_id=f"b{i}") for i in range(2)]
        lbs = await open_fleet(stack, sim, stores, ("a",), rpm=600)
        outcome: list[Any] = []

        async def batch() -> None:
            outcome.extend(await fire(lbs, 120))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(batch)
            await trio.sleep(3)
            redis_server.kill()
            await trio.sleep(4)
            assert not any(s.shared for s in stores)
            await trio.to_thread.run_sync(redis_server.start)
            await trio.sleep(3)
            assert all(s.shared for s in stores)
    assert len(outcome) == 120
    assert all(isinstance(r, llmlb.LLMResponse) for r in outcome), outcome
    assert sim.stats("a").requests == 120  # nothing lost, nothing sent twice
    assert sim.stats("a").rate_limited == 0
    warnings = [
        r
        for r in caplog.records
        if r.name == "llmlb_actors.shared" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]  # one per balancer
    assert sum("budgets are shared" in r.getMessage() for r in caplog.records) == 2
