"""``python -m benchmarks._worker '<PointSpec JSON>'``: one measurement in a fresh process.

A fresh process per point keeps peak RSS per configuration honest and stops
one configuration's garbage (or imports) from slowing the next. It pins
itself to the client core, measures, prints one JSON line and exits without
tearing down (LiteLLM's shutdown with thousands of tasks cancelled takes
longer than the measurement).
"""

from __future__ import annotations

import os
import sys

import msgspec

from ._common import pin, raise_fd_limit
from ._results import PointResult, PointSpec

__all__ = ["ASYNCIO_NAMES", "TRIO_NAMES", "measure"]

TRIO_NAMES = frozenset(
    {
        "httpx",
        "raw-trio-httptools",
        "llmlb-transport",
        "llmlb-provider",
        "llmlb-1",
        "llmlb-3",
        "llmlb-1-httpx",
        "llmlb-stream",
        "llmlb-stream-3",
        "llmlb-stream-3-anthropic",
        "llmlb-stream-3-gemini",
        "llmlb-stream-provider",
    }
)
ASYNCIO_NAMES = frozenset({"aiohttp", "aiohttp-stream", "litellm"})


def measure(spec: PointSpec) -> PointResult:
    """Measure one point in this process (imports only what the configuration needs)."""
    if spec.config in TRIO_NAMES:
        from ._clients_trio import run_trio_point

        return run_trio_point(spec)
    if spec.config in ASYNCIO_NAMES:
        from ._clients_asyncio import run_asyncio_point

        return run_asyncio_point(spec)
    raise ValueError(f"unknown configuration {spec.config!r}")


def main() -> None:
    spec = msgspec.json.decode(sys.argv[1], type=PointSpec)
    if spec.pin_core is not None:
        pin(spec.pin_core)
    raise_fd_limit()
    result = measure(spec)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
