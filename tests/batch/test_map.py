"""`Balancer.map`: ordering, failures, cancellation, laziness and bounded memory."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, ClassVar

import pytest
import trio
import trio.testing

import llmlb_actors as llmlb
from llmlb_actors import BaseProvider, LLMError, LLMRequest, LLMResponse, Usage
from llmlb_actors._batch import BatchResults

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from trio.testing import MockClock


class Echo(BaseProvider):
    """Answers ``echo:<prompt>``. Prompt ``fail`` is rejected (400); ``slow:N`` takes N s.

    Every other prompt takes 1 ms (virtual time), so requests overlap.
    """

    running: ClassVar[int] = 0
    max_running: ClassVar[int] = 0
    started: ClassVar[list[str]] = []

    async def make_request(self, request: LLMRequest) -> LLMResponse:
        cls = type(self)
        prompt = request.prompt or ""
        cls.started.append(prompt)
        cls.running += 1
        cls.max_running = max(cls.max_running, cls.running)
        try:
            if prompt == "fail":
                raise LLMError("bad prompt", provider=self.name, status=400, retryable=False)
            await trio.sleep(float(prompt[5:]) if prompt.startswith("slow:") else 0.001)
        finally:
            cls.running -= 1
        return LLMResponse(
            content=f"echo:{prompt}",
            model="echo",
            usage=Usage(total_tokens=1),
            finish_reason="stop",
        )


@pytest.fixture(autouse=True)
def _reset_echo() -> None:
    Echo.running = Echo.max_running = 0
    Echo.started = []


def balancer(**kw: object) -> llmlb.BalancerConfig:
    fields: dict[str, object] = {
        "providers": [
            llmlb.ProviderConfig(name="a", provider=Echo, max_concurrency=256),
            llmlb.ProviderConfig(name="b", provider=Echo, max_concurrency=256),
        ],
        "health_check_interval": None,
        "retry_delay": 0.0,
    }
    fields.update(kw)
    return llmlb.BalancerConfig(**fields)  # type: ignore[arg-type]


def prompts(n: int) -> list[LLMRequest]:
    return [LLMRequest(prompt=f"p{i}", id=f"id{i}") for i in range(n)]


async def test_unordered_answers_every_item_once(autojump_clock: MockClock) -> None:
    async with (
        llmlb.open_balancer(balancer()) as lb,
        lb.map(prompts(300), concurrency=16) as results,
    ):
        got = [r async for r in results]
        stats = results.statistics()
    assert sorted(r.index for r in got) == list(range(300))
    assert all(r.ok and r.id == f"id{r.index}" for r in got)
    assert all(r.response is not None and r.response.content == f"echo:p{r.index}" for r in got)
    assert {r.provider for r in got} == {"a", "b"}
    assert all(r.attempts == 1 and r.error is None for r in got)
    assert Echo.max_running == 16
    assert stats.max_in_flight == 16
    assert stats.issued == stats.consumed == 300
    assert stats.in_flight == stats.buffered == 0


async def test_ordered_keeps_input_order_with_bounded_buffer(autojump_clock: MockClock) -> None:
    # The first request is slow; everything after it finishes first and waits.
    requests = [LLMRequest(prompt="slow:5", id="head"), *prompts(200)]
    async with (
        llmlb.open_balancer(balancer()) as lb,
        lb.map(requests, concurrency=8, buffer=12, ordered=True) as results,
    ):
        got = []
        async for r in results:
            if r.index == 0:
                # The head took 5 s; meanwhile the producer stopped at the window.
                assert trio.current_time() >= 5.0
                assert results.statistics().issued == 20
                assert len(Echo.started) == 20
                # Before the head was taken, everything but the head sat buffered.
                assert results.statistics().buffered == 19
            got.append(r)
        stats = results.statistics()
    assert [r.index for r in got] == list(range(201))
    assert got[0].id == "head"
    assert stats.window == 20
    assert stats.max_buffered == 20  # the head joined the 19 waiting behind it
    assert stats.max_in_flight == 8


async def test_failures_do_not_stop_the_batch(autojump_clock: MockClock) -> None:
    requests = [LLMRequest(prompt="fail" if i % 3 == 0 else f"p{i}", id=str(i)) for i in range(30)]
    async with (
        llmlb.open_balancer(balancer()) as lb,
        lb.map(requests, concurrency=4, ordered=True) as results,
    ):
        got = [r async for r in results]
    assert len(got) == 30
    for r in got:
        if r.index % 3 == 0:
            assert r.response is None
            assert isinstance(r.error, llmlb.LoadBalancerError)
            assert r.provider in ("a", "b")
            assert r.attempts == 1
            summary = r.error_summary()
            assert summary is not None
            assert summary["type"] == "LoadBalancerError"
            assert summary["attempts"][0]["status"] == 400
            assert summary["attempts"][0]["message"] == "bad prompt"
        else:
            assert r.ok
            assert r.error_summary() is None


async def test_item_that_is_not_a_request_is_a_config_error_result() -> None:
    items: list[object] = [LLMRequest(prompt="x"), "just a string", LLMRequest(prompt="y")]
    async with (
        llmlb.open_balancer(balancer()) as lb,
        lb.map(items, ordered=True) as results,  # type: ignore[arg-type]
    ):
        got = [r async for r in results]
    assert [r.ok for r in got] == [True, False, True]
    assert isinstance(got[1].error, llmlb.ConfigError)
    assert got[1].error.field == "requests[1]"
    assert got[1].attempts == 0


async def test_break_cancels_the_rest(autojump_clock: MockClock) -> None:
    async with llmlb.open_balancer(balancer()) as lb:
        requests = [LLMRequest(prompt="slow:100", id=str(i)) for i in range(10)]
        requests.insert(0, LLMRequest(prompt="p", id="fast"))
        async with lb.map(requests, concurrency=4) as results:
            async for r in results:
                assert r.id == "fast"
                break
        # Leaving the block cancelled the slow ones at once; nothing kept running.
        # (A cancelled attempt unwinds in its provider's worker task, on that task's
        # next scheduler pass: let them run, without letting any time pass.)
        left_at = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == left_at < 1.0
        assert Echo.running == 0
        assert len(Echo.started) <= 5
        totals = lb.get_totals()
        assert totals.in_flight == 0
        assert totals.requests == totals.succeeded + totals.failed
        # The balancer is still usable.
        resp = await lb.request(LLMRequest(prompt="after"))
        assert resp.content == "echo:after"


async def test_outer_cancel_scope_stops_the_batch(autojump_clock: MockClock) -> None:
    async with llmlb.open_balancer(balancer()) as lb:
        seen = 0
        with trio.move_on_after(0.5):
            async with lb.map(
                (LLMRequest(prompt="slow:0.1") for _ in itertools.count()), concurrency=8
            ) as results:
                async for _ in results:
                    seen += 1
        assert trio.current_time() == pytest.approx(0.5)
        assert 8 * 4 <= seen <= 8 * 5
        assert Echo.running == 0
        assert lb.get_totals().in_flight == 0


async def test_infinite_sync_generator_is_consumed_lazily(autojump_clock: MockClock) -> None:
    pulled = 0
    closed = False

    def forever() -> Iterator[LLMRequest]:
        nonlocal pulled, closed
        try:
            for i in itertools.count():
                pulled += 1
                yield LLMRequest(prompt=f"p{i}")
        finally:
            closed = True

    async with (
        llmlb.open_balancer(balancer()) as lb,
        lb.map(forever(), concurrency=5, buffer=3) as results,
    ):
        async for r in results:
            if r.index >= 99:
                break
    # 100 consumed, plus at most the window (8) taken ahead.
    assert 100 <= pulled <= 108
    assert closed  # the generator was closed when the batch ended, not left to the GC


async def test_infinite_async_generator_is_closed(autojump_clock: MockClock) -> None:
    closed = False

    async def forever() -> AsyncIterator[LLMRequest]:
        nonlocal closed
        try:
            for i in itertools.count():
                await trio.lowlevel.checkpoint()
                yield LLMRequest(prompt=f"p{i}")
        finally:
            closed = True

    async with (
        llmlb.open_balancer(balancer()) as lb,
        lb.map(forever(), concurrency=5, ordered=True) as results,
    ):
        indexes = []
        async for r in results:
            indexes.append(r.index)
            if len(indexes) == 50:
                break
    assert indexes == list(range(50))
    assert closed


async def test_input_error_is_raised_after_earlier_results() -> None:
    def broken() -> Iterator[LLMRequest]:
        yield LLMRequest(prompt="a")
        yield LLMRequest(prompt="b")
        raise RuntimeError("input file vanished")

    got = []

    async def run(lb: llmlb.Balancer) -> None:
        async with lb.map(broken()) as results:
            async for r in results:
                got.append(r)

    async with llmlb.open_balancer(balancer()) as lb:
        with pytest.raises(RuntimeError, match="input file vanished"):
            await run(lb)
    assert sorted(r.index for r in got) == [0, 1]


async def test_consumer_exception_propagates_unwrapped() -> None:
    async def run(lb: llmlb.Balancer) -> None:
        async with lb.map(prompts(50), concurrency=4) as results:
            async for _ in results:
                raise KeyError("mine")

    async with llmlb.open_balancer(balancer()) as lb:
        with pytest.raises(KeyError, match="mine"):
            await run(lb)
        assert lb.get_totals().in_flight == 0


async def test_async_iterable_input_and_empty_input() -> None:
    async def gen() -> AsyncIterator[LLMRequest]:
        for r in prompts(5):
            yield r

    async with llmlb.open_balancer(balancer()) as lb:
        async with lb.map(gen(), ordered=True) as results:
            assert [r.id async for r in results] == [f"id{i}" for i in range(5)]
        async with lb.map([]) as results:
            assert [r async for r in results] == []
            # Exhausted iterators stay exhausted.
            with pytest.raises(StopAsyncIteration):
                await results.__anext__()


async def test_misuse_is_reported_clearly() -> None:
    async with llmlb.open_balancer(balancer()) as lb:
        with pytest.raises(TypeError, match=r"use `async with lb\.map"):
            aiter(lb.map(prompts(1)))
        with pytest.raises(llmlb.ConfigError, match="concurrency"):
            lb.map(prompts(1), concurrency=0)
        with pytest.raises(llmlb.ConfigError, match="buffer"):
            lb.map(prompts(1), buffer=-1)
        with pytest.raises(TypeError, match="iterable"):
            lb.map(42)  # type: ignore[arg-type]
        batch = lb.map(prompts(1))
        async with batch as results:
            assert isinstance(results, BatchResults)
            with pytest.raises(RuntimeError, match="only once"):
                await batch.__aenter__()


async def test_per_request_timeout(autojump_clock: MockClock) -> None:
    requests = [LLMRequest(prompt="slow:10", id="slow"), LLMRequest(prompt="p", id="fast")]
    async with (
        llmlb.open_balancer(balancer()) as lb,
        lb.map(requests, timeout=1.0, ordered=True) as results,
    ):
        slow, fast = [r async for r in results]
    assert isinstance(slow.error, llmlb.LoadBalancerError)
    assert "timed out" in str(slow.error)
    assert slow.latency == pytest.approx(1.0)
    assert fast.ok
