"""The supervisor over loopback HTTP: restarts, the restart limit, re-routing, add/remove/shutdown.

Crashes are injected with ``llmlb_actors.testing.crash_provider`` (as if a
worker raised); the requests the crashed actor held are real HTTP exchanges with
the simulator, so "re-routed" here means a fresh exchange with another
simulated provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import llmlb_actors as llmlb
from llmlb_actors.sim import Behaviour, SimProvider, Simulator, open_simulator
from llmlb_actors.testing import ZeroJitter, crash_provider
from tests.reliability._support import library_tasks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio.testing import MockClock

REQ = llmlb.LLMRequest(prompt="supervise me")
SLOW = Behaviour(latency=5.0)


@pytest.fixture(params=["default", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    providers = [
        SimProvider(name=n, protocol="openai", api_key=f"sk-{n}", behaviour=Behaviour(latency=0.1))
        for n in ("a", "b", "c")
    ]
    async with open_simulator(providers) as simulator:
        yield simulator


def balancer(sim: Simulator, names: tuple[str, ...], transport: str, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "providers": [sim.provider_config(n) for n in names],
        "strategy": "failover",
        "transport": transport,
        "health_check_interval": None,
        "retry_delay": 0.1,
        "rng": ZeroJitter(),
    }
    options.update(kw)
    return llmlb.open_balancer(**options)


class Results:
    """Collects what concurrent callers got: providers that answered, and errors."""

    def __init__(self) -> None:
        self.providers: list[str] = []
        self.attempts: list[int] = []
        self.errors: list[BaseException] = []

    async def request(self, lb: llmlb.Balancer) -> None:
        try:
            resp = await lb.request(REQ)
        except llmlb.LLMLBError as exc:
            self.errors.append(exc)
        else:
            self.providers.append(resp.provider)
            self.attempts.append(resp.attempts)

    @property
    def count(self) -> int:
        return len(self.providers) + len(self.errors)


async def crash(lb: llmlb.Balancer, name: str) -> None:
    crash_provider(lb, name, RuntimeError(f"boom in {name}"))
    await trio.testing.wait_all_tasks_blocked()


async def test_restart_within_limit_reroutes_held_requests_and_keeps_rotation(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    sim.set_behaviour("a", SLOW)  # a holds its requests long enough to crash under them
    results = Results()
    async with (
        balancer(sim, ("a", "b"), transport, max_restarts=3) as lb,
        trio.open_nursery() as nursery,
    ):
        for _ in range(5):
            nursery.start_soon(results.request, lb)
        await trio.testing.wait_all_tasks_blocked()
        assert sim.stats("a").requests == 5
        assert lb.get_stats()["a"].in_flight == 5
        await crash(lb, "a")
        await trio.sleep(1.0)
        # Every request a held was re-routed and answered by b.
        assert results.providers == ["b"] * 5
        assert results.attempts == [2] * 5
        stats = lb.get_stats()["a"]
        assert stats.restarts == 1
        assert stats.in_rotation
        assert stats.is_healthy
        assert stats.in_flight == 0
        assert stats.total_requests == stats.failed_requests == 5
        assert "RuntimeError: boom in a" in (stats.last_error or "")
        assert lb.get_totals().rerouted == 5
        # Still first in failover order, and working after the restart.
        sim.set_behaviour("a", Behaviour())
        assert (await lb.request(REQ)).provider == "a"


async def test_past_the_restart_limit_the_provider_leaves_rotation_for_good(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    async with balancer(sim, ("a", "b"), transport, max_restarts=2) as lb:
        for expected_restarts in (1, 2):
            await crash(lb, "a")
            assert lb.get_stats()["a"].restarts == expected_restarts
            assert lb.get_stats()["a"].in_rotation
        await crash(lb, "a")
        stats = lb.get_stats()["a"]
        assert stats.restarts == 2
        assert not stats.in_rotation
        assert not stats.is_healthy
        reason = stats.out_of_rotation_reason or ""
        assert "restart limit reached" in reason
        assert "RuntimeError: boom in a" in reason  # the cause, not the nursery's group
        assert [p.name for p in lb.get_healthy_providers()] == ["b"]
        assert await lb.health_check() == {"a": False, "b": True}
        before = sim.stats("a").requests
        for _ in range(6):
            assert (await lb.request(REQ)).provider == "b"
        async with lb.stream(REQ) as chunks:
            assert {c.provider async for c in chunks} == {"b"}
        await trio.sleep(100.0)  # no cool-down brings it back
        assert (await lb.request(REQ)).provider == "b"
        assert sim.stats("a").requests == before
        with pytest.raises(RuntimeError, match="not running"):
            crash_provider(lb, "a", RuntimeError("again"))
        await lb.remove_provider("a")  # a dead provider can still be removed
        assert set(lb.get_stats()) == {"b"}


async def test_restarts_outside_the_window_are_forgiven(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    async with balancer(sim, ("a", "b"), transport, max_restarts=1, restart_window=10.0) as lb:
        for _ in range(4):
            await crash(lb, "a")
            assert lb.get_stats()["a"].in_rotation
            await trio.sleep(11.0)
        assert lb.get_stats()["a"].restarts == 4
        await crash(lb, "a")
        await crash(lb, "a")
        assert not lb.get_stats()["a"].in_rotation


async def test_a_committed_stream_breaks_typed_and_an_uncommitted_one_moves(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    sim.set_behaviour("a", Behaviour(token_delay=1.0, chunks=8))
    async with balancer(sim, ("a", "b"), transport, stream_idle_timeout=5.0) as lb:
        got: list[str] = []

        async def crash_after_two_chunks() -> None:
            async with lb.stream(REQ) as chunks:
                async for chunk in chunks:
                    got.append(chunk.delta)
                    if len(got) == 2:
                        await crash(lb, "a")

        with pytest.raises(llmlb.LLMError) as info:
            await crash_after_two_chunks()
        assert info.value.partial
        assert info.value.kind == "crash"
        assert info.value.partial_text == "".join(got)
        # Before its first chunk a stream is re-routed like any request.
        sim.set_behaviour("a", SLOW)
        async with trio.open_nursery() as nursery:

            async def crash_soon() -> None:
                await trio.sleep(1.0)
                await crash(lb, "a")

            nursery.start_soon(crash_soon)
            async with lb.stream(REQ) as chunks:
                last = [c async for c in chunks][-1]
        assert last.provider == "b"
        assert last.finish_reason == "stop"
        assert lb.get_stats()["a"].restarts == 2


async def test_crash_during_add_and_remove_loses_nothing(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    sim.set_behaviour("a", Behaviour(latency=2.0))
    sim.set_behaviour("c", Behaviour(latency=2.0))
    results = Results()
    async with (
        balancer(
            sim, ("a", "b"), transport, strategy="round-robin", max_restarts=5, drain_timeout=10.0
        ) as lb,
        trio.open_nursery() as nursery,
    ):
        for _ in range(20):
            nursery.start_soon(results.request, lb)
        await trio.testing.wait_all_tasks_blocked()
        # c joins while a crashes; then c crashes as soon as it is in rotation.
        async with trio.open_nursery() as inner:
            inner.start_soon(lb.add_provider, sim.provider_config("c"))
            inner.start_soon(crash, lb, "a")
        for _ in range(20):
            nursery.start_soon(results.request, lb)
        await trio.testing.wait_all_tasks_blocked()
        assert lb.get_stats()["c"].in_flight > 0
        await crash(lb, "c")
        # a is removed while it holds requests, and crashes while draining.
        for _ in range(10):
            nursery.start_soon(results.request, lb)
        await trio.testing.wait_all_tasks_blocked()
        assert lb.get_stats()["a"].in_flight > 0
        start = trio.current_time()
        async with trio.open_nursery() as inner:
            inner.start_soon(lb.remove_provider, "a")
            await trio.sleep(0.5)
            await crash(lb, "a")
        assert trio.current_time() - start < 1.0  # the crash ended the drain at once
        assert "a" not in lb.get_stats()
    assert results.count == 50
    assert not results.errors, results.errors
    assert set(results.providers) <= {"a", "b", "c"}
    stats = lb.get_stats()
    assert stats["c"].restarts == 1
    for s in stats.values():
        assert s.in_flight == 0
        assert s.total_requests == s.successful_requests + s.failed_requests


async def test_crash_during_shutdown_loses_nothing(
    sim: Simulator, transport: str, autojump_clock: MockClock
) -> None:
    for name in ("a", "b"):
        sim.set_behaviour(name, Behaviour(latency=3.0, token_delay=0.5))
    results = Results()
    broken: list[llmlb.LLMError] = []

    async def stream(lb: llmlb.Balancer) -> None:
        try:
            async with lb.stream(REQ) as chunks:
                async for _ in chunks:
                    pass
        except llmlb.LLMError as exc:
            broken.append(exc)
        except llmlb.LoadBalancerError as exc:
            results.errors.append(exc)

    async with trio.open_nursery() as callers:
        async with balancer(sim, ("a", "b"), transport, strategy="round-robin") as lb:
            for _ in range(10):
                callers.start_soon(results.request, lb)
            for _ in range(4):
                callers.start_soon(stream, lb)
            await trio.sleep(3.2)  # the streams have committed, the requests are held
            for name in ("a", "b"):
                crash_provider(lb, name, RuntimeError("crash at shutdown"))
            # leave the block now: shutdown races the crashes
        with trio.fail_after(lb.config.max_retry_delay + 1.0):
            while results.count + len(broken) < 14:
                await trio.sleep(0.1)
    assert results.count + len(broken) == 14
    for exc in results.errors:
        assert isinstance(exc, llmlb.LoadBalancerError)
    for exc in broken:
        assert exc.partial
    assert not library_tasks()
    for s in lb.get_stats().values():
        assert s.in_flight == 0
        assert s.total_requests == s.successful_requests + s.failed_requests
    totals = lb.get_totals()
    assert totals.in_flight == 0
    assert totals.requests == totals.succeeded + totals.failed == 14


class _Fragile(llmlb.BaseProvider):
    """A custom provider whose constructor fails after the first one (a broken restart)."""

    built = 0

    def __init__(self, config: llmlb.ProviderConfig) -> None:
        super().__init__(config)
        type(self).built += 1
        if type(self).built > 1:
            raise OSError("cannot reconnect")

    async def make_request(self, request: llmlb.LLMRequest) -> llmlb.LLMResponse:
        await trio.sleep(1.0)
        return llmlb.LLMResponse(content="fragile")


async def test_a_restart_that_fails_takes_only_that_provider_out(
    sim: Simulator, autojump_clock: MockClock
) -> None:
    _Fragile.built = 0
    providers = [llmlb.ProviderConfig(name="fragile", provider=_Fragile), sim.provider_config("b")]
    async with llmlb.open_balancer(
        providers=providers, strategy="failover", health_check_interval=None, rng=ZeroJitter()
    ) as lb:
        async with trio.open_nursery() as nursery:
            results = Results()
            nursery.start_soon(results.request, lb)
            await trio.testing.wait_all_tasks_blocked()
            await crash(lb, "fragile")
        assert results.providers == ["b"]
        stats = lb.get_stats()["fragile"]
        assert not stats.in_rotation
        assert "OSError: cannot reconnect" in (stats.out_of_rotation_reason or "")
        assert (await lb.request(REQ)).provider == "b"
