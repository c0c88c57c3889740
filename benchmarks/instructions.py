"""``python -m benchmarks.instructions``: the balancer's own instructions per request.

Counts instructions with ``valgrind --tool=callgrind`` (deterministic, blind to the
machine's load, unlike wall-clock or CPU time on a shared box) for the balancer
layer alone: one provider whose ``make_request`` only yields once, so no HTTP,
adapter or transport work is counted. Each point runs twice, with N and 3N
requests; the difference divided by 2N is the cost of one request, start-up and
imports cancelled out.

    .venv/bin/python -m benchmarks.instructions                 # C=1 and C=64, requests and streams
    .venv/bin/python -m benchmarks.instructions --concurrency 1 --requests 500
    .venv/bin/python -m benchmarks.instructions --front-end trio aio aio-guest sync --whole

``--front-end`` counts the same closed loop through ``llmlb_actors.aio`` (``aio``: the
default trio thread; ``aio-guest``: the guest run) or ``llmlb_actors.sync`` (C caller
threads); callgrind counts every thread of the process.

``--worker`` runs one measured process (what valgrind runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

import llmlb_actors as llmlb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["main"]

_RESPONSE = llmlb.LLMResponse(content="ok", model="m")
_CHUNK = llmlb.StreamChunk(delta="ok")
FRONT_ENDS = ["trio", "aio", "aio-guest", "sync"]


class _YieldOnce(llmlb.BaseProvider):
    """Answers after one checkpoint: the balancer's work is all that is left."""

    async def make_request(self, request: llmlb.LLMRequest) -> llmlb.LLMResponse:
        await trio.lowlevel.checkpoint()
        return _RESPONSE

    @asynccontextmanager
    async def stream(self, request: llmlb.LLMRequest) -> AsyncIterator[AsyncIterator[object]]:
        async def chunks() -> AsyncIterator[object]:
            await trio.lowlevel.checkpoint()
            yield _CHUNK

        yield chunks()


def _config(concurrency: int) -> llmlb.BalancerConfig:
    return llmlb.BalancerConfig(
        providers=[
            llmlb.ProviderConfig(name="p", provider=_YieldOnce, max_concurrency=concurrency)
        ],
        health_check_interval=None,
    )


async def _drive(requests: int, concurrency: int, stream: bool) -> None:
    config = _config(concurrency)
    request = llmlb.LLMRequest(prompt="hi")
    left = requests
    async with llmlb.open_balancer(config) as lb:

        async def one_caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                if stream:
                    async with lb.stream(request) as chunks:
                        async for _ in chunks:
                            pass
                else:
                    await lb.request(request)

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(one_caller)


async def _drive_aio(requests: int, concurrency: int, stream: bool, runner: str) -> None:
    from llmlb_actors import aio

    request = llmlb.LLMRequest(prompt="hi")
    tickets = iter(range(requests))
    async with aio.open_balancer(_config(concurrency), runner=runner) as lb:  # type: ignore[arg-type]

        async def one_caller() -> None:
            for _ in tickets:
                if stream:
                    async with lb.stream(request) as chunks:
                        async for _chunk in chunks:
                            pass
                else:
                    await lb.request(request)

        await asyncio.gather(*(one_caller() for _ in range(concurrency)))


def _drive_sync(requests: int, concurrency: int, stream: bool) -> None:
    from llmlb_actors import sync

    request = llmlb.LLMRequest(prompt="hi")
    tickets = iter(range(requests))  # next() on it is atomic: the callers share it
    with sync.open_balancer(_config(concurrency)) as lb:

        def one_caller() -> None:
            for _ in tickets:
                if stream:
                    for _chunk in lb.stream(request):
                        pass
                else:
                    lb.request(request)

        callers = [threading.Thread(target=one_caller) for _ in range(concurrency)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()


def _work(front_end: str, requests: int, concurrency: int, stream: bool) -> None:
    if front_end == "trio":
        trio.run(_drive, requests, concurrency, stream)
    elif front_end in ("aio", "aio-guest"):
        runner = "guest" if front_end == "aio-guest" else "thread"
        asyncio.run(_drive_aio(requests, concurrency, stream, runner))
    else:
        _drive_sync(requests, concurrency, stream)


def _count(requests: int, concurrency: int, stream: bool, front_end: str = "trio") -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = [
            valgrind,
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--worker",
            "--requests",
            str(requests),
            "--concurrency",
            str(concurrency),
            "--front-end",
            front_end,
        ]
        if stream:
            cmd.append("--stream")
        env = dict(os.environ, PYTHONHASHSEED="0")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        match = re.search(r"Collected : (\d+)", proc.stderr)
        if match is None:
            raise RuntimeError(f"no instruction count in valgrind's output:\n{proc.stderr}")
        return int(match.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--requests", type=int, default=1000, help="N (the run does N and 3N)")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 64])
    parser.add_argument("--stream", action="store_true", help="streams only")
    parser.add_argument("--whole", action="store_true", help="whole responses only")
    parser.add_argument(
        "--front-end",
        nargs="*",
        default=["trio"],
        choices=FRONT_ENDS,
        help="trio (the default), aio (the trio thread), aio-guest, sync",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _work(args.front_end[0], args.requests, args.concurrency[0], args.stream)
        return
    kinds = [False, True]
    if args.stream:
        kinds = [True]
    elif args.whole:
        kinds = [False]
    n = args.requests
    for stream in kinds:
        for concurrency in args.concurrency:
            for front_end in args.front_end:
                low = _count(n, concurrency, stream, front_end)
                high = _count(3 * n, concurrency, stream, front_end)
                per = (high - low) / (2 * n)
                label = "stream " if stream else "request"
                print(
                    f"{label} C={concurrency:<5} {front_end:<9} {per:>10,.0f} "
                    "instructions per request",
                    flush=True,
                )


if __name__ == "__main__":
    main()
