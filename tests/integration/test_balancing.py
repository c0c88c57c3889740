"""The balancer over real loopback HTTP to the simulator, with both transports.

Includes a port of the original TypeScript library's own test cases, here
against providers of three different wire protocols.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors import LLMRequest, LoadBalancerError
from llmlb_actors.testing import ZeroJitter

if TYPE_CHECKING:
    from trio.testing import MockClock

    from llmlb_actors.sim import Simulator

REQ = LLMRequest(prompt="Write a funny dad joke.")
THREE = ("first", "claude", "gemini")


def balancer(sim: Simulator, names: tuple[str, ...], transport: str, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "providers": [sim.provider_config(n) for n in names],
        "transport": transport,
        "health_check_interval": None,
        "rng": ZeroJitter(),
    }
    options.update(kw)
    return llmlb.open_balancer(**options)


# -- the original library's test cases ------------------------------------------


async def test_round_robin_rotates_first_second_third(sim: Simulator, transport: str) -> None:
    async with balancer(sim, THREE, transport) as lb:
        got = [await lb.request(REQ) for _ in range(3)]
    assert [r.provider for r in got] == list(THREE)
    assert [r.model for r in got] == ["gpt-first", "claude-sim", "gemini-sim"]
    for resp in got:
        assert resp.content.startswith(f"Simulated reply from {resp.provider}")
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        assert resp.usage.prompt_tokens == 5  # "Write a funny dad joke." has five words
        assert resp.finish_reason == "stop"


async def test_failover_answers_from_first(sim: Simulator, transport: str) -> None:
    async with balancer(sim, THREE, transport, strategy="failover") as lb:
        assert (await lb.request(REQ)).provider == "first"


async def test_custom_strategy_picking_second_is_obeyed(sim: Simulator, transport: str) -> None:
    def pick_second(states: list[llmlb.ProviderState]) -> llmlb.ProviderState:
        return states[1]

    async with balancer(
        sim, THREE, transport, strategy="custom", custom_strategy=pick_second
    ) as lb:
        assert (await lb.request(REQ)).provider == "claude"


async def test_one_failure_then_success_takes_two_upstream_calls(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    sim.script("first", ["500", "ok"])
    async with balancer(sim, ("first",), transport) as lb:
        resp = await lb.request(REQ)
    assert resp.attempts == 2
    assert sim.stats("first").requests == 2


async def test_single_always_failing_provider(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    sim.script("first", ["500"] * 4)
    async with balancer(sim, ("first",), transport) as lb:
        with pytest.raises(LoadBalancerError, match="All providers failed"):
            await lb.request(REQ)


async def test_stats_after_one_request(sim: Simulator, transport: str) -> None:
    async with balancer(sim, THREE, transport) as lb:
        await lb.request(REQ)
        stats = lb.get_stats()["first"]
    assert stats.total_requests == 1
    assert stats.successful_requests == 1
    assert stats.failed_requests == 0
    assert stats.is_healthy
    assert stats.average_response_time > 0


async def test_three_providers_healthy_at_start(sim: Simulator, transport: str) -> None:
    async with balancer(sim, THREE, transport) as lb:
        assert [p.name for p in lb.get_healthy_providers()] == list(THREE)
        assert await lb.health_check() == dict.fromkeys(THREE, True)


async def test_added_provider_appears_removed_disappears(sim: Simulator, transport: str) -> None:
    async with balancer(sim, THREE, transport) as lb:
        await lb.add_provider(sim.provider_config("second"))
        assert "second" in lb.get_stats()
        await lb.remove_provider("claude")
        assert set(lb.get_stats()) == {"first", "gemini", "second"}


# -- retry classification, one test per status class -----------------------------

RETRYABLE = ["408", "409", "429", "500", "502", "503", "504", "529", "reset", "malformed", "cut"]


@pytest.mark.parametrize("outcome", RETRYABLE)
async def test_retryable_outcomes_retry(
    sim: Simulator, transport: str, outcome: str, autojump_clock: MockClock
) -> None:
    sim.script("first", [outcome, "ok"])
    async with balancer(sim, ("first",), transport, retry_delay=0.5) as lb:
        resp = await lb.request(REQ)
    assert resp.attempts == 2
    assert resp.provider == "first"


@pytest.mark.parametrize("outcome", ["400", "422"])
async def test_request_faults_fail_fast_with_the_provider_message(
    sim: Simulator, transport: str, outcome: str
) -> None:
    sim.script("first", [outcome])
    async with balancer(sim, ("first", "second"), transport) as lb:
        with pytest.raises(LoadBalancerError, match="rejected by first") as info:
            await lb.request(REQ)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].status == int(outcome)
    assert not info.value.errors[0].retryable
    assert sim.stats("second").requests == 0


@pytest.mark.parametrize("outcome", ["401", "403", "404"])
async def test_misconfigured_provider_leaves_rotation(
    sim: Simulator, transport: str, outcome: str
) -> None:
    sim.script("first", [outcome])
    async with balancer(sim, ("first", "second"), transport, strategy="failover") as lb:
        resp = await lb.request(REQ)
        assert resp.provider == "second"
        assert [p.name for p in lb.get_healthy_providers()] == ["second"]
        assert lb.get_stats()["first"].last_error is not None


async def test_wrong_key_is_401_and_fails_over(sim: Simulator, transport: str) -> None:
    providers = [sim.provider_config("first", api_key="sk-wrong"), sim.provider_config("second")]
    async with llmlb.open_balancer(
        providers=providers, transport=transport, strategy="failover", health_check_interval=None
    ) as lb:
        resp = await lb.request(REQ)
    assert resp.provider == "second"


async def test_timeout_is_retryable(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    sim.script("first", ["hang", "ok"])
    async with balancer(sim, ("first",), transport, global_timeout=3.0, retry_delay=1.0) as lb:
        resp = await lb.request(REQ)
    assert resp.attempts == 2
    assert trio.current_time() == pytest.approx(3.0 + 1.0, abs=0.01)


async def test_connection_refused_is_retryable_and_fails_over(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    await sim.stop_provider("first")
    async with balancer(sim, ("first", "second"), transport, strategy="failover") as lb:
        resp = await lb.request(REQ)
        assert resp.provider == "second"
        assert resp.attempts == 2
        assert lb.get_stats()["first"].last_error is not None


async def test_redirects_are_not_followed(sim: Simulator, transport: str) -> None:
    sim.script("first", ["redirect"])
    async with balancer(sim, ("first", "second"), transport, strategy="failover") as lb:
        with pytest.raises(LoadBalancerError, match="not followed"):
            await lb.request(REQ)


# -- mixed protocols -------------------------------------------------------------


async def test_mixed_protocol_streams_round_robin(sim: Simulator, transport: str) -> None:
    async with balancer(sim, THREE, transport) as lb:
        for expected in THREE:
            async with lb.stream(REQ) as chunks:
                got = [c async for c in chunks]
            assert {c.provider for c in got} == {expected}
            text = "".join(c.delta for c in got)
            assert text.startswith(f"Simulated reply from {expected}")
            assert got[-1].finish_reason == "stop"
            assert got[-1].usage is not None
            assert got[-1].usage.prompt_tokens == 5
        stats = lb.get_stats()
        assert all(s.streams_completed == 1 for s in stats.values())
        assert all(s.average_ttft_ms > 0 for s in stats.values())


async def test_failover_from_failing_anthropic_to_gemini(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    sim.script("claude", ["529", "529"])
    async with balancer(sim, ("claude", "gemini"), transport, strategy="failover") as lb:
        resp = await lb.request(REQ)
        assert resp.provider == "gemini"
        assert resp.attempts == 2
        async with lb.stream(REQ) as chunks:
            got = [c async for c in chunks]
        assert {c.provider for c in got} == {"gemini"}


async def test_leaving_a_stream_early_closes_upstream(sim: Simulator, transport: str) -> None:
    async with balancer(sim, ("first",), transport) as lb:
        async with lb.stream(REQ) as chunks:
            async for _ in chunks:
                break
        await trio.testing.wait_all_tasks_blocked()
        stats = lb.get_stats()["first"]
        assert stats.in_flight == 0
        assert stats.cancelled_requests == 1
        # The provider is still good: a whole request and a full stream work after it.
        assert (await lb.request(REQ)).provider == "first"
        async with lb.stream(REQ) as chunks:
            assert (await _last(chunks)).finish_reason == "stop"


async def _last(chunks: Any) -> llmlb.StreamChunk:
    last = None
    async for chunk in chunks:
        last = chunk
    assert last is not None
    return last
