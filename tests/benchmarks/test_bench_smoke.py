"""Smoke test of the benchmark runner: its measurement and report functions give sane results.

Nothing here asserts timing. It measures a few hundred requests per
configuration against the simulator in its own process (the benchmark's
fallback upstream), in this process, and checks the shape of what comes back.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from benchmarks._report import added_cpu, markdown_table, ratios, summarize
from benchmarks._results import PointResult, PointSpec, percentile
from benchmarks._streaming import cpu_per_chunk, stream_report
from benchmarks._upstream import run_simulator
from benchmarks._worker import measure
from benchmarks.run import DEFAULT_CONCURRENCY, parse_args

if TYPE_CHECKING:
    from collections.abc import Iterator

    from benchmarks._upstream import Upstream

REQUESTS = 300


@pytest.fixture(scope="module")
def simulator() -> Iterator[Upstream]:
    with run_simulator(1) as upstream:
        yield upstream


def _spec(config: str, upstream: Upstream, concurrency: int = 8) -> PointSpec:
    return PointSpec(
        config=config,
        concurrency=concurrency,
        upstream=upstream,
        warmup_s=0.05,
        warmup_requests=10,
        measure_s=120.0,  # an upper bound only: the window ends after REQUESTS requests
        max_requests=REQUESTS,
    )


def _check_sane(result: PointResult, config: str, concurrency: int) -> None:
    assert result.config == config
    assert result.concurrency == concurrency
    assert result.errors == 0, result.first_error
    assert result.first_error is None
    # The window ends with the request that fills it.
    assert result.requests == REQUESTS
    assert result.seconds > 0
    assert result.rps == pytest.approx(result.requests / result.seconds)
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert 0 < result.mean_ms <= result.max_ms
    assert result.cpu_us_per_req > 0
    assert result.peak_rss_mib > 10  # an interpreter with trio loaded, in MiB not KiB
    # A closed loop of C workers keeps exactly C in flight.
    assert result.in_flight_mean == concurrency
    _check_littles_law(result, concurrency)
    assert result.upstream_cpu_pct >= 0
    assert result.upstream_connections is None  # the simulator has no stub_status


def _check_littles_law(result: PointResult, concurrency: int) -> None:
    """The concurrency the latencies imply is what C workers can produce, and no more.

    Each worker runs one request at a time, and the first one it completed in
    the window started at most ``max_ms`` before the window did: the latencies
    counted add up to at most C x (window + max_ms), however loaded the
    machine (load stretches the window's edges, never this bound).
    """
    assert result.littles_l == pytest.approx(result.rps * result.mean_ms / 1000)
    window = result.seconds
    bound = concurrency * (window + result.max_ms / 1000) / window
    assert 0 < result.littles_l <= bound * (1 + 1e-9)


def test_balancer_point_is_sane(simulator: Upstream) -> None:
    result = measure(_spec("llmlb-1", simulator))
    _check_sane(result, "llmlb-1", 8)
    # Where the requests were during the window: never more attempts running than C.
    assert 0 <= result.extra["attempts_running_mean"] <= 8
    assert result.extra["attempts_running_max"] <= 8
    assert result.extra["failed_attempts"] == 0
    assert result.extra["retries"] == 0


def test_stream_point_reports_chunks(simulator: Upstream) -> None:
    result = measure(_spec("llmlb-stream", simulator, concurrency=4))
    _check_sane(result, "llmlb-stream", 4)
    # The simulator's default reply is split into several deltas per stream.
    assert result.extra["chunks"] >= 2 * result.requests
    assert 0 < result.extra["ttfc_p50_ms"] <= result.extra["ttfc_p99_ms"] <= result.p99_ms
    assert result.extra["chunks_per_s"] > result.rps


def test_streaming_run_reports_cpu_per_chunk_and_ratios(simulator: Upstream) -> None:
    # The streaming configurations against the simulator (nginx-only shapes are skipped
    # by the runner): the reference and llmlb's 3-provider stream, and the report.
    results = [
        measure(_spec(config, simulator, concurrency=4))
        for config in ("aiohttp-stream", "llmlb-stream-3", "llmlb-stream-provider")
    ]
    for r in results:
        _check_sane(r, r.config, 4)
        assert r.extra["chunks"] >= 2 * r.requests
        assert cpu_per_chunk(r) == pytest.approx(r.cpu_us_per_req * r.requests / r.extra["chunks"])
    text, data = stream_report(results, "simulator")
    assert "| aiohttp on asyncio, raw SSE (reference) | 4 |" in text
    assert "llmlb-stream-3/aiohttp-stream/CPU/chunk" in data["ratios"]
    assert set(data["summaries"]) == {f"{r.config}@4" for r in results}


@pytest.mark.parametrize("config", ["llmlb-aio", "llmlb-aio-guest"])
def test_asyncio_front_end_point_is_sane(simulator: Upstream, config: str) -> None:
    result = measure(_spec(config, simulator))
    assert result.errors == 0, result.first_error
    assert result.requests == REQUESTS
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.cpu_us_per_req > 0
    assert result.in_flight_mean == 8
    _check_littles_law(result, 8)
    assert result.extra["failed_attempts"] == 0
    assert result.extra["retries"] == 0


def test_threaded_point_is_sane(simulator: Upstream) -> None:
    """The sync front-end from C threads: each thread keeps its own counts."""
    spec = _spec("llmlb-sync", simulator)
    result = measure(spec)
    assert result.errors == 0, result.first_error
    # The caller that completes the last request counted ends the window itself.
    assert result.requests == REQUESTS
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.cpu_us_per_req > 0
    # A thread is "in flight" except for the instant between two calls.
    assert 0 < result.in_flight_mean <= 8
    assert result.extra["failed_attempts"] == 0
    # The callers stopped and the balancer closed: nothing is left running here.
    assert not [t for t in threading.enumerate() if t.name == "llmlb-balancer"]


def test_report_pairs_repetitions(simulator: Upstream) -> None:
    results = [
        measure(msgspec_replace(_spec(config, simulator), rep=rep))
        for rep in range(2)
        for config in ("llmlb-transport", "llmlb-1")
    ]
    for r in results:
        _check_sane(r, r.config, 8)
    summaries = summarize(results)
    assert sorted(summaries) == [("llmlb-1", 8), ("llmlb-transport", 8)]
    table = markdown_table(summaries, ["llmlb-transport", "llmlb-1"])
    assert "| llmlb_actors, 1 provider | 8 |" in table
    assert "| llmlb TrioTransport alone | 8 |" in table
    # Paired within each repetition: the ratio of a config to itself is exactly 1.
    assert ratios(results, "llmlb-1", "llmlb-1", lambda r: r.rps) == {8: (1.0, 1.0, 1.0)}
    delta = added_cpu(results, "llmlb-1", "llmlb-transport")
    by_rep = {r.rep: r for r in results if r.config == "llmlb-1"}
    base = {r.rep: r for r in results if r.config == "llmlb-transport"}
    expected = sorted(by_rep[i].cpu_us_per_req - base[i].cpu_us_per_req for i in range(2))
    assert delta[8][1:] == pytest.approx((expected[0], expected[1]))


def msgspec_replace(spec: PointSpec, **changes: int) -> PointSpec:
    import msgspec

    return msgspec.structs.replace(spec, **changes)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0
    assert percentile([7.0], 99) == 7.0


def test_quick_and_full_arguments() -> None:
    quick = parse_args(["--quick"])
    assert quick.reps == 1
    assert quick.concurrency == [1, 64]
    assert "litellm" not in quick.configs
    assert not quick.full
    full = parse_args([])
    assert full.reps == 3
    assert full.concurrency == DEFAULT_CONCURRENCY
    assert {"httpx", "aiohttp", "litellm", "llmlb-1", "llmlb-3"} <= set(full.configs)
    assert full.full
    assert {"llmlb-aio", "llmlb-sync", "litellm-sync"} <= set(full.configs)
    assert "litellm-sync" not in quick.configs
    assert not parse_args(["--reps", "1"]).full
    stream = parse_args(["--scenario", "stream"])
    assert stream.stream_full
    assert not stream.full
    assert stream.no_scale
    assert stream.stream_concurrency == [1, 64, 512]
    assert "aiohttp-stream" in stream.stream_configs
    assert parse_args(["--scenario", "whole"]).no_stream
    frontends = parse_args(["--scenario", "frontends"])
    assert frontends.configs == [
        "aiohttp",
        "llmlb-1",
        "llmlb-aio",
        "llmlb-aio-guest",
        "llmlb-sync",
        "litellm-sync",
    ]
    assert frontends.concurrency == [64, 512]
    assert (frontends.no_stream, frontends.no_scale, frontends.no_profile) == (True, True, True)
    assert not frontends.full
    with pytest.raises(SystemExit):
        parse_args(["--configs", "no-such-client"])
