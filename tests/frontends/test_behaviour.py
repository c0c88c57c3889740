"""The shared behaviour suite, run through every front-end against the simulator.

Each test is one scenario (see `drivers`), parametrized over the trio API,
``llmlb_actors.aio`` (guest run and trio thread) and ``llmlb_actors.sync``:
the same strategies, retries, streams, failover, cancellation, exactly-once
accounting and shutdown must hold whichever front-end the caller uses.
These are plain test functions: each front-end runs its own loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import llmlb_actors as llmlb
from llmlb_actors import LLMRequest
from llmlb_actors.sim import Behaviour, SimProvider, SimulatorThread
from tests.frontends.drivers import FRONT_ENDS, PartialStream, run_scenario

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.frontends.drivers import FrontEnd

REQ = LLMRequest(prompt="Write a funny dad joke.")


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    providers = [SimProvider(name=n, protocol="openai", model=f"gpt-{n}") for n in "abc"]
    providers += [
        SimProvider(name="claude", protocol="anthropic", model="claude-sim"),
        SimProvider(name="gemini", protocol="gemini", model="gemini-sim"),
        SimProvider(
            name="hang", protocol="openai", model="m", behaviour=Behaviour(faults={"hang": 1.0})
        ),
        SimProvider(
            name="drip", protocol="anthropic", model="m", behaviour=Behaviour(token_delay=0.05)
        ),
    ]
    with SimulatorThread(providers) as running:
        yield running


def options(sim: SimulatorThread, *names: str, **overrides: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "providers": [sim.provider_config(n) for n in names],
        "health_check_interval": None,
        "retry_delay": 0.001,
        "max_retry_delay": 0.01,
        "seed": 7,
    }
    opts.update(overrides)
    return opts


pytestmark = pytest.mark.parametrize("fe_name", FRONT_ENDS)


# -- strategies ---------------------------------------------------------------------------------


def test_round_robin_rotates_across_protocols(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        async with fe.open(**options(sim, "a", "claude", "gemini")) as lb:
            got = [await lb.request(REQ) for _ in range(6)]
            stats = lb.get_stats()
        assert [r.provider for r in got] == ["a", "claude", "gemini"] * 2
        assert [r.model for r in got[:3]] == ["gpt-a", "claude-sim", "gemini-sim"]
        assert all(r.content.startswith(f"Simulated reply from {r.provider}") for r in got)
        assert all(r.attempts == 1 and r.latency > 0 for r in got)
        assert {n: s.successful_requests for n, s in stats.items()} == dict.fromkeys(
            ("a", "claude", "gemini"), 2
        )

    run_scenario(fe_name, scenario, sim)


def test_weighted_and_custom_strategies(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        providers = [
            sim.provider_config(n, weight=w) for n, w in zip("abc", [3, 2, 1], strict=True)
        ]
        async with fe.open(**options(sim, strategy="weighted", providers=providers)) as lb:
            picks = sorted([(await lb.request(REQ)).provider for _ in range(6)])
        assert picks == ["a", "a", "a", "b", "b", "c"]

        def second(states: list[llmlb.ProviderState]) -> llmlb.ProviderState:
            return states[1]

        async with fe.open(
            **options(sim, "a", "b", "c", strategy="custom", custom_strategy=second)
        ) as lb:
            assert (await lb.request(REQ)).provider == "b"

    run_scenario(fe_name, scenario, sim)


# -- retries and errors -------------------------------------------------------------------------


def test_retries_then_failover(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        sim.script("a", ["503", "500", "ok"])
        async with fe.open(**options(sim, "a")) as lb:
            assert (await lb.request(REQ)).attempts == 3
        sim.script("a", ["500"])
        async with fe.open(**options(sim, "a", "b", strategy="failover")) as lb:
            resp = await lb.request(REQ)
            assert (resp.provider, resp.attempts) == ("b", 2)
            stats = lb.get_stats()
        assert stats["a"].failed_requests == 1
        assert stats["b"].successful_requests == 1

    run_scenario(fe_name, scenario, sim)


def test_errors_are_the_same_types(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        sim.script("a", ["500"] * 4)
        async with fe.open(**options(sim, "a")) as lb:
            with pytest.raises(llmlb.LoadBalancerError, match="All providers failed") as info:
                await lb.request(REQ)
            assert type(info.value) is llmlb.LoadBalancerError
            assert [e.status for e in info.value.errors] == [500] * 4
            assert all(type(e) is llmlb.LLMError for e in info.value.errors)

            sim.script("a", ["400"])
            with pytest.raises(llmlb.LoadBalancerError, match="Request rejected by a"):
                await lb.request(REQ)
            assert sim.stats("a").requests == 5  # the 400 was not retried

            with pytest.raises(TypeError, match="must be an LLMRequest"):
                await lb.request("not a request")  # type: ignore[arg-type]
        with pytest.raises(llmlb.ConfigError, match="non-empty"):
            async with fe.open(**options(sim, providers=[])):
                pass

    run_scenario(fe_name, scenario, sim)


# -- streams ------------------------------------------------------------------------------------


def test_stream_whole(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        async with fe.open(**options(sim, "claude")) as lb:
            chunks = await lb.stream(REQ)
            whole = await lb.request(REQ)
            stats = lb.get_stats()["claude"]
        assert len(chunks) > 2
        assert "".join(c.delta for c in chunks) == whole.content
        assert chunks[-1].finish_reason == "stop"
        assert {c.provider for c in chunks} == {"claude"}
        assert (stats.streams_started, stats.streams_completed) == (1, 1)

    run_scenario(fe_name, scenario, sim)


def test_stream_fails_over_before_the_first_chunk(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        sim.script("claude", ["529"])
        async with fe.open(**options(sim, "claude", "gemini", strategy="failover")) as lb:
            chunks = await lb.stream(REQ)
        assert {c.provider for c in chunks} == {"gemini"}
        assert chunks[-1].finish_reason == "stop"
        assert sim.stats("claude").requests == 1

    run_scenario(fe_name, scenario, sim)


def test_stream_broken_after_the_first_chunk_is_partial(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        sim.script("claude", ["cut"])
        async with fe.open(**options(sim, "claude", "gemini", strategy="failover")) as lb:
            with pytest.raises(PartialStream) as info:
                await lb.stream(REQ)
            stats = lb.get_stats()
        error = info.value.error
        assert type(error) is llmlb.LLMError
        assert error.partial
        assert error.partial_text == "".join(c.delta for c in info.value.chunks)
        assert info.value.chunks  # the caller had chunks: no failover after that
        assert sim.stats("gemini").requests == 0
        assert stats["claude"].streams_failed == 1

    run_scenario(fe_name, scenario, sim)


def test_leaving_a_stream_early_closes_the_upstream(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        async with fe.open(**options(sim, "drip")) as lb:
            first = await lb.stream_first(REQ)
            assert first.delta
            await fe.wait_until(lambda: sim.stats("drip").open_connections == 0)
            await fe.wait_until(lambda: lb.get_stats()["drip"].in_flight == 0)
            stats = lb.get_stats()["drip"]
        assert stats.total_requests == stats.successful_requests + stats.failed_requests == 1

    run_scenario(fe_name, scenario, sim)


# -- cancellation --------------------------------------------------------------------------------


def test_cancelling_a_call_cancels_the_attempt_upstream(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        async with fe.open(**options(sim, "hang")) as lb:
            seen = await lb.cancel_request(REQ, lambda: sim.stats("hang").requests == 1)
            assert seen == "cancelled"
            await fe.wait_until(lambda: sim.stats("hang").open_connections == 0)
            await fe.wait_until(lambda: lb.get_stats()["hang"].in_flight == 0)
            stats = lb.get_stats()["hang"]
            totals = lb.get_totals()
        assert stats.cancelled_requests == 1
        assert stats.total_requests == stats.failed_requests == 1
        assert (totals.requests, totals.failed, totals.in_flight) == (1, 1, 0)

    run_scenario(fe_name, scenario, sim)


def test_request_timeout_is_the_balancers(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        async with fe.open(**options(sim, "hang")) as lb:
            with pytest.raises(llmlb.LoadBalancerError, match=r"timed out after 0\.05s"):
                await lb.request(REQ, timeout=0.05)
            await fe.wait_until(lambda: sim.stats("hang").open_connections == 0)
            await fe.wait_until(lambda: lb.get_stats()["hang"].in_flight == 0)
            assert lb.get_stats()["hang"].cancelled_requests == 1

    run_scenario(fe_name, scenario, sim)


# -- exactly once ----------------------------------------------------------------------------------


def test_exactly_once_under_faults(fe_name: str, sim: SimulatorThread) -> None:
    faults = {"500": 0.1, "503": 0.1, "reset": 0.05, "malformed": 0.05}
    for i, name in enumerate("abc"):
        sim.set_behaviour(name, Behaviour(faults=faults, seed=i))

    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        n = 300
        reqs = (LLMRequest(prompt=f"question {i}", id=f"q{i}") for i in range(n))
        async with fe.open(**options(sim, "a", "b", "c", max_retries=2)) as lb:
            results, error = await lb.map(reqs, concurrency=32)
            stats = lb.get_stats()
            totals = lb.get_totals()
        assert error is None
        assert sorted(r.index for r in results) == list(range(n))
        assert all((r.response is None) != (r.error is None) for r in results)
        assert all(r.id == f"q{r.index}" for r in results)
        failed = [r for r in results if not r.ok]
        assert all(type(r.error) is llmlb.LoadBalancerError for r in failed)
        for s in stats.values():
            assert s.total_requests == s.successful_requests + s.failed_requests
            assert s.in_flight == 0
        assert totals.requests == n
        assert (totals.succeeded, totals.failed) == (n - len(failed), len(failed))
        upstream = sum(sim.stats(name).requests for name in "abc")
        assert upstream == sum(s.total_requests for s in stats.values())

    run_scenario(fe_name, scenario, sim)


def test_map_ordered_and_input_errors(fe_name: str, sim: SimulatorThread) -> None:
    def broken() -> Iterator[LLMRequest]:
        yield LLMRequest(prompt="one")
        yield LLMRequest(prompt="two")
        raise ValueError("the input broke")

    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        async with fe.open(**options(sim, "a", "b")) as lb:
            reqs = [LLMRequest(prompt=f"p{i}") for i in range(40)]
            results, error = await lb.map(reqs, concurrency=8, ordered=True)
            assert error is None
            assert [r.index for r in results] == list(range(40))

            results, error = await lb.map(broken(), concurrency=4)
            assert sorted(r.index for r in results) == [0, 1]
            assert type(error) is ValueError

            results, error = await lb.map([REQ, "nope"], concurrency=2, ordered=True)
            assert type(results[1].error) is llmlb.ConfigError

            results, error = await lb.map([REQ], concurrency=0)
            assert type(error) is llmlb.ConfigError

    run_scenario(fe_name, scenario, sim)


# -- membership and health ----------------------------------------------------------------------


def test_health_check_add_and_remove(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        async with fe.open(**options(sim, "a", "claude")) as lb:
            assert await lb.health_check() == {"a": True, "claude": True}
            await lb.add_provider(sim.provider_config("gemini"))
            assert sorted(lb.get_stats()) == ["a", "claude", "gemini"]
            await lb.remove_provider("a")
            assert sorted(lb.get_stats()) == ["claude", "gemini"]
            with pytest.raises(KeyError):
                await lb.remove_provider("a")
            got = {(await lb.request(REQ)).provider for _ in range(4)}
        assert got == {"claude", "gemini"}

    run_scenario(fe_name, scenario, sim)


# -- shutdown ------------------------------------------------------------------------------------


def test_shutdown_with_requests_in_flight(fe_name: str, sim: SimulatorThread) -> None:
    async def scenario(fe: FrontEnd, sim: SimulatorThread) -> None:
        n = 20
        reqs = [REQ] * n
        outcomes, lb = await fe.shutdown_during(
            options(sim, "hang"), reqs, lambda lb: sim.stats("hang").requests == n
        )
        assert all(type(o) is llmlb.BalancerClosedError for o in outcomes), outcomes
        await fe.wait_until(lambda: sim.stats("hang").open_connections == 0)
        totals = lb.get_totals()
        assert (totals.requests, totals.failed, totals.in_flight) == (n, n, 0)
        with pytest.raises(llmlb.BalancerClosedError):
            await lb.request(REQ)

    run_scenario(fe_name, scenario, sim)
