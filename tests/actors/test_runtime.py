"""The actor runtime with in-process scripted providers (virtual time throughout)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors import LLMRequest, LoadBalancerError, ProviderConfig
from llmlb_actors.testing import Script, ZeroJitter, http_error, open_circuit

if TYPE_CHECKING:
    from trio.testing import MockClock

REQ = LLMRequest(prompt="hi")


SCRIPT = Script()
script = SCRIPT.add
CALLS = SCRIPT.calls
Scripted = SCRIPT.provider


@pytest.fixture(autouse=True)
def _reset() -> None:
    SCRIPT.clear()


def cfgs(*names: str, **kw: Any) -> list[ProviderConfig]:
    return [ProviderConfig(name=n, provider=Scripted, **kw) for n in names]


def opts(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"health_check_interval": None, "rng": ZeroJitter()}
    base.update(kw)
    return base


# -- strategies end to end ---------------------------------------------------------


async def test_failover_answers_from_first_then_next_on_failure(autojump_clock: MockClock) -> None:
    async with llmlb.open_balancer(
        strategy="failover", providers=cfgs("a", "b", "c"), **opts()
    ) as lb:
        assert (await lb.request(REQ)).provider == "a"
        script("a", http_error(500))
        resp = await lb.request(REQ)
        assert resp.provider == "b"
        assert resp.attempts == 2


async def test_weighted_end_to_end() -> None:
    providers = [
        ProviderConfig(name="a", provider=Scripted, weight=3),
        ProviderConfig(name="b", provider=Scripted, weight=1),
    ]
    async with llmlb.open_balancer(strategy="weighted", providers=providers, **opts()) as lb:
        got = [(await lb.request(REQ)).provider for _ in range(8)]
    assert got.count("a") == 6
    assert got.count("b") == 2


async def test_custom_strategy_is_obeyed_and_errors_name_it() -> None:
    def second(states: list[llmlb.ProviderState]) -> llmlb.ProviderState:
        return states[1]

    async with llmlb.open_balancer(
        strategy="custom", custom_strategy=second, providers=cfgs("a", "b", "c"), **opts()
    ) as lb:
        assert (await lb.request(REQ)).provider == "b"

    def broken(states: list[llmlb.ProviderState]) -> llmlb.ProviderState:
        raise ZeroDivisionError("oops")

    def stranger(states: list[llmlb.ProviderState]) -> Any:
        return "a"

    for fn, text in ((broken, "raised ZeroDivisionError"), (stranger, "not one of the candidates")):
        async with llmlb.open_balancer(
            strategy="custom", custom_strategy=fn, providers=cfgs("a", "b"), **opts()
        ) as lb:
            with pytest.raises(llmlb.StrategyError, match=text) as info:
                await lb.request(REQ)
            assert fn.__name__ in str(info.value)


async def test_least_busy_prefers_idle_provider(autojump_clock: MockClock) -> None:
    script("a", 10.0)
    async with (
        llmlb.open_balancer(strategy="least-busy", providers=cfgs("a", "b"), **opts()) as lb,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(lb.request, REQ)
        await trio.testing.wait_all_tasks_blocked()
        assert lb.get_stats()["a"].in_flight == 1
        assert (await lb.request(REQ)).provider == "b"


# -- retries, classification, backoff ----------------------------------------------


async def test_non_retryable_fails_fast_with_provider_message() -> None:
    script("a", http_error(400))
    async with llmlb.open_balancer(providers=cfgs("a", "b"), **opts()) as lb:
        with pytest.raises(LoadBalancerError, match="HTTP 400") as info:
            await lb.request(REQ)
    assert len(info.value.errors) == 1
    assert CALLS == {"a": 1}


async def test_misconfigured_provider_leaves_rotation_and_fails_over(
    autojump_clock: MockClock,
) -> None:
    script("a", http_error(401))
    async with llmlb.open_balancer(strategy="failover", providers=cfgs("a", "b"), **opts()) as lb:
        resp = await lb.request(REQ)
        assert resp.provider == "b"
        assert trio.current_time() == 0  # no backoff before failing over
        assert [p.name for p in lb.get_healthy_providers()] == ["b"]
        assert "misconfigured" in (lb.get_stats()["a"].out_of_rotation_reason or "")
        assert (await lb.request(REQ)).provider == "b"


async def test_retry_after_is_honoured_on_a_single_provider(autojump_clock: MockClock) -> None:
    script("a", http_error(429, retry_after=7.0))
    async with llmlb.open_balancer(providers=cfgs("a"), **opts()) as lb:
        resp = await lb.request(REQ)
    assert resp.attempts == 2
    assert trio.current_time() == 7.0


async def test_retry_after_sends_the_retry_elsewhere(autojump_clock: MockClock) -> None:
    script("a", http_error(429, retry_after=60.0))
    async with llmlb.open_balancer(providers=cfgs("a", "b"), **opts(retry_delay=0.5)) as lb:
        resp = await lb.request(REQ)
        assert resp.provider == "b"
        assert trio.current_time() == 0.5
        # a is held back until its Retry-After passes.
        assert (await lb.request(REQ)).provider == "b"


async def test_provider_max_retries_caps_attempts_there(autojump_clock: MockClock) -> None:
    script("a", *[http_error(503)] * 10)
    async with llmlb.open_balancer(providers=cfgs("a", max_retries=1), **opts(max_retries=5)) as lb:
        with pytest.raises(LoadBalancerError, match="No provider available"):
            await lb.request(REQ)
    assert CALLS["a"] == 2


async def test_max_retries_counts_retries_after_first(autojump_clock: MockClock) -> None:
    script("a", *[http_error(503)] * 10)
    async with llmlb.open_balancer(providers=cfgs("a"), **opts(max_retries=2)) as lb:
        with pytest.raises(LoadBalancerError, match="All providers failed") as info:
            await lb.request(REQ)
    assert [e.status for e in info.value.errors] == [503, 503, 503]
    assert trio.current_time() == 1.0 + 2.0


# -- timeouts and cancellation -------------------------------------------------------


async def test_attempt_timeout_is_retryable(autojump_clock: MockClock) -> None:
    script("a", "hang")
    async with llmlb.open_balancer(
        providers=cfgs("a", timeout=2.0), **opts(retry_delay=0.25)
    ) as lb:
        resp = await lb.request(REQ)
    assert resp.attempts == 2
    assert trio.current_time() == 2.0 + 0.25


async def test_attempt_timeout_is_exact_after_many_attempts_on_the_same_workers(
    autojump_clock: MockClock,
) -> None:
    """Whole-response attempts are cut by the actor's timer (no deadline move per attempt):
    after answers of every length, each hang is cut at exactly its own start + timeout."""
    script("a", 0.5, 1.5, 0.1, "hang", 3.0, "hang")  # three answers, then three too slow
    async with llmlb.open_balancer(
        providers=cfgs("a", timeout=2.0, max_retries=0), **opts(retry_delay=0.25)
    ) as lb:
        cut_at = []
        for step in range(6):
            start = trio.current_time()
            if step in (0, 1, 2):
                await lb.request(REQ)
                continue
            with pytest.raises(LoadBalancerError) as info:
                await lb.request(REQ)
            assert [str(e) for e in info.value.errors] == ["[a] attempt timed out after 2s"]
            cut_at.append(trio.current_time() - start)
        stats = lb.get_stats()["a"]
    # Cut at 2 s; the request then gave up when its retry found no attempt left (0.25 s).
    assert cut_at == pytest.approx([2.25, 2.25, 2.25])  # the 3.0 s answer was cut too
    assert stats.successful_requests == 3
    assert stats.failed_requests == 3


async def test_a_stream_idle_deadline_does_not_cut_the_next_whole_response(
    autojump_clock: MockClock,
) -> None:
    """A stream's attempt keeps an exact deadline (moved per read); a whole response run by
    the same worker afterwards gets its full timeout, not what is left of that deadline."""
    script("a", "ok", "ok", "ok", 4.0)
    async with llmlb.open_balancer(
        providers=cfgs("a", timeout=5.0), **opts(stream_idle_timeout=1.0)
    ) as lb:
        for _ in range(3):
            async with lb.stream(REQ) as chunks:
                assert [c.delta async for c in chunks][:3] == ["a", "b", "c"]
        start = trio.current_time()
        resp = await lb.request(REQ)
    assert resp.attempts == 1
    assert trio.current_time() - start == 4.0


async def test_a_request_deadline_before_the_attempt_timeout_cuts_it_exactly(
    autojump_clock: MockClock,
) -> None:
    """An attempt whose request runs out first is cut at the request's deadline."""
    script("a", "hang")
    async with llmlb.open_balancer(
        providers=cfgs("a", timeout=10.0), **opts(request_timeout=3.0)
    ) as lb:
        with pytest.raises(LoadBalancerError, match="timed out after 3s") as info:
            await lb.request(REQ)
        assert trio.current_time() == 3.0
        assert [e.kind for e in info.value.errors] == ["cancelled"]


async def test_overall_deadline(autojump_clock: MockClock) -> None:
    script("a", "hang", "hang", "hang")
    async with llmlb.open_balancer(providers=cfgs("a"), **opts(global_timeout=4.0)) as lb:
        with pytest.raises(LoadBalancerError, match="timed out after 5s") as info:
            await lb.request(REQ, timeout=5.0)
        assert trio.current_time() == 5.0
        assert [e.kind for e in info.value.errors] == ["timeout"]
        await trio.testing.wait_all_tasks_blocked()
        stats = lb.get_stats()["a"]
        assert stats.in_flight == 0
        # The attempt timed out at 4 s; the retry was due at 4 + 1 s, when the deadline hit.
        assert stats.total_requests == stats.successful_requests + stats.failed_requests == 1


async def test_caller_cancellation_stops_the_attempt(autojump_clock: MockClock) -> None:
    script("a", "hang")
    async with llmlb.open_balancer(providers=cfgs("a"), **opts()) as lb:
        with trio.move_on_after(1.0):
            await lb.request(REQ)
        await trio.testing.wait_all_tasks_blocked()
        stats = lb.get_stats()["a"]
        assert stats.in_flight == 0
        assert stats.cancelled_requests == 1
        assert lb.get_totals().failed == 1


# -- health ----------------------------------------------------------------------------


async def test_circuit_opens_then_half_open_trial_closes_it(autojump_clock: MockClock) -> None:
    script("a", http_error(500), http_error(500), http_error(500))
    async with llmlb.open_balancer(
        strategy="failover", providers=cfgs("a", "b"), **opts(cooldown=30.0, retry_delay=0)
    ) as lb:
        for _ in range(3):
            assert (await lb.request(REQ)).provider == "b"
        assert lb.get_stats()["a"].circuit_state == "open"
        assert not lb.get_stats()["a"].is_healthy
        assert (await lb.request(REQ)).provider == "b"  # still cooling down
        await trio.sleep(30.0)
        assert (await lb.request(REQ)).provider == "a"  # the half-open trial succeeds
        assert lb.get_stats()["a"].circuit_state == "closed"


async def test_when_none_is_healthy_the_least_recently_failed_is_tried(
    autojump_clock: MockClock,
) -> None:
    async with llmlb.open_balancer(providers=cfgs("a", "b"), **opts(cooldown=100.0)) as lb:
        open_circuit(lb, "b")
        await trio.sleep(1.0)
        open_circuit(lb, "a")
        assert [p.name for p in lb.get_healthy_providers()] == []
        assert (await lb.request(REQ)).provider == "b"


async def test_health_loop_probes_with_jitter_and_health_check_now(
    autojump_clock: MockClock,
) -> None:
    probes: list[float] = []

    class Probed(Scripted):
        async def check_health(self) -> bool:
            probes.append(trio.current_time())
            return self.name != "down"

    providers = [ProviderConfig(name=n, provider=Probed) for n in ("up", "down")]
    async with llmlb.open_balancer(
        providers=providers, health_check_interval=10.0, rng=ZeroJitter()
    ) as lb:
        assert lb.get_stats()["down"].is_healthy
        await trio.sleep(9.5)
        assert probes == [9.0, 9.0]  # jitter spreads probes over 0.9-1.1 x interval
        assert not lb.get_stats()["down"].is_healthy
        assert await lb.health_check() == {"up": True, "down": False}
        assert [p.name for p in lb.get_healthy_providers()] == ["up"]


# -- supervisor -------------------------------------------------------------------------


async def test_crash_restarts_within_limit_and_reroutes(autojump_clock: MockClock) -> None:
    script("a", KeyError("bug"))
    async with llmlb.open_balancer(strategy="failover", providers=cfgs("a", "b"), **opts()) as lb:
        resp = await lb.request(REQ)
        assert resp.provider == "b"
        stats = lb.get_stats()["a"]
        assert stats.restarts == 1
        assert stats.in_rotation
        assert (await lb.request(REQ)).provider == "a"


async def test_restart_limit_takes_provider_out_of_rotation(autojump_clock: MockClock) -> None:
    script("a", *[RuntimeError(f"crash {i}") for i in range(6)])
    async with llmlb.open_balancer(strategy="failover", providers=cfgs("a", "b"), **opts()) as lb:
        for _ in range(6):
            assert (await lb.request(REQ)).provider == "b"
        stats = lb.get_stats()["a"]
        assert stats.restarts == 5
        assert not stats.in_rotation
        assert "restart limit" in (stats.out_of_rotation_reason or "")
        CALLS.clear()
        for _ in range(3):
            assert (await lb.request(REQ)).provider == "b"
        assert "a" not in CALLS


async def test_restart_window_forgets_old_crashes(autojump_clock: MockClock) -> None:
    script("a", *[RuntimeError("crash")] * 8)
    async with llmlb.open_balancer(
        strategy="failover", providers=cfgs("a", "b"), **opts(max_restarts=2, restart_window=10)
    ) as lb:
        for _ in range(2):
            await lb.request(REQ)
        await trio.sleep(11)
        for _ in range(2):  # two more restarts fit in the new window
            await lb.request(REQ)
            assert lb.get_stats()["a"].in_rotation
        await lb.request(REQ)
        assert not lb.get_stats()["a"].in_rotation
        assert lb.get_stats()["a"].restarts == 4


async def test_add_and_remove_at_runtime(autojump_clock: MockClock) -> None:
    async with llmlb.open_balancer(providers=cfgs("a"), **opts()) as lb:
        await lb.add_provider(ProviderConfig(name="b", provider=Scripted))
        assert set(lb.get_stats()) == {"a", "b"}
        assert [(await lb.request(REQ)).provider for _ in range(2)] == ["a", "b"]
        await lb.remove_provider("a")
        assert set(lb.get_stats()) == {"b"}
        assert [(await lb.request(REQ)).provider for _ in range(2)] == ["b", "b"]
        with pytest.raises(llmlb.ConfigError):
            await lb.add_provider(ProviderConfig(name="b", provider=Scripted))
        with pytest.raises(KeyError):
            await lb.remove_provider("zzz")


async def test_remove_drains_in_flight_then_reroutes_after_timeout(
    autojump_clock: MockClock,
) -> None:
    script("a", 3.0, "hang")
    results: list[str] = []
    async with llmlb.open_balancer(
        strategy="failover", providers=cfgs("a", "b"), **opts(drain_timeout=10.0)
    ) as lb:

        async def one() -> None:
            results.append((await lb.request(REQ)).provider)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            await lb.remove_provider("a")
            assert trio.current_time() == 10.0
        assert sorted(results) == ["a", "b"]  # one finished while draining, one was re-routed
        assert "a" not in lb.get_stats()


# -- backpressure --------------------------------------------------------------------


async def test_overload_fails_fast_when_configured(autojump_clock: MockClock) -> None:
    script("a", *["hang"] * 10)
    async with (
        llmlb.open_balancer(
            providers=cfgs("a", max_concurrency=1, mailbox_size=1),
            **opts(on_overload="fail", queue_size=1),
        ) as lb,
        trio.open_nursery() as nursery,
    ):
        # One running, one in the mailbox, one held by the dispatcher, one in its queue.
        for _ in range(4):
            nursery.start_soon(lb.request, REQ)
            await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(llmlb.OverloadedError):
            await lb.request(REQ)
        nursery.cancel_scope.cancel()


async def test_waiting_backpressure_bounds_in_flight(autojump_clock: MockClock) -> None:
    script("a", *[1.0] * 50)
    async with llmlb.open_balancer(
        providers=cfgs("a", max_concurrency=2, mailbox_size=2), **opts(queue_size=3)
    ) as lb:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, lb.get_stats()["a"].in_flight)
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as inner:
                for _ in range(20):
                    inner.start_soon(lb.request, REQ)
            nursery.cancel_scope.cancel()
        assert peak == 4  # 2 running + 2 queued; the rest wait on the dispatcher
        assert lb.get_stats()["a"].successful_requests == 20


# -- facade --------------------------------------------------------------------------


async def test_no_exception_group_reaches_the_caller() -> None:
    with pytest.raises(ValueError, match="mine"):
        async with llmlb.open_balancer(providers=cfgs("a"), **opts()):
            raise ValueError("mine")


async def test_requests_after_close_fail_cleanly() -> None:
    async with llmlb.open_balancer(providers=cfgs("a"), **opts()) as lb:
        pass
    with pytest.raises(llmlb.BalancerClosedError, match="closed"):
        await lb.request(REQ)


async def test_stats_add_up_and_percentiles(autojump_clock: MockClock) -> None:
    script("a", 0.1, 0.2, 0.3, http_error(500), 0.4)
    async with llmlb.open_balancer(providers=cfgs("a"), **opts(retry_delay=0)) as lb:
        for _ in range(4):
            await lb.request(REQ)
        s = lb.get_stats()["a"]
        assert s.total_requests == 5
        assert s.successful_requests == 4
        assert s.failed_requests == 1
        assert s.retries == 1
        assert s.average_response_time == pytest.approx(250.0)
        assert s.p50_ms == pytest.approx(200.0)  # nearest rank: 2 of 4 samples
        assert s.p99_ms == pytest.approx(400.0)
        assert s.total_tokens == 12
        assert s.last_error is not None
        assert s.last_request_time is not None
        totals = lb.get_totals()
        assert (totals.requests, totals.succeeded, totals.failed, totals.retries) == (4, 4, 0, 1)


# -- streams -------------------------------------------------------------------------


async def test_stream_fails_over_before_first_chunk(autojump_clock: MockClock) -> None:
    script("a", http_error(503))
    async with llmlb.open_balancer(strategy="failover", providers=cfgs("a", "b"), **opts()) as lb:
        async with lb.stream(REQ) as chunks:
            got = [c async for c in chunks]
        assert {c.provider for c in got} == {"b"}
        assert got[-1].finish_reason == "stop"


async def test_stream_left_early_frees_the_worker(autojump_clock: MockClock) -> None:
    async with llmlb.open_balancer(providers=cfgs("a"), **opts()) as lb:
        async with lb.stream(REQ) as chunks:
            async for _ in chunks:
                break
        await trio.testing.wait_all_tasks_blocked()
        s = lb.get_stats()["a"]
        assert s.in_flight == 0
        assert s.cancelled_requests == 1
