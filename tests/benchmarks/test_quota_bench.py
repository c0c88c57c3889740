"""Smoke test of the quota scenario: a small batch against a simulator process with quotas.

No timing is asserted: the run spends a few seconds of real quota, and what is
checked is what the simulator counted (no 429 for a paced balancer) and the
report's shape.
"""

from __future__ import annotations

from benchmarks._quota_clients import QuotaSpec, run
from benchmarks.quota import parse_args, quota_simulator, report, targets

PROVIDERS = 2
RPM = 600  # 10 a second each: 60 requests take about 3 s


def test_configured_limits_cause_no_upstream_429() -> None:
    with quota_simulator(PROVIDERS, RPM) as (ports, counters):
        spec = QuotaSpec(
            config="llmlb-configured", ports=ports, rpm=RPM, requests=60, concurrency=16
        )
        result = run(spec)
    assert result.ok == 60
    assert result.failed == 0
    assert result.completions == sorted(result.completions)
    assert len(result.completions) == 60
    assert result.pooled_rpm == PROVIDERS * RPM
    assert 0 < result.p50_ms <= result.p99_ms
    # The simulator counted every request it got: all 60, none refused.
    assert sum(c["requests"] for c in counters.values()) == 60
    assert sum(c["rate_limited"] for c in counters.values()) == 0
    assert result.client["attempts"] == 60


def test_report_states_the_targets() -> None:
    args = parse_args(["--quick", "--configs", "llmlb-configured,llmlb-learned"])
    assert args.requests == 240
    assert not args.full
    assert parse_args([]).full
    with quota_simulator(1, RPM) as (ports, counters):
        result = run(
            QuotaSpec(config="llmlb-learned", ports=ports, rpm=RPM, requests=20, concurrency=8)
        )
    result.upstream = {
        "requests": sum(c["requests"] for c in counters.values()),
        "rate_limited": sum(c["rate_limited"] for c in counters.values()),
    }
    assert result.ok == 20
    assert result.upstream["rate_limited"] == 0  # one probe, then paced by the learned limit
    lines = targets([result])
    assert len(lines) == 1
    assert "limits learned from headers" in lines[0]
    assert "0 upstream 429s" in lines[0]
    text = report(args, [result])
    assert "| llmlb, limits learned from headers |" in text
