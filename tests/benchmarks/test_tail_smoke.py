"""Smoke test of the tail-latency scenario runner: one tiny real run, and the report's sums.

Nothing here asserts timing: a scaled-down scenario runs through the real
upstream and client processes, and the report is checked on hand-made records
whose figures are known.
"""

from __future__ import annotations

import pytest

from benchmarks._tail import _run_one, _upstream
from benchmarks._tail_client import TailResult, TailSpec
from benchmarks._tail_report import metrics, tail_markdown
from benchmarks._tail_scenarios import SCENARIOS, scaled
from benchmarks.run import parse_args


def test_a_scaled_down_degraded_run_records_every_request() -> None:
    with _upstream("degraded") as (ports, control):
        spec = TailSpec(
            scenario="degraded",
            config="latency+hedge",
            ports=ports,
            control_port=control,
            factor=0.02,
        )
        result = _run_one(spec, timeout=120)
    assert result is not None
    assert len(result.records) == scaled(SCENARIOS["degraded"], 0.02).requests == 60
    assert all(ok for _, _, ok, _, _ in result.records)
    assert all(0 <= start <= end for start, end, _, _, _ in result.records)
    assert set(result.series["requests"]) == {"fast-a", "fast-b", "slow"}
    received = sum(counts[-1] for counts in result.series["requests"].values())
    assert received == 60 + result.totals["hedge_budget_used"]
    assert result.totals["requests"] == result.totals["succeeded"] == 60
    m = metrics(result)
    assert m["requests"] == 60
    assert m["failed"] == 0
    assert 0 < m["p50"] <= m["p99"]


def _result(scenario: str, config: str, latencies_ms: list[float], **kw: object) -> TailResult:
    records = [(i * 0.01, i * 0.01 + ms / 1000, True, 0, 1) for i, ms in enumerate(latencies_ms)]
    n = len(records)
    series = kw.pop("series", None) or {
        "t": [0.0, n * 0.01],
        "requests": {"fast-a": [0, n // 2], "fast-b": [0, n - n // 2], "slow": [0, 0]},
        "outcomes": {},
    }
    return TailResult(
        scenario=scenario,
        config=config,
        rep=0,
        factor=1.0,
        records=records,
        providers=["fast-a", "fast-b", "slow"],
        series=series,  # type: ignore[arg-type]
    )


def test_report_figures_and_targets() -> None:
    healthy = [50.0] * 99 + [60.0]
    rr = [50.0] * 90 + [600.0] * 10
    hedged = [50.0] * 99 + [110.0]
    results = [
        _result("degraded", "round-robin", rr),
        _result("degraded", "healthy-2", healthy),
        _result("degraded", "latency+hedge", hedged),
    ]
    assert metrics(results[0])["p99"] == pytest.approx(600.0)
    assert metrics(results[2])["p99"] == pytest.approx(50.0)  # nearest rank: the 99th of 100
    assert metrics(results[2])["extra_pct"] == 0.0
    text = tail_markdown(results, factor=1.0, reps=1)
    assert "| degraded | latency + hedging p99 ≤ 1/3 of round-robin's | 50 vs 600 ms" in text
    assert text.count("| met |") == 3
    assert "### degraded" in text


def test_outage_ratio_counts_upstream_attempts_in_the_window() -> None:
    # 100 requests started during the outage (10-20 s), 130 attempts reached the upstream.
    records = [(10.0 + i * 0.1, 10.5 + i * 0.1, True, 0, 1) for i in range(100)]
    series = {
        "t": [0.0, 10.0, 20.0, 30.0],
        "requests": {"a": [0, 50, 100, 150], "b": [0, 50, 80, 120], "c": [0, 0, 50, 60]},
        "outcomes": {},
    }
    result = TailResult(
        scenario="outage",
        config="latency",
        rep=0,
        factor=1.0,
        records=records,
        providers=["a", "b", "c"],
        series=series,
    )
    m = metrics(result)
    assert m["outage_requests"] == 100
    assert m["outage_attempts"] == pytest.approx(130)
    assert m["outage_ratio"] == pytest.approx(1.3)


def test_tail_arguments() -> None:
    args = parse_args(["--scenario", "tail", "--tail-scenarios", "degraded,outage"])
    assert args.scenario == "tail"
    assert args.tail_scenarios == ["degraded", "outage"]
    assert args.tail_reps == 1
    assert args.tail_factor == 1.0
    with pytest.raises(SystemExit):
        parse_args(["--tail-scenarios", "nope"])
