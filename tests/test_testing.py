"""`llmlb_actors.testing`, the helpers users get for their own tests, as documented."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors.testing import (
    Script,
    ZeroJitter,
    crash_provider,
    http_error,
    open_circuit,
    provider_instance,
)

if TYPE_CHECKING:
    from trio.testing import MockClock

REQ = llmlb.LLMRequest(prompt="hi")


def test_the_public_surface() -> None:
    import llmlb_actors.testing as testing

    assert testing.__all__ == sorted(testing.__all__)
    assert all(hasattr(testing, name) for name in testing.__all__)


def _balancer(script: Script, *names: str, **fields: object) -> llmlb.BalancerConfig:
    return llmlb.BalancerConfig(
        providers=[llmlb.ProviderConfig(name=n, provider=script.provider) for n in names],
        health_check_interval=None,
        **fields,  # type: ignore[arg-type]
    )


async def test_a_script_plays_its_steps_in_order(autojump_clock: MockClock) -> None:
    script = Script()
    script.add("a", http_error(503), 2.0, "ok")
    config = _balancer(script, "a", retry_delay=1.0)
    async with llmlb.open_balancer(config, rng=ZeroJitter()) as lb:
        start = trio.current_time()
        response = await lb.request(REQ)
        # 503, then a zero-jitter backoff of exactly retry_delay, then a 2 s answer.
        assert trio.current_time() - start == pytest.approx(3.0)
        assert (response.content, response.model, response.attempts) == ("a:hi", "scripted", 2)
        assert script.pending("a") == 1
        assert (await lb.request(REQ)).attempts == 1
        assert script.pending("a") == 0
        assert (await lb.request(REQ)).content == "a:hi"  # an empty script answers ok
    assert script.calls == {"a": 4}
    script.clear()
    assert script.calls == {}


async def test_a_scripted_hang_times_out_and_a_stream_streams(autojump_clock: MockClock) -> None:
    script = Script()
    script.add("a", "hang")
    async with llmlb.open_balancer(_balancer(script, "a", global_timeout=5.0)) as lb:
        response = await lb.request(REQ)  # the hang times out; the retry answers
        assert response.attempts == 2
        async with lb.stream(REQ) as chunks:
            assert [c.delta async for c in chunks if c.delta] == ["a", "b", "c"]


async def test_two_scripts_do_not_share_state() -> None:
    one, two = Script(), Script()
    one.add("a", http_error(400))
    assert one.provider is not two.provider
    async with llmlb.open_balancer(_balancer(two, "a")) as lb:
        assert (await lb.request(REQ)).content == "a:hi"
    assert one.pending("a") == 1
    assert "a" not in one.calls


def test_http_error_is_classified_like_a_real_answer() -> None:
    assert http_error(503).retryable
    assert http_error(429, retry_after=7.0).retry_after == 7.0
    assert not http_error(400).retryable
    assert not http_error(400).disables_provider
    assert http_error(401).disables_provider
    assert http_error(404, message="no such model").message == "no such model"
    assert http_error(500).status == 500


def test_zero_jitter() -> None:
    rng = ZeroJitter()
    assert rng.random() == 0.0
    assert rng.uniform(1.0, 3.0) == 1.0


async def test_crash_provider_restarts_the_actor(autojump_clock: MockClock) -> None:
    script = Script()
    async with llmlb.open_balancer(_balancer(script, "a")) as lb:
        first = provider_instance(lb, "a")
        assert isinstance(first, script.provider)
        crash_provider(lb, "a", RuntimeError("boom"))
        await trio.testing.wait_all_tasks_blocked()
        assert lb.get_stats()["a"].restarts == 1
        assert provider_instance(lb, "a") is not first  # a fresh provider object
        assert (await lb.request(REQ)).provider == "a"
        with pytest.raises(KeyError, match="nobody"):
            crash_provider(lb, "nobody")
    with pytest.raises(RuntimeError, match="not running"):
        crash_provider(lb, "a")


async def test_open_circuit_takes_a_provider_out_for_its_cooldown(
    autojump_clock: MockClock,
) -> None:
    script = Script()
    config = _balancer(script, "a", "b", strategy="failover", cooldown=10.0)
    async with llmlb.open_balancer(config) as lb:
        open_circuit(lb, "a")
        assert [p.name for p in lb.get_healthy_providers()] == ["b"]
        assert (await lb.request(REQ)).provider == "b"
        await trio.sleep(10.0)
        assert (await lb.request(REQ)).provider == "a"  # the half-open trial succeeds
        assert lb.get_stats()["a"].circuit_state == "closed"
