"""The tail-latency scenarios, run side by side: ``python -m benchmarks.run --scenario tail``.

For every repetition, scenario and configuration (interleaved: A B C … A B C …)
a fresh upstream process (`_tail_server`, pinned to the upstream core) and a
fresh client process (`_tail_client`, pinned to the client core) run the
scenario; the report (`_tail_report`) turns the per-request records and the
upstream's arrival series into the tables, targets and the latency-CDF plot.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ._common import CLIENT_CORE, UPSTREAM_CORE
from ._tail_client import TailResult, TailSpec
from ._tail_report import tail_markdown, tail_plot
from ._tail_scenarios import SCENARIOS, scaled
from ._tail_server import ServerSpec
from ._upstream import _stop, _wait_port, free_ports

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

__all__ = ["QUICK_FACTOR", "run_tail"]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: ``--quick`` shrinks every scenario to this fraction of its time and size.
QUICK_FACTOR = 0.25


@contextlib.contextmanager
def _upstream(scenario: str) -> Iterator[tuple[dict[str, int], int]]:
    spec = SCENARIOS[scenario]
    *ports, control = free_ports(len(spec.providers) + 1)
    server = ServerSpec(
        ports=dict(zip(spec.providers, ports, strict=True)),
        behaviours=dict(spec.providers),
        control_port=control,
        core=UPSTREAM_CORE,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._tail_server", msgspec.json.encode(server).decode()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        for port in (*ports, control):
            _wait_port(port, proc, deadline)
        yield server.ports, control
    finally:
        _stop(proc)


def _run_one(spec: TailSpec, timeout: float) -> TailResult | None:
    cmd = [sys.executable, "-m", "benchmarks._tail_client", msgspec.json.encode(spec).decode()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"    !! {spec.scenario} {spec.config}: no result within {timeout:.0f} s")
        return None
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not line.startswith("{"):
        tail = proc.stderr.strip().splitlines()[-3:]
        print(f"    !! {spec.scenario} {spec.config}: failed: {' | '.join(tail)}")
        return None
    return msgspec.json.decode(line, type=TailResult)


def _timeout(scenario: str, factor: float) -> float:
    s = scaled(SCENARIOS[scenario], factor)
    if s.requests is not None:
        return 120 + s.requests / 20  # LiteLLM does ~50-60 requests/s at 16 in flight
    return 120 + s.duration * 3


def run_tail(args: argparse.Namespace, out_dir: str) -> dict[str, Any]:
    """Run the scenarios; write ``tail.md``, ``tail.json`` and ``tail.png`` to ``out_dir``."""
    factor = QUICK_FACTOR if args.quick else args.tail_factor
    names = args.tail_scenarios or list(SCENARIOS)
    reps = args.tail_reps
    results: list[TailResult] = []
    started = time.monotonic()
    print(f"\nTail-latency scenarios ({', '.join(names)}; scale {factor:g}, {reps} rep(s)):")
    for rep in range(reps):
        for name in names:
            configs = args.tail_configs or SCENARIOS[name].configs
            configs = [c for c in configs if c in SCENARIOS[name].configs]
            for config in configs:
                with _upstream(name) as (ports, control):
                    spec = TailSpec(
                        scenario=name,
                        config=config,
                        ports=ports,
                        control_port=control,
                        factor=factor,
                        rep=rep,
                        core=CLIENT_CORE,
                    )
                    result = _run_one(spec, _timeout(name, factor))
                if result is not None:
                    results.append(result)
                    ok = sum(r[2] for r in result.records)
                    print(
                        f"  rep {rep + 1}/{reps} {name:9} {config:18} {len(result.records):6} "
                        f"requests, {len(result.records) - ok} failed",
                        flush=True,
                    )
    os.makedirs(out_dir, exist_ok=True)
    markdown = tail_markdown(results, factor=factor, reps=reps)
    with open(os.path.join(out_dir, "tail.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(out_dir, "tail.json"), "wb") as f:
        f.write(msgspec.json.encode(results))
    png = os.path.join(out_dir, "tail.png")
    plotted = tail_plot(results, png)
    full = factor == 1.0 and not args.tail_configs and set(names) == set(SCENARIOS)
    if plotted and full:
        shutil.copyfile(png, os.path.join(HERE, "tail.png"))
    print()
    print(markdown)
    print(f"(tail scenarios: {time.monotonic() - started:.0f} s)")
    return {"markdown": markdown, "results": json.loads(msgspec.json.encode(results))}
