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

__all__ = ["ASYNCIO_NAMES", "FRONTEND_NAMES", "TRIO_NAMES", "measure"]

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
#: The asyncio and sync front-ends (and LiteLLM's sync Router): `_clients_frontends`.
FRONTEND_NAMES = frozenset({"llmlb-aio", "llmlb-aio-guest", "llmlb-sync", "litellm-sync"})


def measure(spec: PointSpec) -> PointResult:
    """Measure one point in this process (imports only what the configuration needs)."""
    if spec.config in TRIO_NAMES:
        from ._clients_trio import run_trio_point

        return run_trio_point(spec)
    if spec.config in ASYNCIO_NAMES:
        from ._clients_asyncio import run_asyncio_point

        return run_asyncio_point(spec)
    if spec.config in FRONTEND_NAMES:
        from ._clients_frontends import run_frontend_point

        return run_frontend_point(spec)
    raise ValueError(f"unknown configuration {spec.config!r}")


def main() -> None:
    spec = msgspec.json.decode(sys.argv[1], type=PointSpec)
    # Every client measured honours HTTP(S)_PROXY (httpx, LiteLLM, llmlb's trust_env):
    # a proxy from the machine's environment must not sit between it and the upstream.
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del os.environ[name]
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
