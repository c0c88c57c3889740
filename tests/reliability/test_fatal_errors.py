"""Fatal errors stop the spending: a provider that refused a request (401/403/404) is not
asked again by it, and when every provider has refused, requests fail at once with the
reasons instead of being sent. A request also ends within a default overall deadline."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator

if TYPE_CHECKING:
    from trio.testing import MockClock

REFUSED = "All providers are out of rotation"


def guarded(*names: str) -> list[SimProvider]:
    return [SimProvider(name=n, protocol="openai", api_key=f"sk-right-{n}") for n in names]


def requests_seen(sim: llmlb.sim.Simulator) -> int:
    return sum(sim.stats(name).requests for name in sim.names)


async def test_one_provider_with_a_wrong_key_is_asked_once(autojump_clock: MockClock) -> None:
    async with open_simulator(guarded("only")) as sim:
        config = sim.provider_config("only", api_key="sk-wrong-key")
        async with llmlb.open_balancer(providers=[config], max_retries=3) as lb:
            with pytest.raises(llmlb.LoadBalancerError) as info:
                await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert sim.stats("only").requests == 1  # not 4: a 401 is not retried there
            assert [e.status for e in info.value.errors] == [401]
            assert info.value.message.startswith(REFUSED)
            assert "[only] HTTP 401" in info.value.message

            # The next request is not sent at all while the refusal stands.
            with pytest.raises(llmlb.LoadBalancerError) as again:
                await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert sim.stats("only").requests == 1
            assert again.value.errors == []
            assert again.value.message.startswith(REFUSED)
            assert "HTTP 401" in again.value.message
            assert "sk-wrong-key" not in again.value.message

            # Streams too.
            with pytest.raises(llmlb.LoadBalancerError):
                async with lb.stream(llmlb.LLMRequest(prompt="hi")):
                    pass
            assert sim.stats("only").requests == 1


async def test_every_provider_refused_then_requests_fail_at_once(
    autojump_clock: MockClock,
) -> None:
    async with open_simulator(guarded("a", "b", "c")) as sim:
        providers = [sim.provider_config(n, api_key="sk-wrong") for n in sim.names]
        async with llmlb.open_balancer(providers=providers, max_retries=5) as lb:
            with pytest.raises(llmlb.LoadBalancerError) as info:
                await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert sorted(e.provider for e in info.value.errors) == ["a", "b", "c"]
            assert requests_seen(sim) == 3  # each asked once, none twice
            for _ in range(20):
                with pytest.raises(llmlb.LoadBalancerError) as later:
                    await lb.request(llmlb.LLMRequest(prompt="hi"))
                for name in ("[a] HTTP 401", "[b] HTTP 401", "[c] HTTP 401"):
                    assert name in later.value.message
            assert requests_seen(sim) == 3


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "gemini", "cohere", "mistral"])
async def test_an_unknown_model_stops_the_spending_too(
    protocol: str, autojump_clock: MockClock
) -> None:
    """A model the provider does not serve (its 404; Mistral's 400 ``invalid_model``) is a
    refusal like a wrong key: asked once, then later requests fail at once, unsent."""
    status = 400 if protocol == "mistral" else 404
    served = SimProvider(name="p", protocol=protocol)  # type: ignore[arg-type]
    async with open_simulator([served]) as sim:
        config = sim.provider_config("p", model="no-such-model")
        async with llmlb.open_balancer(providers=[config], max_retries=3) as lb:
            with pytest.raises(llmlb.LoadBalancerError) as info:
                await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert [e.status for e in info.value.errors] == [status]
            assert info.value.message.startswith(REFUSED)
            for _ in range(10):
                with pytest.raises(llmlb.LoadBalancerError, match=REFUSED) as later:
                    await lb.request(llmlb.LLMRequest(prompt="hi"))
                assert f"[p] HTTP {status}" in later.value.message
                assert "no-such-model" in later.value.message
                assert later.value.errors == []
        assert sim.stats("p").requests == 1


async def test_refusals_of_different_kinds_are_all_named(autojump_clock: MockClock) -> None:
    """One provider with a wrong key, one with an unknown model: each asked once by the
    first request, then every request fails at once with both reasons."""
    async with open_simulator(guarded("keyed", "modelled")) as sim:
        providers = [
            sim.provider_config("keyed", api_key="sk-wrong"),
            sim.provider_config("modelled", model="no-such-model"),
        ]
        async with llmlb.open_balancer(providers=providers, max_retries=5) as lb:
            with pytest.raises(llmlb.LoadBalancerError) as info:
                await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert sorted(e.status for e in info.value.errors) == [401, 404]
            with pytest.raises(llmlb.LoadBalancerError, match=REFUSED) as later:
                await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert "[keyed] HTTP 401" in later.value.message
            assert "[modelled] HTTP 404" in later.value.message
            assert "sk-wrong" not in later.value.message
        assert requests_seen(sim) == 2


async def test_a_fail_over_refused_unsent_is_not_counted_as_a_retry(
    autojump_clock: MockClock,
) -> None:
    """Progress shows ``totals.retries``: only attempts that were made count. After a
    refusal the request fails over; when nobody is left to ask, nothing was retried."""
    async with open_simulator(guarded("a", "b")) as sim:
        alone = [sim.provider_config("a", api_key="sk-wrong")]
        async with llmlb.open_balancer(providers=alone, max_retries=3) as lb:
            for _ in range(5):
                with pytest.raises(llmlb.LoadBalancerError, match=REFUSED):
                    await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert lb.get_totals().retries == 0
        both = [sim.provider_config(n, api_key="sk-wrong") for n in ("a", "b")]
        async with llmlb.open_balancer(providers=both, max_retries=3) as lb:
            with pytest.raises(llmlb.LoadBalancerError):
                await lb.request(llmlb.LLMRequest(prompt="hi"))
            # a refused, b was asked (one retry, made), then nobody was left.
            totals = lb.get_totals()
            assert totals.retries == 1
            assert sum(s.retries for s in lb.get_stats().values()) == 1


async def test_a_refusing_provider_is_left_out_and_the_others_answer(
    autojump_clock: MockClock,
) -> None:
    async with open_simulator(guarded("bad", "good")) as sim:
        providers = [
            sim.provider_config("bad", api_key="sk-wrong"),
            sim.provider_config("good"),
        ]
        async with llmlb.open_balancer(providers=providers, strategy="round-robin") as lb:
            for _ in range(20):
                response = await lb.request(llmlb.LLMRequest(prompt="hi"))
                assert response.provider == "good"
        assert sim.stats("bad").requests == 1
        assert sim.stats("good").requests == 20


async def test_a_refusal_lasts_one_cooldown_then_a_trial_goes(autojump_clock: MockClock) -> None:
    async with open_simulator([SimProvider(name="p", protocol="openai")]) as sim:
        sim.script("p", ["403"])  # a one-off refusal: the next request would be answered
        async with llmlb.open_balancer(providers=[sim.provider_config("p")], cooldown=30) as lb:
            with pytest.raises(llmlb.LoadBalancerError):
                await lb.request(llmlb.LLMRequest(prompt="hi"))
            with pytest.raises(llmlb.LoadBalancerError, match=REFUSED):
                await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert sim.stats("p").requests == 1
            await trio.sleep(31)
            response = await lb.request(llmlb.LLMRequest(prompt="hi"))
            assert response.provider == "p"
            # Answered again: the refusal is over.
            assert (await lb.request(llmlb.LLMRequest(prompt="hi"))).provider == "p"


async def test_transient_failures_still_retry_the_only_provider(
    autojump_clock: MockClock,
) -> None:
    async with open_simulator([SimProvider(name="p", protocol="openai")]) as sim:
        sim.script("p", ["503", "503", "ok"])
        async with llmlb.open_balancer(providers=[sim.provider_config("p")]) as lb:
            response = await lb.request(llmlb.LLMRequest(prompt="hi"))
        assert response.attempts == 3


async def test_leaving_rotation_is_logged_once_not_per_request(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_simulator(guarded("only")) as sim:
        config = sim.provider_config("only", api_key="sk-wrong-key")
        with caplog.at_level(logging.WARNING, logger="llmlb_actors"):
            async with llmlb.open_balancer(providers=[config]) as lb:
                requests = [llmlb.LLMRequest(prompt=f"q{i}") for i in range(200)]
                async with lb.map(requests, concurrency=64) as results:
                    failed = [r async for r in results if not r.ok]
        assert len(failed) == 200
        assert sim.stats("only").requests <= 64  # the first wave; none after it
    left = [r for r in caplog.records if "left rotation" in r.getMessage()]
    assert len(left) == 1, [r.getMessage() for r in left]


# -- a default overall deadline -------------------------------------------------------------


def test_request_timeout_has_a_default() -> None:
    config = llmlb.BalancerConfig(
        providers=[llmlb.ProviderConfig(name="openai", model="m", api_key="k")]
    )
    assert config.request_timeout == 120.0
    assert (
        llmlb.BalancerConfig(providers=config.providers, request_timeout=None).request_timeout
        is None
    )


async def test_a_hung_upstream_ends_at_the_default_deadline(autojump_clock: MockClock) -> None:
    hung = SimProvider(name="hung", protocol="openai", behaviour=Behaviour(faults={"hang": 1}))
    async with (
        open_simulator([hung]) as sim,
        llmlb.open_balancer(
            providers=[sim.provider_config("hung")], global_timeout=100, max_retries=10
        ) as lb,
    ):
        start = trio.current_time()
        with pytest.raises(llmlb.LoadBalancerError, match="timed out after 120s"):
            await lb.request(llmlb.LLMRequest(prompt="hi"))
        assert trio.current_time() - start == pytest.approx(120, abs=1)


async def test_the_config_deadline_cuts_a_long_attempt_without_blaming_the_provider(
    autojump_clock: MockClock,
) -> None:
    hung = SimProvider(name="hung", protocol="openai", behaviour=Behaviour(faults={"hang": 1}))
    async with (
        open_simulator([hung]) as sim,
        llmlb.open_balancer(
            providers=[sim.provider_config("hung")],
            global_timeout=30,
            request_timeout=5,
            failure_threshold=1,
        ) as lb,
    ):
        start = trio.current_time()
        with pytest.raises(llmlb.LoadBalancerError, match="timed out after 5s") as info:
            await lb.request(llmlb.LLMRequest(prompt="hi"))
        assert trio.current_time() - start == pytest.approx(5, abs=0.01)
        assert [e.kind for e in info.value.errors] == ["cancelled"]
        # The request ran out of time; the provider did nothing wrong.
        stats = lb.get_stats()["hung"]
        assert stats.circuit_state == "closed"
        assert stats.cancelled_requests == 1


async def test_the_config_deadline_holds_for_queued_requests_too(
    autojump_clock: MockClock,
) -> None:
    hung = SimProvider(name="hung", protocol="openai", behaviour=Behaviour(faults={"hang": 1}))
    async with open_simulator([hung]) as sim:
        one_at_a_time = sim.provider_config("hung", max_concurrency=1, mailbox_size=1)
        async with llmlb.open_balancer(
            providers=[one_at_a_time], request_timeout=5, queue_size=8
        ) as lb:
            ended: list[float] = []

            async def ask() -> None:
                with pytest.raises(llmlb.LoadBalancerError, match="timed out after 5s"):
                    await lb.request(llmlb.LLMRequest(prompt="hi"))
                ended.append(trio.current_time())

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(4):  # running, in the mailbox, queued, queued
                    nursery.start_soon(ask)
    assert len(ended) == 4
    assert max(ended) - start == pytest.approx(5, abs=0.01)
