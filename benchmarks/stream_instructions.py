"""``python -m benchmarks.stream_instructions``: instructions per stream, counted by valgrind.

Wall-clock CPU figures move by ±20 % on a shared machine; instruction counts
do not. This runs one workload under ``valgrind --tool=callgrind`` twice, with
N and 3·N operations after the same warm-up, and reports
``(I(3N) - I(N)) / 2N``: the instructions one more operation costs, start-up
and warm-up cancelled out. The callgrind files stay in ``--out`` for
``callgrind_annotate`` (which functions the instructions went to).

Workloads (sequential, C=1, against nginx's fixed bodies on loopback):

=================  =========================================================
``sse``            SSE decoding + the protocol's stream decoder over one body
                   (no I/O), the body fed in ``--pieces`` reads
``stream-provider`` ``HTTPProvider.stream`` read to its end (adapter+transport)
``stream``         ``lb.stream`` with 3 providers round-robin, read to its end
``whole``          ``lb.request`` with 3 providers round-robin (whole responses)
``aiohttp-stream`` the reference: aiohttp SSE lines, each event decoded with msgspec
``aiohttp``        the reference for whole responses
=================  =========================================================

Example: ``python -m benchmarks.stream_instructions stream --protocol anthropic -n 100``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["main"]

WORKLOADS = ("sse", "stream-provider", "stream", "whole", "aiohttp-stream", "aiohttp")
_CHILD = "_LLMLB_INSTRUCTIONS_CHILD"
_WARMUP = 20


def _config(urls: list[str], protocol: str, **extra: Any) -> Any:
    from llmlb_actors._config import BalancerConfig, ProviderConfig

    from ._sse_bodies import SSE_MODELS

    kind = {"openai": "openai-compatible"}.get(protocol, protocol)
    return BalancerConfig(
        strategy="round-robin",
        providers=[
            ProviderConfig(
                name=f"up-{i}",
                provider=kind,
                base_url=url,
                model=SSE_MODELS[protocol],
                api_key="sk-bench-not-a-real-key",
                max_concurrency=1024,
            )
            for i, url in enumerate(urls)
        ],
        health_check_interval=None,
        global_timeout=300.0,
        **extra,
    )


async def _child(workload: str, protocol: str, n: int, pieces: int, ports: list[int]) -> None:

    from llmlb_actors._balancer import open_balancer
    from llmlb_actors._models import LLMRequest

    request = LLMRequest(prompt="Write a funny dad joke.")
    version = "/v1" if protocol == "openai" else ""
    stream_urls = [f"http://127.0.0.1:{port}/sse/{protocol}{version}" for port in ports]

    async def repeat(one: Callable[[], Awaitable[object]]) -> None:
        for _ in range(_WARMUP + n):
            await one()

    if workload in ("sse", "stream-provider"):
        url = stream_urls[0] if ports else "http://127.0.0.1:9"  # sse: never connects
        provider = _provider(workload, protocol, url, pieces)

        async def provider_stream() -> object:
            async with provider.stream(request) as chunks:
                async for _ in chunks:
                    pass
            return None

        await repeat(provider_stream)
        return
    if workload == "whole":
        config = _config([f"http://127.0.0.1:{port}/v1" for port in ports], "openai")
        async with open_balancer(config) as lb:

            async def whole() -> object:
                return await lb.request(request)

            await repeat(whole)
        return
    if workload == "stream":
        config = _config(stream_urls, protocol)
        async with open_balancer(config) as lb:

            async def stream() -> object:
                async with lb.stream(request) as chunks:
                    async for _ in chunks:
                        pass
                return None

            await repeat(stream)
        return
    raise SystemExit(f"unknown workload {workload!r}")


def _provider(workload: str, protocol: str, base_url: str, pieces: int) -> Any:
    """An `HTTPProvider` over the trio transport, or (``sse``) over the body in memory."""
    from llmlb_actors._transport import TrioTransport
    from llmlb_actors.providers._adapter import adapter_class
    from llmlb_actors.providers._http import HTTPProvider

    from ._sse_bodies import sse_body

    config = _config([base_url], protocol).providers[0]
    adapter = adapter_class(config.provider)(config)
    if workload == "stream-provider":
        return HTTPProvider(config, adapter, TrioTransport())
    body = sse_body(protocol)
    size = -(-len(body) // pieces)
    return HTTPProvider(
        config, adapter, _MemoryTransport([body[i : i + size] for i in range(0, len(body), size)])
    )


class _MemoryTransport:
    """Answers every stream with the same body, in the same pieces, without I/O."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def request(self, call: Any) -> Any:
        raise NotImplementedError

    def stream(self, call: Any) -> Any:
        return _MemoryStream(self.pieces)

    async def aclose(self) -> None:
        pass


class _MemoryStream:
    status = 200

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.headers = {"content-type": "text/event-stream"}

    async def __aenter__(self) -> _MemoryStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def aiter_bytes(self) -> Any:
        for piece in self.pieces:
            yield piece

    async def aread(self) -> bytes:
        return b"".join(self.pieces)


def _count(args: argparse.Namespace, n: int, ports: list[int], out: str) -> int:
    # A fixed hash seed: N and 3N run in two processes, and with random seeds their
    # dict probes differ (per-stream figures spread ±1.2 % unseeded, ±0.4 % seeded).
    env = {**os.environ, _CHILD: "1", "PYTHONHASHSEED": "0"}
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "benchmarks.stream_instructions",
        args.workload,
        "--protocol",
        args.protocol,
        "-n",
        str(n),
        "--pieces",
        str(args.pieces),
        "--ports",
        ",".join(map(str, ports)),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    match = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"valgrind run failed:\n{proc.stderr[-2000:]}")
    return int(match.group(1))


_LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$")


def _flat(path: str) -> dict[str, int]:
    """Exclusive instructions per C function in one callgrind file."""
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True, check=True
    ).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        match = _LINE.match(line)
        if match and "PROGRAM TOTALS" not in line:
            name = match.group(2).split(" [")[0]
            name = name.rsplit("/", 1)[-1]
            counts[name] = counts.get(name, 0) + int(match.group(1).replace(",", ""))
    return counts


def _per_op_profile(small: str, large: str, n: int, top: int) -> list[tuple[str, float]]:
    """The functions one more operation spends its instructions in (3N run minus N run)."""
    a, b = _flat(small), _flat(large)
    diff = {k: (b.get(k, 0) - a.get(k, 0)) / (2 * n) for k in set(a) | set(b)}
    return sorted(diff.items(), key=lambda kv: -kv[1])[:top]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.stream_instructions", description=__doc__
    )
    p.add_argument("workload", choices=WORKLOADS)
    p.add_argument("--protocol", default="openai", choices=("openai", "anthropic", "gemini"))
    p.add_argument("-n", type=int, default=100, help="operations in the small run (default 100)")
    p.add_argument("--pieces", type=int, default=1, help="reads per body (sse workload)")
    p.add_argument("--ports", default="", help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    p.add_argument("--top", type=int, default=0, help="show the top functions per operation")
    return p.parse_args(argv)


async def _asyncio_child(workload: str, n: int, ports: list[int]) -> None:
    from ._clients_asyncio import ASYNCIO_CONFIGS
    from ._results import PointSpec
    from ._upstream import Upstream

    upstream = Upstream(kind="nginx", ports=ports, pids=[])
    spec = PointSpec(config=workload, concurrency=1, upstream=upstream)
    async with ASYNCIO_CONFIGS[workload](spec) as client:
        for _ in range(_WARMUP + n):
            await client.one()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get(_CHILD):
        ports = [int(p) for p in args.ports.split(",") if p]
        if args.workload.startswith("aiohttp"):
            import asyncio

            asyncio.run(_asyncio_child(args.workload, args.n, ports))
            return 0
        import trio

        trio.run(_child, args.workload, args.protocol, args.n, args.pieces, ports)
        return 0
    from ._upstream import run_nginx

    os.makedirs(args.out, exist_ok=True)
    tag = f"{args.workload}-{args.protocol}" + (f"-{args.pieces}p" if args.pieces > 1 else "")
    small_out = os.path.join(args.out, f"callgrind-{tag}-n.out")
    large_out = os.path.join(args.out, f"callgrind-{tag}-3n.out")
    with run_nginx() as up:
        small = _count(args, args.n, up.ports, small_out)
        large = _count(args, 3 * args.n, up.ports, large_out)
    per = (large - small) / (2 * args.n)
    print(
        f"{tag}: {per:,.0f} instructions per operation "
        f"(I(N={args.n}) = {small:,}, I(3N) = {large:,})"
    )
    if args.top:
        for name, count in _per_op_profile(small_out, large_out, args.n, args.top):
            print(f"  {count:12,.0f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
