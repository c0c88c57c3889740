"""``llmlb_actors.sync`` beyond the shared suite: many threads, a running loop, Ctrl-C, laziness."""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import llmlb_actors as llmlb
from llmlb_actors import LLMRequest, sync
from llmlb_actors.sim import Behaviour, SimProvider, SimulatorThread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REQ = LLMRequest(prompt="Write a funny dad joke.")
# A stream that is still dripping whenever a test acts on it (500 deltas, 20 ms apart:
# 10 s), so interrupting or cancelling it mid-way never races its natural end.
DRIP = Behaviour(token_delay=0.02, chunks=500, reply=" ".join(["drip"] * 500))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    providers = [SimProvider(name=n, protocol="openai") for n in ("a", "b", "c")] + [
        SimProvider(name="hang", protocol="openai", behaviour=Behaviour(faults={"hang": 1.0})),
        SimProvider(name="drip", protocol="openai", behaviour=DRIP),
    ]
    with SimulatorThread(providers) as running:
        yield running


def opts(sim: SimulatorThread, *names: str, **more: Any) -> dict[str, Any]:
    return {
        "providers": [sim.provider_config(n) for n in names],
        "health_check_interval": None,
        **more,
    }


def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def interrupt_main_when(predicate: Callable[[], bool]) -> threading.Thread:
    """A real SIGINT to the main thread once ``predicate()`` holds (Ctrl-C, as a user)."""
    main = threading.main_thread().ident
    assert main is not None
    assert threading.current_thread() is threading.main_thread()

    def watch() -> None:
        until(predicate)
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def test_64_threads_at_once(sim: SimulatorThread) -> None:
    with sync.open_balancer(**opts(sim, "a", "b", "c")) as lb:
        with ThreadPoolExecutor(64) as pool:
            got = list(pool.map(lambda _: lb.request(REQ).provider, range(1920)))
        stats = lb.get_stats()
        totals = lb.get_totals()
    assert Counter(got) == {"a": 640, "b": 640, "c": 640}  # round-robin, whoever calls
    assert all(s.total_requests == s.successful_requests == 640 for s in stats.values())
    assert (totals.requests, totals.succeeded, totals.in_flight) == (1920, 1920, 0)


def test_inside_a_running_asyncio_loop(sim: SimulatorThread) -> None:
    """A notebook cell: plain calls, while the thread's asyncio loop is running."""

    async def cell() -> tuple[str, str, int]:
        asyncio.get_running_loop()  # there is one
        with sync.open_balancer(**opts(sim, "a", "b")) as lb:
            provider = lb.request(REQ).provider
            text = "".join(chunk.delta for chunk in lb.stream(REQ))
            answered = sum(r.ok for r in lb.map([REQ] * 20, concurrency=4))
        return provider, text, answered

    provider, text, answered = asyncio.run(cell())
    assert provider == "a"
    assert text.startswith("Simulated reply from b")
    assert answered == 20


def test_ctrl_c_during_a_stream_closes_it(sim: SimulatorThread) -> None:
    got: list[str] = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with sync.open_balancer(**opts(sim, "drip")) as lb:
            watcher = interrupt_main_when(lambda: len(got) >= 2)
            with pytest.raises(KeyboardInterrupt):
                got.extend(chunk.delta for chunk in lb.stream(REQ))
            watcher.join()
            # The upstream was closed before KeyboardInterrupt reached us.
            until(lambda: sim.stats("drip").open_connections == 0)
            until(lambda: lb.get_stats()["drip"].in_flight == 0)
            assert lb.get_stats()["drip"].streams_completed == 0
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_batch_cancels_it(sim: SimulatorThread) -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with sync.open_balancer(**opts(sim, "hang")) as lb:
            watcher = interrupt_main_when(lambda: sim.stats("hang").requests == 8)
            with pytest.raises(KeyboardInterrupt):
                list(lb.map([REQ] * 100, concurrency=8))
            watcher.join()
            until(lambda: sim.stats("hang").open_connections == 0)
            until(lambda: lb.get_stats()["hang"].in_flight == 0)
            assert lb.get_stats()["hang"].cancelled_requests == 8
            assert sim.stats("hang").requests == 8  # nothing more was started
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_a_script(sim: SimulatorThread) -> None:
    """The real thing: a script blocked in ``lb.request`` gets SIGINT from outside."""
    hang = sim.provider_config("hang")
    script = textwrap.dedent(
        f"""
        import os, signal, sys, threading, time
        import llmlb_actors as llmlb
        from llmlb_actors import sync

        config = llmlb.ProviderConfig(
            name="hang", provider="openai-compatible", model={hang.model!r},
            base_url={hang.base_url!r}, api_key_required=False,
        )
        lb = sync.open_balancer(providers=[config], health_check_interval=None)
        print("ready", flush=True)
        try:
            lb.request(llmlb.LLMRequest(prompt="hi"))
        except KeyboardInterrupt:
            while lb.get_stats()["hang"].in_flight:
                time.sleep(0.01)
            stats = lb.get_stats()["hang"]
            totals = lb.get_totals()
            print("interrupted", stats.cancelled_requests, stats.failed_requests, totals.failed)
            lb.close()
            sys.exit(130)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        until(lambda: sim.stats("hang").requests == 1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert out.strip() == "interrupted 1 1 1"
    until(lambda: sim.stats("hang").open_connections == 0)


def test_map_is_lazy_and_bounded(sim: SimulatorThread) -> None:
    pulled = 0
    closed = False

    def prompts() -> Iterator[LLMRequest]:
        nonlocal pulled, closed
        try:
            for i in range(1_000_000):
                pulled += 1
                yield LLMRequest(prompt=f"p{i}")
        finally:
            closed = True

    with sync.open_balancer(**opts(sim, "a", "b")) as lb:
        results = lb.map(prompts(), concurrency=8, buffer=8)
        for seen, result in enumerate(results, 1):
            assert result.ok
            if seen == 200:
                stats = results.statistics()
                break
        # A slow consumer: the batch waits for it instead of reading ahead.
        time.sleep(0.1)
        ahead = pulled - 200
        results.close()
        assert closed
    assert ahead <= 16 + 64  # the window, plus what is being handed over
    assert stats.max_in_flight <= 8
    assert stats.window == 16


def test_a_stream_left_early_is_closed(sim: SimulatorThread) -> None:
    with sync.open_balancer(**opts(sim, "drip")) as lb:
        for _chunk in lb.stream(REQ):
            break  # the stream object is dropped here: collected, it cancels upstream
        gc.collect()
        until(lambda: sim.stats("drip").open_connections == 0)
        until(lambda: lb.get_stats()["drip"].in_flight == 0)


def balancer_thread(before: set[threading.Thread]) -> threading.Thread:
    (thread,) = [t for t in set(threading.enumerate()) - before if t.name == "llmlb-balancer"]
    return thread


def test_lifetime(sim: SimulatorThread) -> None:
    before = set(threading.enumerate())
    lb = sync.open_balancer(**opts(sim, "a"))
    thread = balancer_thread(before)
    assert lb.request(REQ).provider == "a"
    lb.close()
    lb.close()  # idempotent
    assert not thread.is_alive()
    with pytest.raises(llmlb.BalancerClosedError):
        lb.request(REQ)
    with pytest.raises(llmlb.BalancerClosedError):
        lb.stream(REQ).__enter__()
    assert lb.get_totals().requests == 1  # observation still works after close

    # A balancer dropped without close() stops its thread too.
    before = set(threading.enumerate())
    lb = sync.open_balancer(**opts(sim, "a"))
    thread = balancer_thread(before)
    del lb
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()

    with pytest.raises(llmlb.ConfigError, match="non-empty"):
        sync.open_balancer(providers=[])
    with pytest.raises(TypeError, match="iterable"), sync.open_balancer(**opts(sim, "a")) as lb:
        lb.map(42)  # type: ignore[arg-type]
