"""``python -m benchmarks._quota_clients '<QuotaSpec JSON>'``: one quota run in a fresh process.

A batch of ``requests`` prompts at ``concurrency`` (a closed loop: each of
``concurrency`` workers takes the next prompt as soon as its last one ended)
against simulated providers with quotas. Every configuration gets the same
providers, the same rpm settings and the same retry allowance (3 retries);
what differs is how it spends the quota.

=====================  =====================================================================
configuration          what it is
=====================  =====================================================================
``llmlb-configured``   llmlb with ``ProviderConfig.rpm`` set: paces to the budget
``llmlb-quota``        the same with ``strategy="quota"``
``llmlb-learned``      llmlb with no limits configured (``quota_probe=True``): one request
                       per provider until its first answer, then paced to the limits its
                       headers report
``llmlb-off``          llmlb with budgets switched off (``quota="off"``): fires, honours
                       Retry-After and backs off on 429
``litellm-usage-v2``   LiteLLM Router, ``routing_strategy="usage-based-routing-v2"``, the
                       same ``rpm`` per deployment, ``num_retries=3``
=====================  =====================================================================

Prints one JSON `QuotaResult` line; the runner adds the upstream's counts.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from typing import Any

import msgspec

from ._common import MODEL, pin, raise_fd_limit

__all__ = ["CONFIGS", "QuotaResult", "QuotaSpec", "run"]

CONFIGS = (
    "llmlb-configured",
    "llmlb-quota",
    "llmlb-learned",
    "llmlb-off",
    "litellm-usage-v2",
)
FAKE_KEY = "sk-bench-not-a-real-key"
PROMPT = "Summarise the benefits of pacing requests to a provider's quota in one line."
MAX_TOKENS = 16


class QuotaSpec(msgspec.Struct, frozen=True, kw_only=True):
    config: str
    ports: list[int]
    rpm: int
    requests: int = 2000
    concurrency: int = 256
    rep: int = 0
    pin_core: int | None = None


class QuotaResult(msgspec.Struct, kw_only=True):
    config: str
    rep: int
    requests: int
    ok: int
    failed: int
    errors: dict[str, int]
    """Failed requests by exception type, with the first message of each."""
    error_samples: dict[str, str]
    seconds: float
    """From the first request's start to the last one's end."""
    rpm: float
    """Successful requests per minute over ``seconds``."""
    pooled_rpm: float
    share: float
    """``rpm / pooled_rpm``."""
    p50_ms: float
    p99_ms: float
    completions: list[float]
    """Seconds from the start at which each successful request ended (sorted)."""
    client: dict[str, Any] = msgspec.field(default_factory=dict)
    """What the client itself counted (llmlb: its stats)."""
    upstream: dict[str, Any] = msgspec.field(default_factory=dict)
    """Filled in by the runner from the simulator's counters."""


class _Records:
    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self.errors: Counter[str] = Counter()
        self.samples: dict[str, str] = {}

    def fail(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.errors[kind] += 1
        self.samples.setdefault(kind, str(exc)[:300])


def _result(
    spec: QuotaSpec, rec: _Records, start: float, end: float, client: dict[str, Any]
) -> QuotaResult:
    from llmlb_actors._stats import percentile

    ok = len(rec.spans)
    seconds = end - start
    latencies = sorted((e - s) * 1000 for s, e in rec.spans)
    pooled = float(spec.rpm * len(spec.ports))
    rpm = ok / seconds * 60 if seconds > 0 else 0.0
    return QuotaResult(
        config=spec.config,
        rep=spec.rep,
        requests=spec.requests,
        ok=ok,
        failed=sum(rec.errors.values()),
        errors=dict(rec.errors),
        error_samples=rec.samples,
        seconds=seconds,
        rpm=rpm,
        pooled_rpm=pooled,
        share=rpm / pooled,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        completions=sorted(round(e - start, 4) for _, e in rec.spans),
        client=client,
    )


# -- llmlb (trio) ---------------------------------------------------------------------------


async def _llmlb(spec: QuotaSpec) -> QuotaResult:
    import trio

    import llmlb_actors as llmlb

    configured = spec.config in ("llmlb-configured", "llmlb-quota", "llmlb-off")
    providers = [
        llmlb.ProviderConfig(
            name=f"q-{i}",
            provider="openai",
            model=MODEL,
            api_key=FAKE_KEY,
            base_url=f"http://127.0.0.1:{port}/v1",
            max_concurrency=spec.concurrency,
            rpm=spec.rpm if configured else None,
        )
        for i, port in enumerate(spec.ports)
    ]
    config = llmlb.BalancerConfig(
        providers=providers,
        strategy="quota" if spec.config == "llmlb-quota" else "round-robin",
        health_check_interval=None,
        max_retries=3,
        queue_size=max(1024, spec.concurrency),
        quota="off" if spec.config == "llmlb-off" else "on",
        quota_probe=spec.config == "llmlb-learned",
        token_estimator="chars",
    )
    rec = _Records()
    request = llmlb.LLMRequest(prompt=PROMPT, max_tokens=MAX_TOKENS)
    clock = time.perf_counter
    remaining = spec.requests

    async with llmlb.open_balancer(config) as lb:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = clock()
                try:
                    await lb.request(request)
                except llmlb.LLMLBError as exc:
                    rec.fail(exc)
                else:
                    rec.spans.append((t0, clock()))

        start = clock()
        async with trio.open_nursery() as nursery:
            for _ in range(spec.concurrency):
                nursery.start_soon(worker)
        end = clock()
        stats = lb.get_stats()
        totals = lb.get_totals()
        client = {
            "attempts": sum(s.total_requests for s in stats.values()),
            "retries": sum(s.retries for s in stats.values()),
            "per_provider": {n: s.successful_requests for n, s in stats.items()},
            "totals": msgspec.to_builtins(totals),
        }
    return _result(spec, rec, start, end, client)


# -- LiteLLM (asyncio) ----------------------------------------------------------------------


async def _litellm(spec: QuotaSpec) -> QuotaResult:
    from ._clients_asyncio import LITELLM_OFFLINE_ENV

    os.environ.update(LITELLM_OFFLINE_ENV)  # before the import: it fetches a cost map otherwise
    import litellm
    from litellm.router import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    deployments = [
        {
            "model_name": "bench",
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": f"http://127.0.0.1:{port}/v1",
                "api_key": FAKE_KEY,
                "rpm": spec.rpm,
            },
        }
        for port in spec.ports
    ]
    router = Router(
        model_list=deployments,
        routing_strategy="usage-based-routing-v2",
        num_retries=3,
        timeout=600,
    )
    messages = [{"role": "user", "content": PROMPT}]
    rec = _Records()
    clock = time.perf_counter
    remaining = spec.requests

    async def one() -> None:
        await router.acompletion(model="bench", messages=messages, max_tokens=MAX_TOKENS)

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = clock()
            try:
                await one()
            except Exception as exc:
                rec.fail(exc)
            else:
                rec.spans.append((t0, clock()))

    start = clock()
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    end = clock()
    return _result(spec, rec, start, end, {})


def run(spec: QuotaSpec) -> QuotaResult:
    """Run one configuration in this process."""
    if spec.config.startswith("llmlb-"):
        import trio

        return trio.run(_llmlb, spec)
    if spec.config.startswith("litellm-"):
        return asyncio.run(_litellm(spec))
    raise ValueError(f"unknown quota configuration {spec.config!r}")


def main() -> None:
    spec = msgspec.json.decode(sys.argv[1], type=QuotaSpec)
    if spec.pin_core is not None:
        pin(spec.pin_core)
    raise_fd_limit()
    result = run(spec)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # LiteLLM's teardown of its background tasks is not part of the run


if __name__ == "__main__":
    main()
