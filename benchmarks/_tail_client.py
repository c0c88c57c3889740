"""``python -m benchmarks._tail_client '<TailSpec JSON>'``: one scenario, one configuration,
in a fresh process pinned to the client core; prints one JSON line (`TailResult`).

The load is a closed loop (C workers, each starting its next request when one
ends) or an open loop (requests start on a fixed schedule whatever happened to
earlier ones, as users and batch schedulers do). The scenario's timeline
changes the upstream's behaviour over the control port at the given times.
Every request is recorded: start and end (seconds from the start), success,
and for llmlb the provider that answered and the attempts it took.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ._common import MODEL, PROMPT, pin, raise_fd_limit
from ._tail_scenarios import CONFIGS, LITELLM, SCENARIOS, Scenario, scaled

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["TailResult", "TailSpec"]

FAKE_KEY = "sk-bench-not-a-real-key"
#: How long an open loop waits, after its last start, for stragglers.
DRAIN_S = 60.0


class TailSpec(msgspec.Struct, frozen=True, kw_only=True):
    scenario: str
    config: str
    ports: dict[str, int]
    control_port: int
    factor: float = 1.0
    rep: int = 0
    core: int | None = None


class TailResult(msgspec.Struct, kw_only=True):
    scenario: str
    config: str
    rep: int
    factor: float
    records: list[tuple[float, float, bool, int, int]]
    """(start, end, ok, provider index or -1, attempts or 0) per request."""
    providers: list[str]
    series: dict[str, Any]
    """The upstream's arrival counts over time (see ``_tail_server``)."""
    switches: list[tuple[float, float]] = []
    """(planned, acknowledged) time of each change of upstream behaviour."""
    stats: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    first_error: str | None = None
    unfinished: int = 0
    cpu_s: float = 0.0


class _Recorder:
    def __init__(self, providers: list[str]) -> None:
        self.index = {name: i for i, name in enumerate(providers)}
        self.records: list[tuple[float, float, bool, int, int]] = []
        self.first_error: str | None = None
        self.t0 = 0.0

    def add(self, start: float, ok: bool, provider: str | None, attempts: int) -> None:
        end = time.monotonic() - self.t0
        index = -1 if provider is None else self.index.get(provider, -1)
        self.records.append((round(start, 6), round(end, 6), ok, index, attempts))

    def error(self, exc: BaseException) -> None:
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"[:300]


def _changes(scenario: Scenario) -> list[tuple[float, dict[str, Any]]]:
    """The timeline as one set of simultaneous changes per time."""
    by_time: dict[float, dict[str, Any]] = {}
    for phase in scenario.timeline:
        by_time.setdefault(phase.at, {})[phase.name] = msgspec.to_builtins(phase.behaviour)
    return sorted(by_time.items())


def _providers(spec: TailSpec, scenario: Scenario) -> list[str]:
    names = list(scenario.providers)
    if spec.config == "healthy-2":
        names = [n for n in names if n != scenario.focus]
    return names


# -- the trio side: llmlb_actors ----------------------------------------------------------


async def _trio_run(spec: TailSpec, scenario: Scenario) -> TailResult:
    import trio

    import llmlb_actors as llmlb

    setup = CONFIGS[spec.config]
    names = _providers(spec, scenario)
    rec = _Recorder(names)
    providers = [
        llmlb.ProviderConfig(
            name=name,
            provider="openai",
            model=MODEL,
            api_key=FAKE_KEY,
            base_url=f"http://127.0.0.1:{spec.ports[name]}/v1",
            max_concurrency=256,
        )
        for name in names
    ]
    config = llmlb.BalancerConfig(
        strategy=setup.strategy,  # type: ignore[arg-type]
        providers=providers,
        hedge=llmlb.Hedge() if setup.hedge else None,
        retry_budget=0.2 if setup.retry_budget else None,
        seed=1000 + spec.rep,
    )
    request = llmlb.LLMRequest(prompt=PROMPT)
    control = await trio.open_tcp_stream("127.0.0.1", spec.control_port)
    buffer = bytearray()

    async def command(cmd: dict[str, Any]) -> Any:
        await control.send_all(msgspec.json.encode(cmd) + b"\n")
        while b"\n" not in buffer:
            data = await control.receive_some(1 << 20)
            if not data:
                raise RuntimeError("the upstream closed its control port")
            buffer.extend(data)
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        return msgspec.json.decode(line)

    switches: list[tuple[float, float]] = []
    async with llmlb.open_balancer(config) as lb:

        async def one(start: float) -> None:
            try:
                response = await lb.request(request)
            except llmlb.LoadBalancerError as exc:
                rec.error(exc)
                rec.add(start, False, None, len(exc.errors))
            else:
                rec.add(start, True, response.provider, response.attempts)

        async def timeline() -> None:
            for at, changes in _changes(scenario):
                await trio.sleep_until(t0_trio + at)
                await command({"op": "set", "changes": changes})
                switches.append((at, time.monotonic() - rec.t0))

        await command({"op": "mark"})
        rec.t0 = time.monotonic()
        t0_trio = trio.current_time()
        cpu0 = time.process_time()
        unfinished = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timeline)
            if scenario.load == "closed":
                issued = 0

                def more() -> bool:
                    if scenario.requests is not None:
                        return issued < scenario.requests
                    return trio.current_time() - t0_trio < scenario.duration

                async def worker() -> None:
                    nonlocal issued
                    while more():
                        issued += 1
                        await one(time.monotonic() - rec.t0)

                async with trio.open_nursery() as workers:
                    for _ in range(scenario.concurrency):
                        workers.start_soon(worker)
            else:
                with trio.move_on_after(scenario.duration + DRAIN_S) as drain:
                    async with trio.open_nursery() as starts:
                        count = int(scenario.rate * scenario.duration)
                        for k in range(count):
                            await trio.sleep_until(t0_trio + k / scenario.rate)
                            starts.start_soon(one, time.monotonic() - rec.t0)
                if drain.cancelled_caught:
                    unfinished = int(scenario.rate * scenario.duration) - len(rec.records)
            nursery.cancel_scope.cancel()
        cpu = time.process_time() - cpu0
        series = await command({"op": "series"})
        stats = {n: msgspec.to_builtins(s) for n, s in lb.get_stats().items()}
        totals = msgspec.to_builtins(lb.get_totals())
    await control.aclose()
    return TailResult(
        scenario=spec.scenario,
        config=spec.config,
        rep=spec.rep,
        factor=spec.factor,
        records=rec.records,
        providers=names,
        series=series,
        switches=switches,
        stats=stats,
        totals=totals,
        first_error=rec.first_error,
        unfinished=unfinished,
        cpu_s=cpu,
    )


# -- the asyncio side: LiteLLM ---------------------------------------------------------------


async def _litellm_run(spec: TailSpec, scenario: Scenario) -> TailResult:
    from ._clients_asyncio import LITELLM_OFFLINE_ENV

    os.environ.update(LITELLM_OFFLINE_ENV)  # before the import: it fetches a cost map otherwise
    import litellm
    from litellm.router import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    names = _providers(spec, scenario)
    rec = _Recorder(names)
    deployments = [
        {
            "model_name": "bench",
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": f"http://127.0.0.1:{spec.ports[name]}/v1",
                "api_key": FAKE_KEY,
            },
            "model_info": {"id": name},
        }
        for name in names
    ]
    # As close to llmlb's defaults as its options go: 3 retries, 30 s per attempt.
    router = Router(
        model_list=deployments,
        routing_strategy="latency-based-routing",
        num_retries=3,
        timeout=30,
    )
    messages = [{"role": "user", "content": PROMPT}]
    reader, writer = await asyncio.open_connection("127.0.0.1", spec.control_port)

    async def command(cmd: dict[str, Any]) -> Any:
        writer.write(msgspec.json.encode(cmd) + b"\n")
        await writer.drain()
        return msgspec.json.decode(await reader.readline())

    async def one(start: float) -> None:
        try:
            response = await router.acompletion(model="bench", messages=messages)
        except Exception as exc:
            rec.error(exc)
            rec.add(start, False, None, 0)
        else:
            hidden = getattr(response, "_hidden_params", None) or {}
            rec.add(start, True, hidden.get("model_id"), 0)

    loop = asyncio.get_running_loop()

    switches: list[tuple[float, float]] = []

    async def timeline() -> None:
        for at, changes in _changes(scenario):
            await asyncio.sleep(max(0.0, t0_loop + at - loop.time()))
            await command({"op": "set", "changes": changes})
            switches.append((at, time.monotonic() - rec.t0))

    await command({"op": "mark"})
    rec.t0 = time.monotonic()
    t0_loop = loop.time()
    cpu0 = time.process_time()
    unfinished = 0
    driver = asyncio.create_task(timeline())
    if scenario.load == "closed":
        issued = 0

        def more() -> bool:
            if scenario.requests is not None:
                return issued < scenario.requests
            return loop.time() - t0_loop < scenario.duration

        async def worker() -> None:
            nonlocal issued
            while more():
                issued += 1
                await one(time.monotonic() - rec.t0)

        await asyncio.gather(*(worker() for _ in range(scenario.concurrency)))
    else:
        tasks: list[asyncio.Task[None]] = []
        count = int(scenario.rate * scenario.duration)
        for k in range(count):
            await asyncio.sleep(max(0.0, t0_loop + k / scenario.rate - loop.time()))
            tasks.append(asyncio.create_task(one(time.monotonic() - rec.t0)))
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_S) if tasks else (set(), set())
        unfinished = len(pending)
        for task in pending:
            task.cancel()
    driver.cancel()
    cpu = time.process_time() - cpu0
    series = await command({"op": "series"})
    writer.close()
    return TailResult(
        scenario=spec.scenario,
        config=spec.config,
        rep=spec.rep,
        factor=spec.factor,
        records=rec.records,
        providers=names,
        series=series,
        switches=switches,
        first_error=rec.first_error,
        unfinished=unfinished,
        cpu_s=cpu,
    )


def run(spec: TailSpec) -> TailResult:
    scenario = scaled(SCENARIOS[spec.scenario], spec.factor)
    if spec.config == LITELLM:
        return asyncio.run(_litellm_run(spec, scenario))
    import trio

    runner: Callable[[TailSpec, Scenario], Awaitable[TailResult]] = _trio_run
    return trio.run(runner, spec, scenario)


def main() -> None:
    spec = msgspec.json.decode(sys.argv[1], type=TailSpec)
    if spec.core is not None:
        pin(spec.core)
    raise_fd_limit()
    result = run(spec)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # LiteLLM's shutdown with tasks cancelled takes longer than the run


if __name__ == "__main__":
    main()
