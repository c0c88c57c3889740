"""``python -m benchmarks._simserver '<json>'``: the simulator as a separate upstream process.

The JSON names the ports and the behaviour (``latency``, ``chunks``,
``token_delay``). Serves OpenAI-protocol providers ``up-0``, ``up-1``, …
until terminated. Used when nginx is absent and for the streaming and scale
runs, which need what nginx cannot do (real SSE, a 1 s latency).
"""

from __future__ import annotations

import signal
import sys

import msgspec
import trio

from llmlb_actors.sim import Behaviour, SimProvider, serve_simulator

from ._common import pin, raise_fd_limit

#: 64 words: a streamed answer of up to 64 deltas.
STREAM_REPLY = " ".join(f"word{i}" for i in range(64))


class _Spec(msgspec.Struct, frozen=True):
    ports: list[int]
    latency: float = 0.0
    chunks: int = 8
    token_delay: float = 0.0
    core: int | None = None


async def _serve(spec: _Spec) -> None:
    behaviour = Behaviour(
        latency=spec.latency, chunks=spec.chunks, token_delay=spec.token_delay, reply=STREAM_REPLY
    )
    providers = [
        SimProvider(name=f"up-{i}", protocol="openai", behaviour=behaviour, port=port)
        for i, port in enumerate(spec.ports)
    ]
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_simulator, providers)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    spec = msgspec.json.decode(sys.argv[1], type=_Spec)
    if spec.core is not None:
        pin(spec.core)  # here rather than in a preexec_fn: the parent may have threads
    raise_fd_limit()
    trio.run(_serve, spec)


if __name__ == "__main__":
    main()
