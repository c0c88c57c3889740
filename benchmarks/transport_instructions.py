"""``python -m benchmarks.transport_instructions``: TrioTransport's instructions per request.

Counts instructions with ``valgrind --tool=callgrind`` (deterministic, blind to the
machine's load) for `TrioTransport.request` alone, against nginx on loopback (the
server runs outside valgrind; only the client process is counted). Each point runs
twice, with N and 3N requests; the difference divided by 2N is the cost of one
request, start-up, imports and connection set-up cancelled out.

    .venv/bin/python -m benchmarks.transport_instructions                  # C=1 and C=64
    .venv/bin/python -m benchmarks.transport_instructions --concurrency 1 --requests 500

Needs nginx and valgrind (``apt-get install nginx valgrind``). ``--worker URL`` runs
one measured process (what valgrind runs).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import trio

from ._upstream import run_nginx

__all__ = ["main"]

_HEADERS = [
    ("content-type", "application/json"),
    ("accept", "application/json"),
    ("authorization", "Bearer sk-bench-not-a-real-key"),
]
_BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'


async def _drive(url: str, requests: int, concurrency: int) -> None:
    from llmlb_actors._transport import HTTPRequest, TransportLimits, TrioTransport

    transport = TrioTransport(TransportLimits(max_connections=concurrency))
    call = HTTPRequest("POST", url, _HEADERS, _BODY)
    left = requests

    async def one_caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            response = await transport.request(call)
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(one_caller)
    await transport.aclose()


def _count(url: str, requests: int, concurrency: int) -> int:
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
            "benchmarks.transport_instructions",
            "--worker",
            url,
            "--requests",
            str(requests),
            "--concurrency",
            str(concurrency),
        ]
        # No proxy from the environment may change what is measured.
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["PYTHONHASHSEED"] = "0"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        match = re.search(r"Collected : (\d+)", proc.stderr)
        if match is None:
            raise RuntimeError(f"no instruction count in valgrind's output:\n{proc.stderr}")
        return int(match.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transport_instructions")
    parser.add_argument("--requests", type=int, default=1000, help="N (the run does N and 3N)")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 64])
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        trio.run(_drive, args.worker, args.requests, args.concurrency[0])
        return
    n = args.requests
    with run_nginx(1) as upstream:
        url = upstream.chat_url(0)
        for concurrency in args.concurrency:
            low = _count(url, n, concurrency)
            high = _count(url, 3 * n, concurrency)
            per = (high - low) / (2 * n)
            print(f"TrioTransport.request C={concurrency:<5} {per:>10,.0f} instructions/request")


if __name__ == "__main__":
    main()
