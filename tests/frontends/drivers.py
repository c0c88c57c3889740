"""One behaviour suite, three front-ends: trio, asyncio (both runners) and sync.

A scenario is an ``async def scenario(fe, sim)``. ``fe`` is a `FrontEnd`:
``fe.open(**balancer_options)`` gives a `Driver` over a balancer opened
through that front-end, and its methods do each thing the way a user of
that front-end would (a trio cancel scope, ``task.cancel()``, Ctrl-C). The
sync front-end's methods never suspend, so its scenarios run with no event
loop at all: `run_scenario` drives the coroutine by hand.

Off trio there is no virtual clock: scenarios use small real latencies and
scripted faults, and wait for conditions (``fe.wait_until``), never for time.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

import llmlb_actors as llmlb
from llmlb_actors import aio, sync

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

    from llmlb_actors import BatchResult, LLMRequest, LLMResponse, StreamChunk
    from llmlb_actors.sim import SimulatorThread

FRONT_ENDS = ["trio", "asyncio", "asyncio-guest", "sync"]

Outcome = Any  # an LLMResponse, or the exception the caller saw


class Driver:
    """The operations of the suite, over one open balancer. Subclasses per front-end."""

    async def request(self, req: LLMRequest, *, timeout: float | None = None) -> LLMResponse:
        raise NotImplementedError

    async def stream(self, req: LLMRequest) -> list[StreamChunk]:
        """Every chunk, or the error the iteration raised (``PartialStream``)."""
        raise NotImplementedError

    async def stream_first(self, req: LLMRequest) -> StreamChunk:
        """The first chunk, then leave the stream early."""
        raise NotImplementedError

    async def map(self, reqs: Iterable[Any], **options: Any) -> tuple[list[BatchResult], Any]:
        """Every result, and the exception iterating raised at the end (or None)."""
        raise NotImplementedError

    async def cancel_request(self, req: LLMRequest, until: Callable[[], bool]) -> str:
        """Send ``req``, cancel it as this front-end's user would once ``until()``;
        returns ``"cancelled"`` (or raises what the request raised instead)."""
        raise NotImplementedError

    def get_stats(self) -> dict[str, llmlb.ProviderStats]:
        return self.lb.get_stats()  # type: ignore[no-any-return]

    def get_totals(self) -> llmlb.BalancerTotals:
        return self.lb.get_totals()  # type: ignore[no-any-return]

    async def health_check(self) -> dict[str, bool]:
        raise NotImplementedError

    async def add_provider(self, config: llmlb.ProviderConfig) -> None:
        raise NotImplementedError

    async def remove_provider(self, name: str) -> None:
        raise NotImplementedError

    lb: Any


class PartialStream(Exception):
    """What `Driver.stream` raises when the stream broke after chunks arrived."""

    def __init__(self, chunks: list[StreamChunk], error: BaseException) -> None:
        super().__init__(repr(error))
        self.chunks = chunks
        self.error = error


class FrontEnd:
    name: str

    def open(self, **options: Any) -> Any:
        """``async with fe.open(**balancer_options) as lb`` (a `Driver`)."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll ``predicate`` until it holds (a condition wait, not a timed one)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await self.sleep(0.002)

    async def shutdown_during(
        self, options: dict[str, Any], reqs: list[LLMRequest], until: Callable[[Driver], bool]
    ) -> tuple[list[Outcome], Driver]:
        """Send ``reqs`` concurrently; once ``until(lb)``, close the balancer under them.
        Returns each request's outcome and the (closed) driver."""
        raise NotImplementedError


# -- trio ------------------------------------------------------------------------------------


class TrioDriver(Driver):
    def __init__(self, lb: llmlb.Balancer) -> None:
        self.lb = lb

    async def request(self, req: LLMRequest, *, timeout: float | None = None) -> LLMResponse:
        return await self.lb.request(req, timeout=timeout)

    async def stream(self, req: LLMRequest) -> list[StreamChunk]:
        got: list[StreamChunk] = []
        async with self.lb.stream(req) as chunks:
            try:
                async for chunk in chunks:
                    got.append(chunk)
            except llmlb.LLMError as exc:
                raise PartialStream(got, exc) from None
        return got

    async def stream_first(self, req: LLMRequest) -> StreamChunk:
        async with self.lb.stream(req) as chunks:
            async for chunk in chunks:
                return chunk
        raise AssertionError("empty stream")

    async def map(self, reqs: Iterable[Any], **options: Any) -> tuple[list[BatchResult], Any]:
        got: list[BatchResult] = []
        try:
            async with self.lb.map(reqs, **options) as results:
                async for result in results:
                    got.append(result)
        except Exception as exc:
            return got, exc
        return got, None

    async def cancel_request(self, req: LLMRequest, until: Callable[[], bool]) -> str:
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def watch() -> None:
                while not until():
                    await trio.sleep(0.002)
                scope.cancel()

            nursery.start_soon(watch)
            with scope:
                await self.lb.request(req)
            assert scope.cancelled_caught
        return "cancelled"

    async def health_check(self) -> dict[str, bool]:
        return await self.lb.health_check()

    async def add_provider(self, config: llmlb.ProviderConfig) -> None:
        await self.lb.add_provider(config)

    async def remove_provider(self, name: str) -> None:
        await self.lb.remove_provider(name)


class TrioFrontEnd(FrontEnd):
    name = "trio"

    @asynccontextmanager
    async def open(self, **options: Any) -> AsyncIterator[Driver]:
        async with llmlb.open_balancer(**options) as lb:
            yield TrioDriver(lb)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def shutdown_during(
        self, options: dict[str, Any], reqs: list[LLMRequest], until: Callable[[Driver], bool]
    ) -> tuple[list[Outcome], Driver]:
        outcomes: list[Outcome] = [None] * len(reqs)

        async def one(i: int, lb: llmlb.Balancer) -> None:
            try:
                outcomes[i] = await lb.request(reqs[i])
            except Exception as exc:
                outcomes[i] = exc

        async with trio.open_nursery() as nursery, llmlb.open_balancer(**options) as lb:
            driver = TrioDriver(lb)
            for i in range(len(reqs)):
                nursery.start_soon(one, i, lb)
            await self.wait_until(lambda: until(driver))
        return outcomes, driver


# -- asyncio ---------------------------------------------------------------------------------


class AioDriver(Driver):
    def __init__(self, lb: aio.Balancer) -> None:
        self.lb = lb

    async def request(self, req: LLMRequest, *, timeout: float | None = None) -> LLMResponse:
        return await self.lb.request(req, timeout=timeout)

    async def stream(self, req: LLMRequest) -> list[StreamChunk]:
        got: list[StreamChunk] = []
        async with self.lb.stream(req) as chunks:
            try:
                async for chunk in chunks:
                    got.append(chunk)
            except llmlb.LLMError as exc:
                raise PartialStream(got, exc) from None
        return got

    async def stream_first(self, req: LLMRequest) -> StreamChunk:
        async with self.lb.stream(req) as chunks:
            async for chunk in chunks:
                return chunk
        raise AssertionError("empty stream")

    async def map(self, reqs: Iterable[Any], **options: Any) -> tuple[list[BatchResult], Any]:
        got: list[BatchResult] = []
        try:
            async with self.lb.map(reqs, **options) as results:
                async for result in results:
                    got.append(result)
        except Exception as exc:
            return got, exc
        return got, None

    async def cancel_request(self, req: LLMRequest, until: Callable[[], bool]) -> str:
        task = asyncio.create_task(self.lb.request(req))
        while not until():
            assert not task.done(), task
            await asyncio.sleep(0.002)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        raise AssertionError("the request was not cancelled")

    async def health_check(self) -> dict[str, bool]:
        return await self.lb.health_check()

    async def add_provider(self, config: llmlb.ProviderConfig) -> None:
        await self.lb.add_provider(config)

    async def remove_provider(self, name: str) -> None:
        await self.lb.remove_provider(name)


class AioFrontEnd(FrontEnd):
    def __init__(self, runner: str) -> None:
        self.runner = runner
        self.name = "asyncio" if runner == "thread" else "asyncio-guest"

    @asynccontextmanager
    async def open(self, **options: Any) -> AsyncIterator[Driver]:
        async with aio.open_balancer(runner=self.runner, **options) as lb:  # type: ignore[arg-type]
            yield AioDriver(lb)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def shutdown_during(
        self, options: dict[str, Any], reqs: list[LLMRequest], until: Callable[[Driver], bool]
    ) -> tuple[list[Outcome], Driver]:
        async with aio.open_balancer(runner=self.runner, **options) as lb:  # type: ignore[arg-type]
            driver = AioDriver(lb)
            tasks = [asyncio.create_task(lb.request(r)) for r in reqs]
            await self.wait_until(lambda: until(driver))
        done = await asyncio.gather(*tasks, return_exceptions=True)
        return list(done), driver


# -- sync -------------------------------------------------------------------------------------


class SyncDriver(Driver):
    def __init__(self, lb: sync.Balancer) -> None:
        self.lb = lb

    async def request(self, req: LLMRequest, *, timeout: float | None = None) -> LLMResponse:
        return self.lb.request(req, timeout=timeout)

    async def stream(self, req: LLMRequest) -> list[StreamChunk]:
        got: list[StreamChunk] = []
        try:
            for chunk in self.lb.stream(req):
                got.append(chunk)
        except llmlb.LLMError as exc:
            if not got:
                raise
            raise PartialStream(got, exc) from None
        return got

    async def stream_first(self, req: LLMRequest) -> StreamChunk:
        with self.lb.stream(req) as chunks:
            for chunk in chunks:
                return chunk
        raise AssertionError("empty stream")

    async def map(self, reqs: Iterable[Any], **options: Any) -> tuple[list[BatchResult], Any]:
        got: list[BatchResult] = []
        try:
            with self.lb.map(reqs, **options) as results:
                for result in results:
                    got.append(result)
        except Exception as exc:
            return got, exc
        return got, None

    async def cancel_request(self, req: LLMRequest, until: Callable[[], bool]) -> str:
        """Ctrl-C: a real SIGINT to this (the main) thread while it is blocked in the call."""
        assert threading.current_thread() is threading.main_thread()
        main = threading.main_thread().ident
        assert main is not None
        stop = threading.Event()

        def interrupt() -> None:
            while not until():
                if stop.wait(0.002):
                    return
            signal.pthread_kill(main, signal.SIGINT)

        watcher = threading.Thread(target=interrupt)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        watcher.start()
        try:
            self.lb.request(req)
        except KeyboardInterrupt:
            return "cancelled"
        finally:
            stop.set()
            watcher.join()
            signal.signal(signal.SIGINT, previous)
        raise AssertionError("the request was not interrupted")

    async def health_check(self) -> dict[str, bool]:
        return self.lb.health_check()

    async def add_provider(self, config: llmlb.ProviderConfig) -> None:
        self.lb.add_provider(config)

    async def remove_provider(self, name: str) -> None:
        self.lb.remove_provider(name)


class SyncFrontEnd(FrontEnd):
    name = "sync"

    @asynccontextmanager
    async def open(self, **options: Any) -> AsyncIterator[Driver]:
        with sync.open_balancer(**options) as lb:
            yield SyncDriver(lb)

    async def sleep(self, seconds: float) -> None:
        time.sleep(seconds)  # noqa: ASYNC251 - the sync front-end's scenarios run with no loop

    async def shutdown_during(
        self, options: dict[str, Any], reqs: list[LLMRequest], until: Callable[[Driver], bool]
    ) -> tuple[list[Outcome], Driver]:
        outcomes: list[Outcome] = [None] * len(reqs)
        lb = sync.open_balancer(**options)
        driver = SyncDriver(lb)

        def one(i: int) -> None:
            try:
                outcomes[i] = lb.request(reqs[i])
            except Exception as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(reqs))]
        for thread in threads:
            thread.start()
        await self.wait_until(lambda: until(driver))
        lb.close()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive(), "a caller is still blocked after close()"
        return outcomes, driver


def front_end(name: str) -> FrontEnd:
    if name == "trio":
        return TrioFrontEnd()
    if name == "asyncio":
        return AioFrontEnd("thread")
    if name == "asyncio-guest":
        return AioFrontEnd("guest")
    assert name == "sync"
    return SyncFrontEnd()


def _drive(coro: Awaitable[Any]) -> Any:
    """Run a coroutine that never suspends (the sync front-end's scenarios), with no loop."""
    gen = coro.__await__()
    try:
        gen.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("a sync scenario suspended: it awaited something that is not sync")


def run_scenario(
    name: str, scenario: Callable[[FrontEnd, SimulatorThread], Awaitable[Any]], sim: SimulatorThread
) -> Any:
    """Run ``scenario`` through front-end ``name`` on that front-end's own loop (or none)."""
    fe = front_end(name)
    if name == "trio":
        return trio.run(lambda: scenario(fe, sim))
    if name.startswith("asyncio"):
        return asyncio.run(scenario(fe, sim))  # type: ignore[arg-type]
    return _drive(scenario(fe, sim))
