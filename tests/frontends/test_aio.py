"""``llmlb_actors.aio`` beyond the shared suite: mass cancellation, asyncio.timeout, lifetimes.

Plain test functions: each runs its own asyncio loop (``asyncio.run``), with
the simulator on a trio thread of its own. Both runners are covered.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

import llmlb_actors as llmlb
from llmlb_actors import LLMRequest, aio
from llmlb_actors.sim import Behaviour, SimProvider, SimulatorThread

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

REQ = LLMRequest(prompt="Write a funny dad joke.")
# A stream that is still dripping whenever a test acts on it (500 deltas, 20 ms apart:
# 10 s), so interrupting or cancelling it mid-way never races its natural end.
DRIP = Behaviour(token_delay=0.02, chunks=500, reply=" ".join(["drip"] * 500))
RUNNERS = ["thread", "guest"]


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    providers = [
        SimProvider(name="a", protocol="openai"),
        SimProvider(name="b", protocol="openai"),
        SimProvider(name="hang", protocol="openai", behaviour=Behaviour(faults={"hang": 1.0})),
        SimProvider(name="drip", protocol="openai", behaviour=DRIP),
    ]
    with SimulatorThread(providers) as running:
        yield running


def opts(sim: SimulatorThread, *names: str, runner: str, **more: Any) -> dict[str, Any]:
    return {
        "providers": [sim.provider_config(n, **more.pop("provider", {})) for n in names],
        "health_check_interval": None,
        "runner": runner,
        **more,
    }


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for a condition (polling; there is no virtual clock off trio)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("runner", RUNNERS)
def test_cancelling_1000_requests_in_flight_closes_every_upstream_connection(
    sim: SimulatorThread, runner: str
) -> None:
    n = 1000

    async def main() -> None:
        options = opts(sim, "hang", runner=runner, provider={"max_concurrency": n})
        async with aio.open_balancer(**options) as lb:
            tasks = [asyncio.create_task(lb.request(REQ)) for _ in range(n)]
            # Every attempt reached the upstream and holds a connection there.
            await until(lambda: sim.stats("hang").requests == n)
            assert sim.stats("hang").open_connections == n
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
            # As in trio code, the provider settles each cancelled attempt just after
            # its caller returns: its connection is closed (not pooled), its stats counted.
            await until(lambda: sim.stats("hang").open_connections == 0)
            await until(lambda: lb.get_stats()["hang"].in_flight == 0)
            stats = lb.get_stats()["hang"]
            totals = lb.get_totals()
        assert stats.cancelled_requests == n
        assert stats.total_requests == stats.failed_requests == n
        assert stats.successful_requests == 0
        assert (stats.in_flight, stats.queued) == (0, 0)
        assert (totals.requests, totals.succeeded, totals.failed, totals.in_flight) == (n, 0, n, 0)
        assert sim.stats("hang").connections == n  # none was reused after its cancellation

    asyncio.run(main())


@pytest.mark.parametrize("runner", RUNNERS)
def test_asyncio_timeout_cancels_upstream(sim: SimulatorThread, runner: str) -> None:
    async def main() -> None:
        async with aio.open_balancer(**opts(sim, "hang", runner=runner)) as lb:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await lb.request(REQ)
            # asyncio.timeout turned our CancelledError into TimeoutError: the task is not
            # left "cancelling" (a swallowed or extra cancellation would show here).
            task = asyncio.current_task()
            assert task is not None
            assert task.cancelling() == 0
            await until(lambda: sim.stats("hang").open_connections == 0)
            await until(lambda: lb.get_stats()["hang"].in_flight == 0)
            assert lb.get_stats()["hang"].cancelled_requests == 1

    asyncio.run(main())


@pytest.mark.parametrize("runner", RUNNERS)
def test_cancelling_a_stream_mid_way_closes_it(sim: SimulatorThread, runner: str) -> None:
    async def main() -> None:
        async with aio.open_balancer(**opts(sim, "drip", runner=runner)) as lb:
            got: list[str] = []

            async def consume() -> None:
                async with lb.stream(REQ) as chunks:
                    async for chunk in chunks:
                        got.append(chunk.delta)

            task = asyncio.create_task(consume())
            await until(lambda: len(got) >= 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: sim.stats("drip").open_connections == 0)
            stats = lb.get_stats()["drip"]
            assert (stats.in_flight, stats.streams_started) == (0, 1)
            assert stats.streams_completed == 0

    asyncio.run(main())


@pytest.mark.parametrize("runner", RUNNERS)
def test_closing_with_a_stream_open_breaks_it_partially(sim: SimulatorThread, runner: str) -> None:
    async def main() -> None:
        errors: list[BaseException] = []
        got: list[str] = []

        async def consume(lb: aio.Balancer) -> None:
            try:
                async with lb.stream(REQ) as chunks:
                    async for chunk in chunks:
                        got.append(chunk.delta)
            except llmlb.LLMError as exc:
                errors.append(exc)

        async with aio.open_balancer(**opts(sim, "drip", runner=runner)) as lb:
            task = asyncio.create_task(consume(lb))
            await until(lambda: len(got) >= 1)
        await task
        assert len(errors) == 1
        error = errors[0]
        assert type(error) is llmlb.LLMError
        assert error.partial
        assert "".join(got).startswith(error.partial_text)
        await until(lambda: sim.stats("drip").open_connections == 0)

    asyncio.run(main())


@pytest.mark.parametrize("runner", RUNNERS)
def test_map_reads_an_async_iterable_lazily_and_closes_it(
    sim: SimulatorThread, runner: str
) -> None:
    pulled = 0
    closed = False

    async def prompts() -> AsyncIterator[LLMRequest]:
        nonlocal pulled, closed
        try:
            for i in range(10_000):
                pulled += 1
                yield LLMRequest(prompt=f"p{i}")
        finally:
            closed = True

    async def main() -> None:
        async with aio.open_balancer(**opts(sim, "a", "b", runner=runner)) as lb:
            seen = 0
            async with lb.map(prompts(), concurrency=4, buffer=4) as results:
                async for result in results:
                    assert result.ok
                    seen += 1
                    if seen == 50:
                        stats = results.statistics()
                        break
            assert closed
            # Bounded: the batch's window (8) plus at most the hand-over (64) ahead.
            assert pulled <= 50 + 8 + 64
            assert stats.window == 8
            assert stats.max_in_flight <= 4

    asyncio.run(main())


@pytest.mark.parametrize("runner", RUNNERS)
def test_two_balancers_on_one_loop_and_reopening(sim: SimulatorThread, runner: str) -> None:
    async def main() -> None:
        async with (
            aio.open_balancer(**opts(sim, "a", runner=runner)) as one,
            aio.open_balancer(**opts(sim, "b", runner=runner)) as two,
        ):
            got = await asyncio.gather(one.request(REQ), two.request(REQ))
            assert [r.provider for r in got] == ["a", "b"]
        async with aio.open_balancer(**opts(sim, "a", runner=runner)) as again:
            assert (await again.request(REQ)).provider == "a"

    asyncio.run(main())
    asyncio.run(main())  # a fresh loop: nothing of the first one is left behind


def test_misuse_is_explained(sim: SimulatorThread) -> None:
    async def main() -> None:
        with pytest.raises(llmlb.ConfigError, match="runner"):
            aio.open_balancer(providers=[sim.provider_config("a")], runner="fork")  # type: ignore[arg-type]
        async with aio.open_balancer(**opts(sim, "a", runner="thread")) as lb:
            with pytest.raises(TypeError, match="async context manager"):
                async for _ in lb.map([REQ]):  # type: ignore[attr-defined]
                    pass
            with pytest.raises(TypeError, match="async context manager"):
                async for _ in lb.stream(REQ):
                    pass
            with pytest.raises(TypeError, match="iterable"):
                lb.map(42)  # type: ignore[arg-type]
            # From another loop (another thread): refused, not answered on the wrong loop.
            with ThreadPoolExecutor(1) as pool:
                elsewhere = pool.submit(asyncio.run, lb.request(REQ))
                with pytest.raises(RuntimeError, match="another event loop"):
                    await asyncio.wrap_future(elsewhere)
            assert (await lb.request(REQ)).provider == "a"
        with pytest.raises(llmlb.BalancerClosedError):
            await lb.request(REQ)
        assert lb.get_totals().requests == 1  # observation still works after close

    asyncio.run(main())
