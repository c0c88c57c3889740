"""Instructions per request of each front-end, counted by valgrind (blind to the machine's load).

``python -m benchmarks._instructions [--requests 1000] [--concurrency 64]`` runs, for
each front-end, a closed loop of C callers against a provider that only yields
(no network: what is counted is the front-end and the balancer), under
``valgrind --tool=callgrind`` twice (N and 3N requests); the difference ÷ 2N is
the cost of one request with start-up and shut-down cancelled out. Threads are
counted too (callgrind serialises them).

``python -m benchmarks._instructions --run FRONT_END N C`` is one such run
without valgrind (what valgrind runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
from typing import Any

FRONT_ENDS = ["trio", "aio", "aio-guest", "sync"]


def _config() -> Any:
    import trio

    import llmlb_actors as llmlb

    response = llmlb.LLMResponse(
        content="ok",
        model="m",
        usage=llmlb.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
        finish_reason="stop",
    )

    class Instant(llmlb.BaseProvider):
        async def make_request(self, request: llmlb.LLMRequest) -> llmlb.LLMResponse:
            await trio.lowlevel.checkpoint()
            return response

    provider = llmlb.ProviderConfig(name="instant", provider=Instant, max_concurrency=4096)
    return llmlb.BalancerConfig(providers=[provider], health_check_interval=None)


def run(front_end: str, requests: int, concurrency: int) -> None:
    import llmlb_actors as llmlb

    config = _config()
    request = llmlb.LLMRequest(prompt="hi")
    each = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    if front_end == "trio":
        import trio

        async def main_trio() -> None:
            async with llmlb.open_balancer(config) as lb, trio.open_nursery() as nursery:
                for n in each:

                    async def caller(n: int = n) -> None:
                        for _ in range(n):
                            await lb.request(request)

                    nursery.start_soon(caller)

        trio.run(main_trio)
    elif front_end.startswith("aio"):
        from llmlb_actors import aio

        runner = "guest" if front_end == "aio-guest" else "thread"  # "aio": the default

        async def main_aio() -> None:
            async with aio.open_balancer(config, runner=runner) as lb:  # type: ignore[arg-type]

                async def caller(n: int) -> None:
                    for _ in range(n):
                        await lb.request(request)

                await asyncio.gather(*(caller(n) for n in each))

        asyncio.run(main_aio())
    elif front_end == "sync":
        from llmlb_actors import sync

        with sync.open_balancer(config) as lb:

            def caller_sync(n: int) -> None:
                for _ in range(n):
                    lb.request(request)

            threads = [threading.Thread(target=caller_sync, args=(n,)) for n in each]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    else:
        raise ValueError(front_end)


def count(front_end: str, requests: int, concurrency: int) -> int:
    """Instructions of one run under callgrind (all threads)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "benchmarks._instructions",
                "--run",
                front_end,
                str(requests),
                str(concurrency),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        match = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or match is None:
            raise RuntimeError(f"callgrind failed for {front_end}: {proc.stderr[-800:]}")
        return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks._instructions")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--front-ends", default=",".join(FRONT_ENDS))
    p.add_argument("--run", nargs=3, metavar=("FRONT_END", "N", "C"))
    args = p.parse_args(argv)
    if args.run:
        run(args.run[0], int(args.run[1]), int(args.run[2]))
        return 0
    n, c = args.requests, args.concurrency
    print(f"instructions per request (callgrind, {n} vs {3 * n} requests, C={c}):")
    base: float | None = None
    for front_end in args.front_ends.split(","):
        small = count(front_end, n, c)
        large = count(front_end, 3 * n, c)
        per = (large - small) / (2 * n)
        if front_end == "trio":
            base = per
        extra = (
            f"  (+{per - base:,.0f} over trio)" if base is not None and front_end != "trio" else ""
        )
        print(f"  {front_end:<11} {per:>10,.0f}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
