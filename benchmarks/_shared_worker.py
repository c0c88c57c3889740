"""``python -m benchmarks._shared_worker '<SharedSpec JSON>'``: one balancer process of a fleet.

Runs ``requests`` prompts at ``concurrency`` (closed loop) through one balancer
whose providers are the simulated ones on ``ports``, each with ``rpm`` configured;
with ``shared_state`` its budgets live in that Redis. Starts at the wall-clock
``start_at`` (so the fleet's processes start together), times every admission
round trip to Redis (`RedisQuotaStore.reserve`), and prints one JSON `SharedResult`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import msgspec
import trio

import llmlb_actors as llmlb

from ._common import MODEL, pin, raise_fd_limit

__all__ = ["SharedResult", "SharedSpec"]

PROMPT = "Summarise the benefits of a shared quota in one line."


class SharedSpec(msgspec.Struct, frozen=True, kw_only=True):
    ports: list[int]
    rpm: int | None
    requests: int
    concurrency: int
    shared_state: str | None = None
    start_at: float = 0.0
    core: int | None = None
    name: str = "b0"


class SharedResult(msgspec.Struct, kw_only=True):
    name: str
    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = msgspec.field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    completions: list[float] = msgspec.field(default_factory=list)
    reserve_us: list[float] = msgspec.field(default_factory=list)
    refusals: int = 0
    local_decisions: int = 0
    round_trips: int = 0
    shared: bool = False


async def run(spec: SharedSpec) -> SharedResult:
    result = SharedResult(name=spec.name)
    providers = [
        llmlb.ProviderConfig(
            name=f"q-{i}",
            provider="openai",
            model=MODEL,
            api_key="sk-bench-not-a-real-key",
            base_url=f"http://127.0.0.1:{port}/v1",
            rpm=spec.rpm,
            max_concurrency=max(64, spec.concurrency),
        )
        for i, port in enumerate(spec.ports)
    ]
    request = llmlb.LLMRequest(prompt=PROMPT, max_tokens=16)
    async with llmlb.open_balancer(
        providers=providers,
        shared_state=spec.shared_state,
        health_check_interval=None,
        request_timeout=600,
        max_retries=3,
    ) as lb:
        store: Any = lb._quota.store if lb._quota is not None else None
        if spec.shared_state is not None:
            real = store.reserve
            times = result.reserve_us

            async def timed(*args: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await real(*args)
                finally:
                    times.append((time.perf_counter() - t0) * 1e6)

            store.reserve = timed
        await trio.sleep(max(0.0, spec.start_at - time.time()))
        result.started = time.time()
        left = iter(range(spec.requests))

        async def worker() -> None:
            for _ in left:
                try:
                    await lb.request(request)
                    result.ok += 1
                    result.completions.append(time.time())
                except llmlb.LLMLBError as exc:
                    result.failed += 1
                    kind = type(exc).__name__
                    result.errors[kind] = result.errors.get(kind, 0) + 1

        async with trio.open_nursery() as nursery:
            for _ in range(spec.concurrency):
                nursery.start_soon(worker)
        result.finished = time.time()
        if spec.shared_state is not None:
            result.refusals = store.refusals
            result.local_decisions = store.local_decisions
            result.round_trips = store.round_trips
            result.shared = store.shared
    return result


def main() -> None:
    spec = msgspec.json.decode(sys.argv[1], type=SharedSpec)
    if spec.core is not None:
        pin(spec.core)
    raise_fd_limit()
    result = trio.run(run, spec)
    print(msgspec.json.encode(result).decode(), flush=True)


if __name__ == "__main__":
    main()
