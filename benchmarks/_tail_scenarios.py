"""The tail-latency scenarios (issue 15): what the simulated providers do, and the load.

Pure data, shared by the runner, the client process and the report. Times are
seconds from the start of a run. Every configuration of a scenario meets exactly
the same upstream behaviour and load.

============  =================================================================
scenario      what happens
============  =================================================================
degraded      3 providers at 50 ms (±10 ms), one at 500 ms (±100 ms); closed
              loop of 16 for 3,000 requests
brownout      3 providers at 50 ms; one answers 30 % 503s from the start;
              closed loop of 16 for 20 s
outage        3 providers at 1 s (±0.1 s), an open loop of 200 requests/s
              (200 in flight); every provider answers 503 at once from 10 s to
              20 s, then recovers; new requests stop at 30 s
shift         as degraded, but the slow provider recovers to 50 ms at 10 s;
              closed loop of 16 for 40 s
============  =================================================================
"""

from __future__ import annotations

from typing import Literal

import msgspec

from llmlb_actors.sim import Behaviour

__all__ = [
    "CONFIGS",
    "LITELLM",
    "SCENARIOS",
    "Config",
    "Phase",
    "Scenario",
    "scaled",
]


def _fast(seed: int) -> Behaviour:
    return Behaviour(latency=0.040, latency_jitter=0.020, seed=seed)


def _slow(seed: int) -> Behaviour:
    return Behaviour(latency=0.400, latency_jitter=0.200, seed=seed)


def _second(seed: int) -> Behaviour:
    return Behaviour(latency=0.900, latency_jitter=0.200, seed=seed)


class Phase(msgspec.Struct, frozen=True):
    at: float
    name: str
    behaviour: Behaviour


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    title: str
    providers: dict[str, Behaviour]
    timeline: list[Phase] = []
    load: Literal["closed", "open"] = "closed"
    concurrency: int = 16
    rate: float = 0.0
    requests: int | None = None
    """Closed loop: stop after this many requests (else after ``duration``)."""
    duration: float = 0.0
    """Seconds during which new requests start."""
    configs: list[str] = []
    focus: str | None = None
    """The provider the scenario is about (slow, flaky, recovering)."""


class Config(msgspec.Struct, frozen=True):
    strategy: str
    hedge: bool = False
    retry_budget: bool = True


#: llmlb configurations by name (everything else is `BalancerConfig`'s defaults).
CONFIGS: dict[str, Config] = {
    "round-robin": Config("round-robin"),
    "failover": Config("failover"),
    "weighted": Config("weighted"),
    "least-busy": Config("least-busy"),
    "latency": Config("latency"),
    "latency+hedge": Config("latency", hedge=True),
    "round-robin+hedge": Config("round-robin", hedge=True),
    "healthy-2": Config("round-robin"),  # degraded without its slow provider
    "no-retry-budget": Config("round-robin", retry_budget=False),  # the outage before
}
#: LiteLLM Router with routing_strategy="latency-based-routing".
LITELLM = "litellm-latency"

_STRATEGIES = ["round-robin", "failover", "weighted", "least-busy", "latency", "latency+hedge"]

SCENARIOS: dict[str, Scenario] = {
    "degraded": Scenario(
        name="degraded",
        title="one provider 10x slower (50 vs 500 ms), closed loop of 16, 3,000 requests",
        providers={"fast-a": _fast(1), "fast-b": _fast(2), "slow": _slow(3)},
        requests=3000,
        configs=[*_STRATEGIES, "round-robin+hedge", LITELLM, "healthy-2"],
        focus="slow",
    ),
    "brownout": Scenario(
        name="brownout",
        title="one provider answers 30 % 503s, closed loop of 16 for 20 s",
        providers={
            "fast-a": _fast(1),
            "fast-b": _fast(2),
            "flaky": Behaviour(latency=0.040, latency_jitter=0.020, faults={"503": 0.3}, seed=3),
        },
        duration=20.0,
        configs=[*_STRATEGIES, LITELLM],
        focus="flaky",
    ),
    "outage": Scenario(
        name="outage",
        title="every provider answers 503 from 10 s to 20 s; open loop of 200 requests/s "
        "at 1 s latency (200 in flight)",
        providers={"a": _second(0), "b": _second(1), "c": _second(2)},
        timeline=[
            *(Phase(10.0, n, Behaviour(faults={"503": 1.0}, seed=s)) for s, n in enumerate("abc")),
            *(Phase(20.0, n, _second(s)) for s, n in enumerate("abc")),
        ],
        load="open",
        rate=200.0,
        duration=30.0,
        configs=[*_STRATEGIES, "no-retry-budget", LITELLM],
    ),
    "shift": Scenario(
        name="shift",
        title="the slow provider (500 ms) recovers to 50 ms at 10 s; closed loop of 16 for 40 s",
        providers={"fast-a": _fast(1), "fast-b": _fast(2), "slow": _slow(3)},
        timeline=[Phase(10.0, "slow", _fast(3))],
        duration=40.0,
        configs=[*_STRATEGIES, LITELLM],
        focus="slow",
    ),
}


def scaled(scenario: Scenario, factor: float) -> Scenario:
    """The scenario shrunk in time and size by ``factor`` (a quick validation run)."""
    if factor == 1.0:
        return scenario
    timeline = [msgspec.structs.replace(p, at=p.at * factor) for p in scenario.timeline]
    requests = None if scenario.requests is None else max(50, int(scenario.requests * factor))
    return msgspec.structs.replace(
        scenario, timeline=timeline, requests=requests, duration=scenario.duration * factor
    )
