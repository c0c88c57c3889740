"""Fault soak over real loopback HTTP: many requests, many in flight, 20 % mixed faults.

Four simulated providers (four wire protocols) inject a mix of HTTP errors,
hangs, resets, malformed and cut answers into 20 % of their replies. The
balancer runs ``LLMLB_SOAK_REQUESTS`` requests (default 20,000; try 200,000
by hand) with ``LLMLB_SOAK_IN_FLIGHT`` (default 1,000) in flight, on the
autojump clock (hangs and backoff cost no wall time). Checked: no request
lost or hung, every failure a typed `LoadBalancerError` whose attempts are
classified right, every fault the simulator injected accounted for by the
balancer's stats, and the RSS growth over the second half bounded. Peak RSS
is printed (``-s``) and written to ``soak.txt`` in the test's tmp dir.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio

import llmlb_actors as llmlb
from llmlb_actors._actors.provider import ProviderActor
from llmlb_actors.sim import Behaviour, SimProtocol, SimProvider, open_simulator
from tests.reliability._support import balancer_error_problems, library_tasks, rss_bytes

if TYPE_CHECKING:
    from pathlib import Path

    import pytest
    from trio.testing import MockClock

REQUESTS = int(os.environ.get("LLMLB_SOAK_REQUESTS", "20000"))
IN_FLIGHT = int(os.environ.get("LLMLB_SOAK_IN_FLIGHT", "1000"))
STREAM_EVERY = 10  # one request in ten is streamed
KEY = "sk-soak-SECRET-2718281828"

# 20 % of replies are faults, of every kind a request can meet.
FAULTS = {
    "500": 0.02,
    "503": 0.02,
    "529": 0.02,
    "429": 0.02,
    "hang": 0.01,
    "reset": 0.02,
    "malformed": 0.02,
    "wrong_shape": 0.02,
    "cut": 0.02,
    "stall": 0.01,
    "stream_error": 0.02,
}
PROTOCOLS: tuple[SimProtocol, ...] = ("openai", "anthropic", "gemini", "cohere")
ATTEMPT_TIMEOUT = 2.0
MAX_RETRIES = 6
# A request may wait for its attempts, their backoff and some queueing; anything
# near this (virtual) bound is a hang.
HUNG_AFTER = 120.0
RSS_GROWTH_LIMIT = 96 * 1024 * 1024


def _behaviour(seed: int) -> Behaviour:
    return Behaviour(
        latency=0.05,
        latency_jitter=0.05,
        token_delay=0.01,
        chunks=4,
        faults=FAULTS,
        retry_after=0.5,
        seed=seed,
    )


async def test_fault_soak(
    autojump_clock: MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinds: Counter[tuple[str, int | None]] = Counter()
    original = ProviderActor._record_failure

    def record(
        actor: ProviderActor,
        error: llmlb.LLMError,
        now: float,
        retry: bool,
        start: float | None = None,
    ) -> None:
        kinds[error.kind, error.status] += 1
        original(actor, error, now, retry, start)

    monkeypatch.setattr(ProviderActor, "_record_failure", record)

    sims = [
        SimProvider(name=f"s-{p}", protocol=p, api_key=KEY, behaviour=_behaviour(i))
        for i, p in enumerate(PROTOCOLS)
    ]
    per_provider = -(-IN_FLIGHT // len(sims)) + 8
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    hung = 0
    longest = 0.0
    issued = 0
    done = 0
    rss_mid = 0
    wall = time.perf_counter()

    async with open_simulator(sims) as sim:
        providers = [
            sim.provider_config(s.name, max_concurrency=per_provider, timeout=ATTEMPT_TIMEOUT)
            for s in sims
        ]
        async with llmlb.open_balancer(
            providers=providers,
            max_retries=MAX_RETRIES,
            retry_delay=0.05,
            max_retry_delay=1.0,
            failure_threshold=10,
            cooldown=1.0,
            health_check_interval=10.0,
            stream_idle_timeout=1.0,
            queue_size=IN_FLIGHT,
            seed=7,
        ) as lb:

            async def one(n: int) -> None:
                nonlocal hung, longest
                request = llmlb.LLMRequest(prompt=f"soak request {n} please answer")
                start = trio.current_time()
                with trio.move_on_after(HUNG_AFTER) as scope:
                    try:
                        if n % STREAM_EVERY == 0:
                            async with lb.stream(request) as chunks:
                                async for _ in chunks:
                                    pass
                            outcomes["streamed"] += 1
                        else:
                            resp = await lb.request(request)
                            assert resp.content
                            outcomes["answered"] += 1
                    except llmlb.LoadBalancerError as exc:
                        outcomes[f"failed: {exc.message.split(' after')[0]}"] += 1
                        problems.extend(balancer_error_problems(exc, secret=KEY))
                    except llmlb.LLMError as exc:
                        outcomes["stream broken after its first chunk"] += 1
                        if not exc.partial:
                            problems.append(f"a non-partial LLMError escaped: {exc!r}")
                if scope.cancelled_caught:
                    hung += 1
                longest = max(longest, trio.current_time() - start)

            async def worker() -> None:
                nonlocal issued, done, rss_mid
                while issued < REQUESTS:
                    n = issued
                    issued += 1
                    await one(n)
                    done += 1
                    if done == REQUESTS // 2:
                        rss_mid = rss_bytes()[0]

            async with trio.open_nursery() as nursery:
                for _ in range(IN_FLIGHT):
                    nursery.start_soon(worker)

            stats = lb.get_stats()
            totals = lb.get_totals()
        sim_stats = {s.name: sim.stats(s.name) for s in sims}

    rss_end, rss_peak = rss_bytes()
    wall = time.perf_counter() - wall
    injected = sum(
        count
        for st in sim_stats.values()
        for outcome, count in st.outcomes.items()
        if outcome != "ok"
    )
    upstream = sum(st.requests for st in sim_stats.values())
    report = "\n".join(
        [
            f"requests: {REQUESTS} ({IN_FLIGHT} in flight), wall {wall:.1f}s, "
            f"virtual {trio.current_time():.1f}s",
            f"outcomes: {dict(outcomes)}",
            f"upstream exchanges: {upstream}, faults injected: {injected} "
            f"({injected / max(upstream, 1):.1%})",
            f"attempt failures by (kind, status): {dict(sorted(kinds.items(), key=str))}",
            f"lost: {REQUESTS - sum(outcomes.values())}, hung: {hung}, "
            f"longest request: {longest:.2f}s (virtual)",
            f"RSS at half: {rss_mid / 2**20:.1f} MiB, at end: {rss_end / 2**20:.1f} MiB, "
            f"peak: {rss_peak / 2**20:.1f} MiB",
        ]
    )
    print("\n" + report)
    (tmp_path / "soak.txt").write_text(report + "\n", encoding="utf-8")

    assert sum(outcomes.values()) == REQUESTS, "lost requests"
    assert hung == 0
    assert not problems, problems[:10]
    assert totals.requests == REQUESTS
    assert totals.succeeded + totals.failed == REQUESTS
    assert totals.in_flight == 0
    assert injected >= 0.15 * upstream
    replays = 0
    for name, st in sim_stats.items():
        s = stats[name]
        assert s.total_requests == s.successful_requests + s.failed_requests
        assert s.in_flight == 0
        assert s.successful_requests == st.outcomes.get("ok", 0), (name, st.outcomes, s)
        # Every exchange the simulator answered was one attempt, counted once: the
        # transport never replays a POST it fully sent (a completion could be billed
        # twice), so a "reset" is always a failed attempt the balancer retried.
        faults = sum(c for o, c in st.outcomes.items() if o != "ok")
        replayed = st.requests - s.total_requests
        assert replayed == 0, (name, st, s)
        assert s.failed_requests == faults - replayed, (name, st.outcomes, s)
        replays += replayed
    _check_classification(kinds, sim_stats, replays)
    assert rss_end - rss_mid < RSS_GROWTH_LIMIT, report
    assert not library_tasks()


def _check_classification(
    kinds: Counter[tuple[str, int | None]], sim_stats: dict[str, Any], replays: int
) -> None:
    """Each injected fault shows up as the failure kind it must be classified as."""
    injected: Counter[str] = Counter()
    for st in sim_stats.values():
        injected.update(st.outcomes)
    print(f"injected by outcome: {dict(injected)}; replayed after a reset: {replays}")
    for status in ("503", "529", "429"):
        assert kinds["http", int(status)] == injected[status], status
    # "stream_error" is an in-stream error event for a stream and a plain 500 otherwise.
    assert kinds["http", 500] + kinds["http", None] == injected["500"] + injected["stream_error"]
    assert {status for kind, status in kinds if kind == "http"} <= {500, 503, 529, 429, None}
    # Hangs and stalls time out; broken connections and broken answers are retryable
    # connection or protocol failures.
    assert kinds["timeout", None] == injected["hang"] + injected["stall"]
    broken = injected["reset"] - replays + injected["cut"]
    broken += injected["malformed"] + injected["wrong_shape"]
    assert kinds["connection", None] + kinds["protocol", None] == broken
    assert kinds["protocol", None] >= injected["malformed"] + injected["wrong_shape"]
    assert kinds["connection", None] >= injected["reset"] - replays
    assert set(kinds) <= {
        ("http", 500),
        ("http", 503),
        ("http", 529),
        ("http", 429),
        ("http", None),
        ("timeout", None),
        ("connection", None),
        ("protocol", None),
    }
