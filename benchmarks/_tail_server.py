"""``python -m benchmarks._tail_server '<json>'``: simulated providers whose behaviour a client
changes while it runs, for the tail-latency scenarios.

Each provider listens on its own port (OpenAI protocol). A control port takes
one JSON command per line and answers one JSON line:

- ``{"op": "set", "changes": {N: {...}, ...}}``: replace those providers' `Behaviour`
  now, all at once (no request sees some switched and others not);
- ``{"op": "mark"}``: start the arrival series afresh (time 0 is now);
- ``{"op": "series"}``: what every provider received since the mark, sampled every
  50 ms: ``{"t": [...], "requests": {N: [...]}, "outcomes": {N: {...}}}``, cumulative.

Counting at the upstream is what "traffic" and "extra upstream requests" mean in the
scenarios: an attempt the client cancelled still reached the provider.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import msgspec
import trio

from llmlb_actors.sim import Behaviour, SimProvider, open_simulator

from ._common import pin, raise_fd_limit

__all__ = ["ServerSpec"]

SAMPLE_EVERY = 0.05


class ServerSpec(msgspec.Struct, frozen=True, kw_only=True):
    ports: dict[str, int]
    behaviours: dict[str, Behaviour]
    control_port: int
    core: int | None = None


class _Series:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.mark(0.0, {n: 0 for n in names})

    def mark(self, now: float, counts: dict[str, int]) -> None:
        self.start = now
        self.base = dict(counts)
        self.t: list[float] = []
        self.requests: dict[str, list[int]] = {n: [] for n in self.names}

    def add(self, now: float, counts: dict[str, int]) -> None:
        self.t.append(round(now - self.start, 4))
        for name in self.names:
            self.requests[name].append(counts[name] - self.base[name])


async def _serve(spec: ServerSpec) -> None:
    names = list(spec.ports)
    providers = [
        SimProvider(
            name=name, protocol="openai", behaviour=spec.behaviours[name], port=spec.ports[name]
        )
        for name in names
    ]
    async with open_simulator(providers) as sim:

        def counts() -> dict[str, int]:
            return {name: sim.stats(name).requests for name in names}

        series = _Series(names)
        series.mark(time.monotonic(), counts())

        async def sampler() -> None:
            while True:
                await trio.sleep(SAMPLE_EVERY)
                series.add(time.monotonic(), counts())

        def command(line: bytes) -> dict[str, Any]:
            cmd = msgspec.json.decode(line)
            op = cmd.get("op")
            if op == "set":
                changes = {
                    name: msgspec.convert(raw, Behaviour) for name, raw in cmd["changes"].items()
                }
                for name, behaviour in changes.items():
                    sim.set_behaviour(name, behaviour)
                return {"ok": True}
            if op == "mark":
                series.mark(time.monotonic(), counts())
                return {"ok": True}
            if op == "series":
                series.add(time.monotonic(), counts())
                outcomes = {name: dict(sim.stats(name).outcomes) for name in names}
                return {"t": series.t, "requests": series.requests, "outcomes": outcomes}
            return {"error": f"unknown op {op!r}"}

        async def control(stream: trio.SocketStream) -> None:
            buffer = b""
            async with stream:
                async for data in stream:
                    buffer += data
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        try:
                            reply = command(line)
                        except Exception as exc:  # report it to the client, keep serving
                            reply = {"error": f"{type(exc).__name__}: {exc}"}
                        await stream.send_all(msgspec.json.encode(reply) + b"\n")

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sampler)
                listeners = await trio.open_tcp_listeners(spec.control_port, host="127.0.0.1")
                nursery.start_soon(trio.serve_listeners, control, listeners)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break


def main() -> None:
    spec = msgspec.json.decode(sys.argv[1], type=ServerSpec)
    if spec.core is not None:
        pin(spec.core)
    raise_fd_limit()
    trio.run(_serve, spec)


if __name__ == "__main__":
    main()
