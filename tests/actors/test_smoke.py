from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors.testing import Script, ZeroJitter, http_error

if TYPE_CHECKING:
    from trio.testing import MockClock


SCRIPT = Script()
script = SCRIPT.add
CALLS = SCRIPT.calls
Scripted = SCRIPT.provider


@pytest.fixture(autouse=True)
def _reset() -> None:
    SCRIPT.clear()


def providers(*names: str) -> list[llmlb.ProviderConfig]:
    return [llmlb.ProviderConfig(name=n, provider=Scripted) for n in names]


async def test_round_robin_rotates() -> None:
    async with llmlb.open_balancer(
        providers=providers("a", "b", "c"), health_check_interval=None
    ) as lb:
        got = [(await lb.request(llmlb.LLMRequest(prompt="x"))).provider for _ in range(6)]
    assert got == ["a", "b", "c", "a", "b", "c"]


async def test_backoff_then_success(autojump_clock: MockClock) -> None:
    script("a", http_error(503), http_error(503), "ok")
    async with llmlb.open_balancer(
        providers=providers("a"), health_check_interval=None, rng=ZeroJitter()
    ) as lb:
        resp = await lb.request(llmlb.LLMRequest(prompt="hi"))
    assert resp.attempts == 3
    assert trio.current_time() == 1.0 + 2.0
    assert CALLS["a"] == 3


async def test_all_fail() -> None:
    script("a", *[http_error(500)] * 10)
    async with llmlb.open_balancer(
        providers=providers("a"), health_check_interval=None, retry_delay=0
    ) as lb:
        with pytest.raises(llmlb.LoadBalancerError, match="All providers failed") as info:
            await lb.request(llmlb.LLMRequest(prompt="hi"))
        assert len(info.value.errors) == 4
        stats = lb.get_stats()["a"]
        assert stats.total_requests == 4 == stats.failed_requests


async def test_crash_reroutes(autojump_clock: MockClock) -> None:
    script("a", RuntimeError("boom"))
    async with llmlb.open_balancer(
        strategy="failover", providers=providers("a", "b"), health_check_interval=None
    ) as lb:
        resp = await lb.request(llmlb.LLMRequest(prompt="hi"))
        assert resp.provider == "b"
        stats = lb.get_stats()
        assert stats["a"].restarts == 1
        assert stats["a"].in_rotation


async def test_stream(autojump_clock: MockClock) -> None:
    async with llmlb.open_balancer(providers=providers("a"), health_check_interval=None) as lb:
        async with lb.stream(llmlb.LLMRequest(prompt="hi")) as chunks:
            text = "".join([c.delta async for c in chunks])
        assert text == "abc"
        s = lb.get_stats()["a"]
        assert s.streams_completed == 1
        assert s.successful_requests == 1
