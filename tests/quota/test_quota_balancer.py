"""Quota-aware balancing end to end: the balancer over loopback HTTP to simulated quotas.

Everything runs on trio's autojump clock: a "second" of pacing costs no real time.
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors import LLMRequest, LoadBalancerError, RateLimitedError
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator
from llmlb_actors.testing import ZeroJitter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio.testing import MockClock

    from llmlb_actors.sim import Simulator

REQ = LLMRequest(prompt="Write a funny dad joke.", max_tokens=32)
STRATEGIES = ("round-robin", "failover", "weighted", "least-busy", "latency", "quota")


def sims(*specs: tuple[str, str, dict[str, Any]]) -> list[SimProvider]:
    return [
        SimProvider(
            name=name,
            protocol=protocol,
            behaviour=Behaviour(latency=0.1, **quota),  # type: ignore[arg-type]
        )
        for name, protocol, quota in specs
    ]


def balancer(
    sim: Simulator, names: tuple[str, ...], *, limits: dict[str, Any] | None = None, **kw: Any
) -> Any:
    options: dict[str, Any] = {
        "providers": [sim.provider_config(n, **(limits or {}).get(n, {})) for n in names],
        "health_check_interval": None,
        "rng": ZeroJitter(),
    }
    options.update(kw)
    return llmlb.open_balancer(**options)


@asynccontextmanager
async def fleet(
    specs: list[tuple[str, str, dict[str, Any]]],
    *,
    names: tuple[str, ...] | None = None,
    limits: dict[str, Any] | None = None,
    **kw: Any,
) -> AsyncIterator[tuple[Simulator, Any]]:
    """Simulated providers and a balancer over some of them (default: all)."""
    names = names or tuple(name for name, _, _ in specs)
    async with (
        open_simulator(sims(*specs)) as sim,
        balancer(sim, names, limits=limits, **kw) as lb,
    ):
        yield sim, lb


async def fire(lb: Any, count: int, request: LLMRequest = REQ) -> list[Any]:
    results: list[Any] = [None] * count

    async def one(i: int) -> None:
        try:
            results[i] = await lb.request(request)
        except llmlb.LLMLBError as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return results


# -- pacing to configured limits -----------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_every_strategy_paces_to_configured_rpm_with_no_429(
    strategy: str, autojump_clock: MockClock
) -> None:
    specs = [("a", "openai", {"rpm": 120}), ("b", "anthropic", {"rpm": 120})]
    limits = {"a": {"rpm": 120}, "b": {"rpm": 120}}
    async with fleet(specs, limits=limits, strategy=strategy) as (sim, lb):
        start = trio.current_time()
        results = await fire(lb, 24)
        elapsed = trio.current_time() - start
        totals = lb.get_totals()
        stats = lb.get_stats()
    assert all(isinstance(r, llmlb.LLMResponse) for r in results), results
    assert sim.stats("a").rate_limited + sim.stats("b").rate_limited == 0
    # Pooled 4 a second (each provider 2 in any rolling second): 24 take > 5 s.
    assert elapsed > 5.0
    assert totals.quota_waits > 0
    assert totals.quota_wait_seconds > 0
    assert sum(s.throttled for s in stats.values()) > 0
    assert sum(s.rate_limited for s in stats.values()) == 0


async def test_pooled_rate_is_reached(autojump_clock: MockClock) -> None:
    names = ("a", "b", "c", "d")
    specs = [(n, "openai", {"rpm": 600}) for n in names]
    async with fleet(specs, limits={n: {"rpm": 600} for n in names}) as (sim, lb):
        start = trio.current_time()
        results = await fire(lb, 400)
        elapsed = trio.current_time() - start
    assert all(isinstance(r, llmlb.LLMResponse) for r in results)
    assert sum(sim.stats(n).rate_limited for n in names) == 0
    # 40 a second pooled: the 400th leaves 9 windows (of 1.05 s) after the first.
    assert elapsed < 9 * 1.05 + 0.5


async def test_tokens_are_reserved_and_reconciled(autojump_clock: MockClock) -> None:
    specs = [("a", "openai", {"tpm": 120})]  # 2 tokens a second
    async with fleet(specs, limits={"a": {"tpm": 120}}) as (sim, lb):
        # Each reserves 10 + 20 tokens and uses 2 + 7 (the simulator counts words).
        results = await fire(lb, 12, LLMRequest(prompt="hello there", max_tokens=20))
        stats = lb.get_stats()["a"]
    assert all(isinstance(r, llmlb.LLMResponse) for r in results)
    assert sim.stats("a").rate_limited == 0  # estimates are upper bounds: never refused
    assert stats.tpm == 120
    assert stats.remaining_tokens is not None
    assert stats.throttled > 0


# -- learning from headers --------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_limits_learned_from_headers(protocol: str, autojump_clock: MockClock) -> None:
    async with fleet([("a", protocol, {"rpm": 120})], quota_probe=True) as (sim, lb):
        results = await fire(lb, 16)
        stats = lb.get_stats()["a"]
    assert all(isinstance(r, llmlb.LLMResponse) for r in results), results
    assert stats.learned_rpm == 120
    assert stats.rpm is None
    # One probe first, then paced by the learned limit: nothing refused upstream.
    assert sim.stats("a").rate_limited == 0


async def test_without_probing_limits_are_learned_from_the_first_answers(
    autojump_clock: MockClock,
) -> None:
    async with fleet([("a", "openai", {"rpm": 120})], retry_delay=0.01) as (sim, lb):
        results = await fire(lb, 16)
        stats = lb.get_stats()["a"]
    assert all(isinstance(r, llmlb.LLMResponse) for r in results), results
    assert stats.learned_rpm == 120
    # The first burst goes out before any answer tells the limit: the window refuses
    # all but two of it; after that, paced.
    assert sim.stats("a").rate_limited == 14
    assert stats.rate_limited == 14


async def test_gemini_per_day_exhaustion_holds_the_provider(autojump_clock: MockClock) -> None:
    specs = [("gem", "gemini", {"rpd": 1}), ("oai", "openai", {})]
    async with fleet(specs, strategy="failover") as (sim, lb):
        for _ in range(4):
            await lb.request(REQ)
        stats = lb.get_stats()["gem"]
    assert sim.stats("gem").requests == 2  # one answer, one per-day 429; then left alone
    assert sim.stats("gem").rate_limited == 1
    # Held for hours: until midnight Pacific (the per-day quota) or the simulator's own
    # day (its RetryInfo), whichever is later.
    assert stats.quota_reason in ("daily-quota", "retry-after")
    assert 3600 < stats.refill_in <= 86_400
    assert stats.rate_limited == 1
    assert stats.in_rotation


async def test_unparseable_rate_limit_headers_change_nothing(autojump_clock: MockClock) -> None:
    body = (
        b'{"id":"x","object":"chat.completion","created":1,"model":"m","choices":'
        b'[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    )
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"x-ratelimit-limit-requests: lots\r\nx-ratelimit-remaining-requests: -\r\n"
        b"x-ratelimit-reset-requests: whenever\r\nanthropic-ratelimit-tokens-reset: nope\r\n"
        b"retry-after: maybe\r\ncontent-length: %d\r\n\r\n" % len(body)
    ) + body

    async def serve(stream: trio.SocketStream) -> None:
        buffer = b""
        while data := await stream.receive_some():
            buffer += data
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                if len(rest) < length:
                    break
                buffer = rest[length:]
                await stream.send_all(answer)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        config = llmlb.ProviderConfig(
            name="odd",
            provider="openai",
            model="m",
            api_key="sk-test",
            base_url=f"http://127.0.0.1:{port}/v1",
        )
        async with llmlb.open_balancer(providers=[config], health_check_interval=None) as lb:
            for _ in range(3):
                assert (await lb.request(REQ)).content == "hi"
            stats = lb.get_stats()["odd"]
        nursery.cancel_scope.cancel()
    assert stats.is_healthy
    assert stats.learned_rpm is None
    assert stats.refill_in == 0.0


# -- waiting: order, deadline, overload, membership -------------------------------------------


async def test_waiting_requests_are_served_in_arrival_order(autojump_clock: MockClock) -> None:
    specs = [("a", "openai", {"tpm": 120})]  # 2 tokens a second
    async with fleet(specs, limits={"a": {"tpm": 120}}) as (_, lb):
        sent: list[str] = []
        big = LLMRequest(prompt="x" * 300, max_tokens=10)  # 75 + 7 + 10 = 92 tokens
        small = LLMRequest(prompt="hi", max_tokens=1)  # 1 + 7 + 1 = 9 tokens
        await lb.request(LLMRequest(prompt="x" * 160, max_tokens=1))  # leaves ~71

        async def one(label: str, request: LLMRequest) -> None:
            await lb.request(request)
            sent.append(label)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "big", big)
            await trio.sleep(0.01)
            for i in range(3):
                nursery.start_soon(one, f"small{i}", small)
                await trio.sleep(0.01)
    # The small ones would fit at once, but wait behind the big one that arrived first.
    assert sent == ["big", "small0", "small1", "small2"]


async def test_deadline_before_the_refill_fails_at_once(autojump_clock: MockClock) -> None:
    async with fleet([("a", "openai", {"rpm": 60})], limits={"a": {"rpm": 60}}) as (sim, lb):
        await lb.request(REQ)
        start = trio.current_time()
        with pytest.raises(RateLimitedError) as info:
            await lb.request(REQ, timeout=0.5)
        assert trio.current_time() - start < 0.01
        # A deadline after the refill just waits for it.
        await lb.request(REQ, timeout=5.0)
        totals = lb.get_totals()
    assert info.value.budgets == {"a": "rpm"}
    assert info.value.retry_after is not None
    assert 0.5 < info.value.retry_after <= 1.05
    assert "rpm" in str(info.value)
    assert totals.rate_limited == 1
    assert sim.stats("a").rate_limited == 0


async def test_deadline_passing_while_waiting_for_a_probe(autojump_clock: MockClock) -> None:
    specs = [("a", "openai", {"rpm": 600})]
    async with fleet(specs, quota_probe=True) as (sim, lb):
        sim.set_behaviour("a", Behaviour(latency=5.0, rpm=600))  # the probe takes 5 s
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lb.request, REQ)  # the probe
            await trio.sleep(0.01)
            start = trio.current_time()
            with pytest.raises(LoadBalancerError, match="timed out") as info:
                await lb.request(REQ, timeout=1.0)  # waits for the probe's answer
            assert trio.current_time() - start == pytest.approx(1.0)
            assert not isinstance(info.value, RateLimitedError)
            # The queue moved on: the next request goes as soon as the probe has answered.
            sim.set_behaviour("a", Behaviour(latency=0.1, rpm=600))
            assert (await lb.request(REQ)).provider == "a"
        totals = lb.get_totals()
    assert totals.quota_waits >= 2  # the one that gave up is counted too
    assert sim.stats("a").rate_limited == 0


async def test_on_overload_fail_raises_rate_limited_at_once(autojump_clock: MockClock) -> None:
    specs = [("a", "openai", {}), ("b", "openai", {})]
    limits = {"a": {"rpm": 60}, "b": {"tpm": 100}}
    big = LLMRequest(prompt="x" * 300, max_tokens=5)  # reserves 87 of b's 100
    async with fleet(specs, limits=limits, on_overload="fail") as (_, lb):
        await lb.request(LLMRequest(prompt="hi", max_tokens=1))  # a's one slot this second
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lb.request, big)  # in flight: b's tokens are reserved
            await trio.sleep(0.01)
            start = trio.current_time()
            with pytest.raises(RateLimitedError) as info:
                await lb.request(big)
            assert trio.current_time() == start
    assert info.value.budgets == {"a": "rpm", "b": "tpm"}
    assert isinstance(info.value, LoadBalancerError)


async def test_request_larger_than_a_budget_never_goes_there(autojump_clock: MockClock) -> None:
    specs = [("small", "openai", {}), ("big", "openai", {})]
    limits = {"small": {"tpm": 50}}
    large = LLMRequest(prompt="x" * 400, max_tokens=10)  # ~117 tokens
    async with fleet(specs, limits=limits, strategy="failover") as (sim, lb):
        for _ in range(3):
            assert (await lb.request(large)).provider == "big"
    assert sim.stats("small").requests == 0
    async with fleet(specs, names=("small",), limits=limits) as (_, lb):
        start = trio.current_time()
        with pytest.raises(LoadBalancerError, match="can never fit") as info:
            await lb.request(large)
        assert trio.current_time() == start
    assert not isinstance(info.value, RateLimitedError)


async def test_provider_added_while_requests_wait_takes_them(autojump_clock: MockClock) -> None:
    specs = [("a", "openai", {}), ("b", "openai", {})]
    async with fleet(specs, names=("a",), limits={"a": {"rpm": 60}}) as (sim, lb):
        providers: list[str] = []

        async def one() -> None:
            providers.append((await lb.request(REQ)).provider)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
            await trio.sleep(0.05)
            await lb.add_provider(sim.provider_config("b"))
        elapsed = trio.current_time() - start
    assert providers.count("a") == 1
    assert providers.count("b") == 4
    assert elapsed < 1.0  # nobody waited for a's next window


async def test_provider_removed_while_requests_wait_for_it(autojump_clock: MockClock) -> None:
    specs = [("a", "openai", {"rpm": 60}), ("b", "openai", {"rpm": 60})]
    limits = {"a": {"rpm": 60}, "b": {"rpm": 60}}
    async with fleet(specs, limits=limits) as (sim, lb):
        results: list[Any] = []

        async def one() -> None:
            results.append(await lb.request(REQ))

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(one)
            await trio.sleep(0.05)
            await lb.remove_provider("a")
    assert len(results) == 6
    assert sim.stats("a").rate_limited + sim.stats("b").rate_limited == 0
    assert sum(r.provider == "b" for r in results) >= 4


# -- the quota strategy, stats, and switching budgets off -------------------------------------


async def test_quota_strategy_spreads_in_proportion_to_quota(autojump_clock: MockClock) -> None:
    specs = [("fast", "openai", {"rpm": 1200}), ("slow", "openai", {"rpm": 600})]
    limits = {"fast": {"rpm": 1200}, "slow": {"rpm": 600}}
    async with fleet(specs, limits=limits, strategy="quota") as (sim, lb):
        results = await fire(lb, 90)
    counts = {name: sum(r.provider == name for r in results) for name in ("fast", "slow")}
    assert counts["fast"] == pytest.approx(60, abs=6)
    assert counts["slow"] == pytest.approx(30, abs=6)
    assert sim.stats("fast").rate_limited + sim.stats("slow").rate_limited == 0


async def test_stats_show_budgets(autojump_clock: MockClock) -> None:
    specs = [("a", "openai", {"rpm": 600, "tpm": 6000})]
    limits = {"a": {"rpm": 600, "tpm": 6000, "rpd": 10_000}}
    async with fleet(specs, limits=limits) as (_, lb):
        await fire(lb, 10)
        stats = lb.get_stats()["a"]
    assert (stats.rpm, stats.tpm, stats.rpd, stats.tpd) == (600, 6000, 10_000, None)
    assert (stats.learned_rpm, stats.learned_tpm) == (600, 6000)
    assert stats.remaining_requests is not None
    assert stats.remaining_tokens is not None
    assert stats.refill_in >= 0
    assert not math.isnan(stats.refill_in)


async def test_budgets_off_fire_blindly_as_before(autojump_clock: MockClock) -> None:
    specs = [("a", "openai", {"rpm": 120})]
    limits = {"a": {"rpm": 120}}
    async with fleet(specs, limits=limits, quota="off", retry_delay=0.01) as (sim, lb):
        results = await fire(lb, 6)
        stats = lb.get_stats()["a"]
    assert sim.stats("a").rate_limited > 0
    assert stats.rate_limited == sim.stats("a").rate_limited
    assert stats.throttled == 0
    assert all(isinstance(r, llmlb.LLMResponse) for r in results)


async def test_streams_are_paced_and_reconciled(autojump_clock: MockClock) -> None:
    async with fleet([("a", "anthropic", {"rpm": 60})], limits={"a": {"rpm": 60}}) as (sim, lb):

        async def one() -> str:
            text = ""
            async with lb.stream(REQ) as chunks:
                async for chunk in chunks:
                    text += chunk.delta
            return text

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
        elapsed = trio.current_time() - start
    assert sim.stats("a").rate_limited == 0
    assert sim.stats("a").streams == 3
    assert elapsed > 2.0  # one a second
