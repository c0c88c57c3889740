"""Tail latency and failure containment, end to end on virtual time.

P2C over peak-EWMA, hedged requests (timing, cancellation, budget, exactly one
stream), the retry budget, outlier ejection with growing ejection times and the
panic threshold. Upstreams are the simulator over loopback HTTP (its latency
runs on the same `MockClock`), the scripted in-process provider where two
attempts must meet at one exact instant, and a raw socket server to see a
losing hedge's connection close.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors.sim import Behaviour, SimProvider, open_simulator
from llmlb_actors.testing import Script, ZeroJitter, http_error, open_circuit
from tests.reliability import _servers as srv

if TYPE_CHECKING:
    from trio.testing import MockClock

    from llmlb_actors.sim import Simulator

REQ = llmlb.LLMRequest(prompt="hello there")
FAST = Behaviour(latency=0.04, latency_jitter=0.02, seed=1)
SLOW = Behaviour(latency=0.4, latency_jitter=0.2, seed=2)


def _sims(**behaviours: Behaviour) -> list[SimProvider]:
    return [SimProvider(name=n, protocol="openai", behaviour=b) for n, b in behaviours.items()]


def _balancer(sim: Simulator, names: list[str], **kw: Any) -> Any:
    options: dict[str, Any] = {
        "providers": [sim.provider_config(n, max_concurrency=256) for n in names],
        "health_check_interval": None,
        "rng": ZeroJitter(),
        "seed": 3,
    }
    options.update(kw)
    rng = options.pop("rng")
    return llmlb.open_balancer(llmlb.BalancerConfig(**options), rng=rng)


async def _closed_loop(lb: llmlb.Balancer, workers: int, each: int) -> list[Any]:
    """``workers`` callers, ``each`` requests apiece; every outcome (response or error)."""
    outcomes: list[Any] = []

    async def worker() -> None:
        for _ in range(each):
            try:
                outcomes.append(await lb.request(REQ))
            except llmlb.LoadBalancerError as exc:
                outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    return outcomes


@pytest.fixture
def script() -> Script:
    return Script()


# -- P2C over peak-EWMA -----------------------------------------------------------------------


async def test_latency_strategy_keeps_a_slow_provider_out_of_the_tail(
    autojump_clock: MockClock,
) -> None:
    sims = _sims(a=FAST, b=FAST, slow=SLOW)
    async with open_simulator(sims) as sim, _balancer(sim, [*sim.names], strategy="latency") as lb:
        outcomes = await _closed_loop(lb, workers=16, each=60)
        stats = lb.get_stats()
    assert all(isinstance(o, llmlb.LLMResponse) for o in outcomes)
    total = sum(s.total_requests for s in stats.values())
    assert stats["slow"].total_requests / total < 0.02  # round-robin would send it a third
    latencies = sorted(o.latency for o in outcomes)
    # The slow provider keeps ~1 % of the traffic (its probes), which sits right at the p99
    # boundary; at p98 the tail is the healthy providers' (checked for seeds 1-16).
    assert latencies[int(0.98 * len(latencies)) - 1] < 0.1
    assert 0.04 <= stats["a"].latency_cost_ms / 1000 <= 0.06
    assert stats["slow"].latency_cost_ms / 1000 >= 0.2


async def test_a_streams_cost_is_its_time_to_first_chunk(autojump_clock: MockClock) -> None:
    # First chunk after 0.1 s, then 0.5 s between chunks: the stream lasts 1.6 s.
    behaviours = {"a": Behaviour(latency=0.1, token_delay=0.5, chunks=4)}
    async with (
        open_simulator(_sims(**behaviours)) as sim,
        _balancer(sim, ["a"], strategy="latency") as lb,
    ):
        start = trio.current_time()
        costs = []
        async with lb.stream(REQ) as stream:
            async for _ in stream:
                costs.append(lb.get_stats()["a"].latency_cost_ms)
        elapsed = trio.current_time() - start
        cost = lb.get_stats()["a"].latency_cost_ms
    assert elapsed == pytest.approx(1.6)
    assert costs[0] == pytest.approx(100.0, abs=2.0)
    assert cost <= costs[0]  # the whole stream's 1.6 s never counts


async def test_an_unmeasured_provider_gets_one_probe_at_a_time(
    autojump_clock: MockClock, script: Script
) -> None:
    script.add("new", 5.0)  # its first answer takes 5 s
    providers = [llmlb.ProviderConfig(name=n, provider=script.provider) for n in ("old", "new")]
    async with llmlb.open_balancer(
        strategy="latency", providers=providers[:1], health_check_interval=None
    ) as lb:
        await lb.request(REQ)  # "old" is measured
        await lb.add_provider(providers[1])
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, lb.get_stats()["new"].in_flight)
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await _closed_loop(lb, workers=8, each=20)
            nursery.cancel_scope.cancel()
        stats = lb.get_stats()
    assert most == 1
    assert stats["new"].successful_requests >= 1


# -- hedged requests ---------------------------------------------------------------------------


async def test_a_hedge_after_the_delay_wins_and_the_slow_attempt_is_cancelled(
    autojump_clock: MockClock,
) -> None:
    behaviours = {"slow": Behaviour(latency=2.0), "fast": Behaviour(latency=0.05)}
    async with open_simulator(_sims(**behaviours)) as sim:
        hedge = llmlb.Hedge(after=0.1, budget=1.0)
        async with _balancer(
            sim, ["slow", "fast"], strategy="failover", hedge=hedge, failure_threshold=1
        ) as lb:
            start = trio.current_time()
            response = await lb.request(REQ)
            elapsed = trio.current_time() - start
            await trio.sleep(5)  # the slow provider's answer would have come by now
            stats, totals = lb.get_stats(), lb.get_totals()
            healthy = [p.name for p in lb.get_healthy_providers()]
        received = {n: sim.stats(n).requests for n in ("slow", "fast")}
    assert response.provider == "fast"
    assert elapsed == pytest.approx(0.15, abs=0.01)
    assert response.attempts == 2
    slow, fast = stats["slow"], stats["fast"]
    # The loser is neither a success nor a failure, and its circuit does not notice.
    assert (slow.total_requests, slow.failed_requests, slow.hedges_cancelled) == (1, 0, 1)
    assert slow.circuit_state == "closed"
    assert slow.consecutive_failures == 0
    assert healthy == ["slow", "fast"]
    assert (fast.hedges_sent, fast.hedges_won, fast.successful_requests) == (1, 1, 1)
    for s in stats.values():
        assert s.total_requests == s.successful_requests + s.failed_requests + s.hedges_cancelled
    assert totals.hedge_budget_used == 1
    assert (totals.requests, totals.succeeded, totals.failed) == (1, 1, 0)
    assert received == {"slow": 1, "fast": 1}


async def test_a_losing_hedge_closes_its_connection(autojump_clock: MockClock) -> None:
    closed_at: list[float] = []

    async def hang_until_closed(stream: trio.abc.Stream, request: srv.Request) -> None:
        if not await stream.receive_some(1):  # the client hung up
            closed_at.append(trio.current_time())

    async def answer(stream: trio.abc.Stream, request: srv.Request) -> None:
        await trio.sleep(0.05)
        await stream.send_all(srv.whole(200, srv.completion("fast")))

    async with trio.open_nursery() as nursery:
        hanging = await srv.start(nursery, hang_until_closed)
        quick = await srv.start(nursery, answer)
        providers = [
            llmlb.ProviderConfig(
                name=name,
                provider="openai-compatible",
                base_url=server.url(),
                model="m",
                api_key_required=False,
            )
            for name, server in (("hanging", hanging), ("quick", quick))
        ]
        async with llmlb.open_balancer(
            strategy="failover",
            providers=providers,
            hedge=llmlb.Hedge(after=0.2, budget=1.0),
            health_check_interval=None,
        ) as lb:
            start = trio.current_time()
            response = await lb.request(REQ)
            won_at = trio.current_time()
            await trio.sleep(1)
            stats = lb.get_stats()
        nursery.cancel_scope.cancel()
    assert response.content == "fast"
    assert won_at - start == pytest.approx(0.25, abs=0.01)
    assert closed_at
    assert closed_at[0] == pytest.approx(won_at, abs=0.01)
    assert stats["hanging"].hedges_cancelled == 1
    assert stats["hanging"].failed_requests == 0


async def test_an_overtaken_attempt_holds_its_cost_and_a_late_losing_copy_does_not(
    autojump_clock: MockClock, script: Script
) -> None:
    # 1: "slow" answers in 0.5 s; the copy sent to "fast" at 0.1 s (2 s) loses late.
    # 2: "slow" hangs; the copy to "fast" at 0.1 s answers in 0.01 s, overtaking it.
    # 3: "slow" answers in 0.3 s; the copy to "fast" at 0.1 s (1 s) loses late again.
    script.add("slow", 0.5, "hang", 0.3)
    script.add("fast", 2.0, 0.01, 1.0)
    providers = [llmlb.ProviderConfig(name=n, provider=script.provider) for n in ("slow", "fast")]
    async with llmlb.open_balancer(
        strategy="failover",
        providers=providers,
        hedge=llmlb.Hedge(after=0.1, budget=1.0),
        health_check_interval=None,
    ) as lb:
        t0 = trio.current_time()
        assert (await lb.request(REQ)).provider == "slow"
        assert (await lb.request(REQ)).provider == "fast"
        t2 = trio.current_time()  # 0.61 s: "slow" was overtaken 0.11 s after it was sent
        assert t2 - t0 == pytest.approx(0.61)
        # Its cost is back to the 0.5 s it was sent at, and stays there until the end
        # that cost predicted (sent at 0.5 s + 0.5 s); only then does it decay again.
        await trio.sleep_until(t0 + 0.99)
        assert lb.get_stats()["slow"].latency_cost_ms == pytest.approx(500.0)
        assert lb.get_stats()["slow"].in_flight == 0  # the actor is done with it
        await trio.sleep_until(t0 + 2.0)
        assert lb.get_stats()["slow"].latency_cost_ms == pytest.approx(500.0 * math.exp(-0.1))
        # "fast" only lost to an earlier attempt: that says nothing against its cost,
        # which decays on through the copy's life.
        fast_cost = lb.get_stats()["fast"].latency_cost_ms
        assert (await lb.request(REQ)).provider == "slow"
        await trio.sleep(0.01)  # the copy's cancellation is settled by "fast"'s worker
        assert lb.get_stats()["fast"].latency_cost_ms == pytest.approx(
            fast_cost * math.exp(-(trio.current_time() - t0 - 2.0) / 10)
        )
        stats = lb.get_stats()
    assert (stats["slow"].hedges_cancelled, stats["fast"].hedges_cancelled) == (1, 2)
    assert stats["slow"].failed_requests == stats["fast"].failed_requests == 0


async def test_a_hedged_requests_retries_are_counted_only_when_made(
    autojump_clock: MockClock, script: Script
) -> None:
    # A 503 from "a", then the retry answers at "b": one retry made. Then both refuse
    # (401): the failover to "b" is made, the next retry finds every provider refused
    # and fails unsent, so it is not counted.
    script.add("a", http_error(503), http_error(401))
    script.add("b", "ok", http_error(401))
    providers = [llmlb.ProviderConfig(name=n, provider=script.provider) for n in ("a", "b")]
    async with llmlb.open_balancer(
        strategy="failover",
        providers=providers,
        hedge=llmlb.Hedge(after=10.0, budget=1.0),
        health_check_interval=None,
        rng=ZeroJitter(),
    ) as lb:
        assert (await lb.request(REQ)).provider == "b"
        assert lb.get_totals().retries == 1
        with pytest.raises(llmlb.LoadBalancerError, match="out of rotation"):
            await lb.request(REQ)
        totals = lb.get_totals()
    assert script.calls == {"a": 2, "b": 2}
    assert totals.retries == 2


async def test_a_hedge_never_goes_to_the_provider_running_the_request(
    autojump_clock: MockClock,
) -> None:
    hedge = llmlb.Hedge(after=0.1, max_extra=3, budget=3.0)  # one request may pay for 3
    slow = Behaviour(latency=1.0)
    async with open_simulator(_sims(a=slow, b=slow, c=slow)) as sim:
        # Three slow providers, up to three copies: each copy goes to a provider not
        # running the request, so there is room for two and the third has nowhere to go.
        async with _balancer(sim, ["a", "b", "c"], hedge=hedge, strategy="failover") as lb:
            response = await lb.request(REQ)
            await trio.sleep(0.01)  # the losers' cancellations settle
            stats, totals = lb.get_stats(), lb.get_totals()
        received = {n: sim.stats(n).requests for n in ("a", "b", "c")}
    assert received == {"a": 1, "b": 1, "c": 1}
    assert totals.hedge_budget_used == 2
    assert response.provider == "a"  # sent first, answered first
    assert stats["b"].hedges_cancelled == stats["c"].hedges_cancelled == 1


async def test_with_one_admissible_provider_there_is_nothing_to_hedge(
    autojump_clock: MockClock,
) -> None:
    hedge = llmlb.Hedge(after=0.1, budget=1.0)
    sims = _sims(only=Behaviour(latency=1.0))
    async with open_simulator(sims) as sim, _balancer(sim, ["only"], hedge=hedge) as lb:
        response = await lb.request(REQ)
        totals = lb.get_totals()
    assert response.attempts == 1
    assert totals.hedge_budget_used == 0
    async with open_simulator(_sims(a=Behaviour(latency=1.0), down=FAST)) as sim:
        await sim.stop_provider("down")
        async with _balancer(sim, ["a", "down"], hedge=hedge, failure_threshold=1) as lb:
            with pytest.raises(llmlb.LoadBalancerError):
                await lb.request(llmlb.LLMRequest(prompt="open the circuit"), timeout=0.05)
            await lb.request(REQ)  # goes to "a" ("down" is open): no hedge to a dead one
            assert lb.get_stats()["down"].total_requests <= 1
            assert lb.get_totals().hedge_budget_used <= 1


async def test_hedges_are_capped_by_the_budget(autojump_clock: MockClock) -> None:
    slow = Behaviour(latency=1.0)
    hedge = llmlb.Hedge(after=0.1, budget=0.1)
    async with open_simulator(_sims(a=slow, b=slow)) as sim:
        async with _balancer(sim, ["a", "b"], hedge=hedge) as lb:
            async with trio.open_nursery() as nursery:
                for _ in range(200):
                    nursery.start_soon(lb.request, REQ)
            totals = lb.get_totals()
        received = sim.stats("a").requests + sim.stats("b").requests
    assert totals.hedge_budget_used == 20  # 10 % of the 200 requests of the window
    assert totals.hedge_budget_refusals == 180
    assert received == 220


async def test_percentile_delay_waits_for_enough_samples(
    autojump_clock: MockClock, script: Script
) -> None:
    script.add("a", *([0.05] * 19), 1.0)
    providers = [llmlb.ProviderConfig(name=n, provider=script.provider) for n in ("a", "b")]
    async with llmlb.open_balancer(
        strategy="failover",
        providers=providers,
        hedge=llmlb.Hedge(after="p95", budget=1.0),
        health_check_interval=None,
    ) as lb:
        for _ in range(19):
            await lb.request(REQ)
        assert lb.get_totals().hedge_budget_used == 0  # 19 samples: no 95th percentile yet
        response = await lb.request(REQ)  # the 20th: "a" takes 1 s, still no samples-based delay
        assert response.provider == "a"
        script.add("a", 1.0)
        start = trio.current_time()
        response = await lb.request(REQ)  # now hedged after p95 of the 20 (0.05 s... 1 s)
        elapsed = trio.current_time() - start
    assert response.provider == "b"
    assert elapsed == pytest.approx(0.05, abs=0.001)  # nearest rank: the 19th of 20 is 0.05


@pytest.mark.parametrize("winner", ["a", "b"])
async def test_exactly_one_stream_is_delivered_when_both_get_their_first_chunk(
    autojump_clock: MockClock, script: Script, winner: str
) -> None:
    # "a" sends its first chunk at 0.3 s; the hedge to "b" goes out at 0.1 s and
    # gets its first chunk at the same instant (or just before, when "b" wins).
    script.add("a", 0.3)
    script.add("b", 0.2 if winner == "a" else 0.19)
    providers = [llmlb.ProviderConfig(name=n, provider=script.provider) for n in ("a", "b")]
    async with llmlb.open_balancer(
        strategy="failover",
        providers=providers,
        hedge=llmlb.Hedge(after=0.1, budget=1.0),
        health_check_interval=None,
    ) as lb:
        chunks = []
        async with lb.stream(REQ) as stream:
            async for chunk in stream:
                chunks.append((chunk.provider, chunk.delta))
        await trio.sleep(1)
        stats = lb.get_stats()
    delivered = {provider for provider, _ in chunks}
    assert len(delivered) == 1, chunks
    assert "".join(delta for _, delta in chunks) == "abc"
    (first,) = delivered
    loser = "b" if first == "a" else "a"
    if winner == "b":
        assert first == "b"
    assert stats[first].streams_completed == 1
    assert stats[loser].streams_completed == 0
    assert stats[loser].streams_failed == 0
    assert stats[loser].hedges_cancelled == 1
    assert stats[loser].failed_requests == 0


async def test_a_stream_is_hedged_only_before_its_first_chunk(autojump_clock: MockClock) -> None:
    behaviours = {
        "a": Behaviour(latency=0.05, token_delay=0.5, chunks=4),
        "b": Behaviour(latency=0.05),
    }
    async with open_simulator(_sims(**behaviours)) as sim:
        hedge = llmlb.Hedge(after=0.1, budget=1.0)
        async with _balancer(sim, ["a", "b"], strategy="failover", hedge=hedge) as lb:
            async with lb.stream(REQ) as stream:
                providers = {chunk.provider async for chunk in stream}
            totals = lb.get_totals()
        received = sim.stats("b").requests
    assert providers == {"a"}  # slow chunks after a quick first one: committed, not hedged
    assert totals.hedge_budget_used == 0
    assert received == 0


async def test_a_hedge_loss_never_opens_a_circuit(autojump_clock: MockClock) -> None:
    behaviours = {"slow": Behaviour(latency=3.0), "fast": FAST}
    async with (
        open_simulator(_sims(**behaviours)) as sim,
        _balancer(
            sim,
            ["slow", "fast"],
            strategy="round-robin",
            hedge=llmlb.Hedge(after=0.2, budget=1.0),
            failure_threshold=1,
        ) as lb,
    ):
        await _closed_loop(lb, workers=4, each=10)
        slow = lb.get_stats()["slow"]
    assert slow.hedges_cancelled == slow.total_requests > 0
    assert (slow.failed_requests, slow.circuit_state) == (0, "closed")


# -- the retry budget ---------------------------------------------------------------------------


async def test_in_an_outage_retries_stay_within_the_budget(autojump_clock: MockClock) -> None:
    down = Behaviour(faults={"503": 1.0})
    async with open_simulator(_sims(a=down, b=down)) as sim:
        async with _balancer(sim, ["a", "b"], retry_delay=0.01, failure_threshold=1000) as lb:
            async with trio.open_nursery() as nursery:
                for _ in range(500):
                    nursery.start_soon(_swallow, lb.request(REQ))
            totals = lb.get_totals()
        attempts = sim.stats("a").requests + sim.stats("b").requests
    # 100 retries of floor + 20 % of the 500 requests of the window, not 3 per request:
    # all 500 first attempts fail at once, 200 get a retry, and every request then ends
    # at its first refused retry.
    assert totals.retries == 200
    assert attempts == 700
    assert totals.retry_budget_refusals == 500
    assert totals.failed == 500


async def test_past_the_budget_a_request_fails_at_once_naming_it(
    autojump_clock: MockClock,
) -> None:
    down = Behaviour(faults={"503": 1.0})
    async with (
        open_simulator(_sims(a=down)) as sim,
        _balancer(sim, ["a"], retry_delay=0.01, failure_threshold=1000) as lb,
    ):
        # One at a time, within one 10 s window: request k may retry while
        # 100 + 0.2 k - (retries so far) >= 1, so 35 get their 3 retries, and after
        # that a retry only every fifth request (0.2 a request).
        errors = [await _error(lb.request(REQ)) for _ in range(45)]
        attempts = [len(e.errors) for e in errors]
        assert attempts == [4] * 35 + [3, 1, 1, 1, 2, 1, 1, 1, 1, 2]
        refused = [e for e in errors if "retry budget is exhausted" in str(e)]
        assert len(refused) == 10  # failed at once, with the errors they had
        assert all(x.status == 503 for e in refused for x in e.errors)
        assert lb.get_totals().retry_budget_refusals == 10
        # Ten seconds later the window has moved on: retries are allowed again.
        await trio.sleep(10)
        assert len((await _error(lb.request(REQ))).errors) == 4


async def test_without_a_budget_an_outage_multiplies_the_load(autojump_clock: MockClock) -> None:
    down = Behaviour(faults={"503": 1.0})
    async with open_simulator(_sims(a=down, b=down)) as sim:
        async with (
            _balancer(
                sim, ["a", "b"], retry_delay=0.01, failure_threshold=1000, retry_budget=None
            ) as lb,
            trio.open_nursery() as nursery,
        ):
            for _ in range(500):
                nursery.start_soon(_swallow, lb.request(REQ))
        attempts = sim.stats("a").requests + sim.stats("b").requests
    assert attempts == 2000  # what the budget prevents: max_retries + 1 attempts each


async def _error(request: Any) -> llmlb.LoadBalancerError:
    with pytest.raises(llmlb.LoadBalancerError) as info:
        await request
    return info.value


async def _swallow(request: Any) -> None:
    with contextlib.suppress(llmlb.LoadBalancerError):
        await request


# -- outlier ejection ---------------------------------------------------------------------------


async def _shares(
    lb: llmlb.Balancer, seconds: float, workers: int = 8, *, errors_ok: bool = False
) -> Counter[str]:
    """Attempts per provider during ``seconds`` of a closed loop; callers' errors fail the test
    unless ``errors_ok``."""
    before = {n: s.total_requests for n, s in lb.get_stats().items()}
    with trio.move_on_after(seconds):
        while True:
            outcomes = await _closed_loop(lb, workers=workers, each=1)
            if not errors_ok:
                assert all(isinstance(o, llmlb.LLMResponse) for o in outcomes), outcomes
    after = lb.get_stats()
    return Counter({n: after[n].total_requests - before.get(n, 0) for n in after})


# Outlier ejection alone: a circuit that opens on three failures in a row would take a
# 30 %-503 provider out before its success rate is judged.
_NO_CIRCUIT = 10_000


async def test_a_flaky_provider_is_ejected_for_longer_each_time(
    autojump_clock: MockClock,
) -> None:
    flaky = Behaviour(latency=0.05, faults={"503": 0.3}, seed=5)
    async with (
        open_simulator(_sims(a=FAST, b=FAST, flaky=flaky)) as sim,
        _balancer(sim, ["a", "b", "flaky"], retry_delay=0.01, failure_threshold=_NO_CIRCUIT) as lb,
    ):
        start = trio.current_time()
        first = await _shares(lb, 5)
        stats = lb.get_stats()["flaky"]
        assert stats.ejections == 1
        assert _ejected_for(lb, "flaky") == pytest.approx(30.0)
        assert stats.ejection_reason is not None
        assert "success rate" in stats.ejection_reason
        assert stats.out_of_rotation_reason is not None
        assert stats.out_of_rotation_reason.startswith("ejected")
        assert not stats.is_healthy
        ejected = await _shares(lb, 20)  # inside the first 30 s ejection
        assert ejected["flaky"] == 0
        await _shares(lb, 30)  # back after 30 s, still flaky: out again, now for 60 s
        assert lb.get_stats()["flaky"].ejections == 2
        assert _ejected_for(lb, "flaky") == pytest.approx(60.0)
        out_again = trio.current_time()
        await _shares(lb, 70)
        assert lb.get_stats()["flaky"].ejections == 3
        assert _ejected_for(lb, "flaky") == pytest.approx(90.0)
    assert first["flaky"] < first["a"]
    assert out_again - start < 60


def _ejected_for(lb: llmlb.Balancer, name: str) -> float:
    """How long the provider's last ejection lasts (its reason says)."""
    reason = lb.get_stats()[name].ejection_reason
    assert reason is not None
    match = re.search(r"out for ([0-9.]+) s", reason)
    assert match, reason
    return float(match.group(1))


async def test_panic_spreads_over_ejected_providers_when_few_are_left(
    autojump_clock: MockClock,
) -> None:
    flaky = Behaviour(latency=0.05, faults={"503": 0.3}, seed=5)
    async with (
        open_simulator(_sims(a=FAST, b=FAST, c=FAST, flaky=flaky)) as sim,
        _balancer(
            sim, ["a", "b", "c", "flaky"], retry_delay=0.01, failure_threshold=_NO_CIRCUIT
        ) as lb,
    ):
        await _shares(lb, 3)
        assert lb.get_stats()["flaky"].ejections == 1
        assert (await _shares(lb, 2))["flaky"] == 0
        # Two of the four go down hard and their circuits open: one admissible provider
        # left of four.
        await sim.stop_provider("b")
        await sim.stop_provider("c")
        for name in ("b", "c"):
            open_circuit(lb, name)
        shares = Counter[str]()
        for _ in range(40):
            response = await lb.request(REQ)
            shares[response.provider] += 1
        flaky_stats = lb.get_stats()["flaky"]
    assert shares["flaky"] > 0  # ejected, but used: better than piling onto "a" alone
    assert flaky_stats.ejections == 1


async def test_the_last_admissible_provider_is_never_ejected(autojump_clock: MockClock) -> None:
    flaky = Behaviour(latency=0.05, faults={"503": 0.3}, seed=5)
    async with (
        open_simulator(_sims(only=flaky)) as sim,
        _balancer(sim, ["only"], retry_delay=0.01, failure_threshold=_NO_CIRCUIT) as lb,
    ):
        await _shares(lb, 5, errors_ok=True)
        assert lb.get_stats()["only"].ejections == 0
    both = Behaviour(latency=0.05, faults={"503": 0.3}, seed=6)
    async with (
        open_simulator(_sims(x=flaky, y=both)) as sim,
        _balancer(sim, ["x", "y"], retry_delay=0.01, failure_threshold=_NO_CIRCUIT) as lb,
    ):
        await _shares(lb, 5, errors_ok=True)
        # Equally flaky: neither is an outlier against the other.
        assert [s.ejections for s in lb.get_stats().values()] == [0, 0]
    async with (
        open_simulator(_sims(good=FAST, bad=flaky)) as sim,
        _balancer(sim, ["good", "bad"], retry_delay=0.01, failure_threshold=_NO_CIRCUIT) as lb,
    ):
        await _shares(lb, 5)
        stats = lb.get_stats()
        assert (stats["good"].ejections, stats["bad"].ejections) == (0, 1)
