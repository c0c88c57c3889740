"""``python -m benchmarks._quota_sim '<json>'``: simulated providers with quotas, as a process.

Serves OpenAI-protocol providers ``q-0``, ``q-1``, … each with ``Behaviour.rpm``
(and ``tpm`` if given): the rolling 1-second window and per-minute token
bucket of ``llmlb_actors.sim._quota``, answering 429 with OpenAI's headers
past them. On SIGTERM it writes every provider's counters (requests, 429s for
quota, outcomes) as JSON to ``stats_path``, then exits: that file is how the
runner counts the upstream 429s each configuration caused.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import msgspec
import trio

from llmlb_actors.sim import Behaviour, SimProvider, open_simulator

from ._common import pin, raise_fd_limit

__all__ = ["QuotaSimSpec"]


class QuotaSimSpec(msgspec.Struct, frozen=True, kw_only=True):
    ports: list[int]
    rpm: int
    tpm: int | None = None
    latency: float = 0.05
    latency_jitter: float = 0.05
    stats_path: str
    core: int | None = None


async def _serve(spec: QuotaSimSpec) -> dict[str, Any]:
    behaviour = Behaviour(
        latency=spec.latency,
        latency_jitter=spec.latency_jitter,
        rpm=spec.rpm,
        tpm=spec.tpm,
        reply="A short simulated answer.",
    )
    providers = [
        SimProvider(name=f"q-{i}", protocol="openai", behaviour=behaviour, port=port)
        for i, port in enumerate(spec.ports)
    ]
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_simulator(providers) as sim:
            async for _ in signals:
                break
            stats = {name: msgspec.to_builtins(sim.stats(name)) for name in sim.names}
    for entry in stats.values():
        entry.pop("last_body", None)
        entry.pop("last_headers", None)
    return stats


def main() -> None:
    spec = msgspec.json.decode(sys.argv[1], type=QuotaSimSpec)
    if spec.core is not None:
        pin(spec.core)
    raise_fd_limit()
    stats = trio.run(_serve, spec)
    with open(spec.stats_path, "w") as f:
        json.dump(stats, f)


if __name__ == "__main__":
    main()
