"""``python -m benchmarks.quota`` (``benchmarks.run --scenario quota``): pooled quota, side by side.

Four simulated providers, each with a quota of ``--rpm`` (600: at most 10
requests in any rolling second), and a batch of ``--requests`` (2,000) at
concurrency ``--concurrency`` (256), once per configuration, interleaved over
``--reps``. Each configuration gets a fresh simulator process (empty quotas)
pinned to the upstream core, and runs in a fresh process on the client core.

Reported per configuration: upstream 429s (counted by the simulator), the
throughput over the run as a share of the pooled quota, failed requests,
latency. The targets of issue 14 are checked and printed as met or not:
configured limits 0 upstream 429s and >= 95 % of the pooled rpm; limits
learned from headers only <= 2 % 429s and >= 90 %. Writes ``out/quota.md``,
``out/quota.json`` and ``out/quota.png`` (completed requests over time,
against the pooled quota's line); a full default run also copies the plot to
``benchmarks/quota.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ._common import CLIENT_CORE, UPSTREAM_CORE, pin
from ._quota_clients import CONFIGS, QuotaResult, QuotaSpec
from ._quota_sim import QuotaSimSpec
from ._upstream import _stop, _wait_port, free_ports

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["main", "parse_args"]

HERE = os.path.dirname(os.path.abspath(__file__))
LABELS = {
    "llmlb-configured": "llmlb, rpm configured",
    "llmlb-quota": 'llmlb, rpm configured, strategy="quota"',
    "llmlb-learned": "llmlb, limits learned from headers",
    "llmlb-off": "llmlb, budgets off (fire, back off on 429)",
    "litellm-usage-v2": "LiteLLM Router, usage-based-routing-v2",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quota", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 240 requests at C=64")
    p.add_argument("--requests", type=int, help="batch size (default 2000)")
    p.add_argument("--concurrency", type=int, help="closed-loop concurrency (default 256)")
    p.add_argument("--rpm", type=int, default=600, help="each provider's quota (default 600)")
    p.add_argument("--providers", type=int, default=4, help="simulated providers (default 4)")
    p.add_argument("--reps", type=int, default=1, help="interleaved repetitions (default 1)")
    p.add_argument(
        "--configs",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        help=f"comma-separated, from {', '.join(CONFIGS)} (default all)",
    )
    p.add_argument("--out", default=os.path.join(HERE, "out"), help="output directory")
    args = p.parse_args(argv)
    args.requests = args.requests or (240 if args.quick else 2000)
    args.concurrency = args.concurrency or (64 if args.quick else 256)
    args.configs = args.configs or list(CONFIGS)
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s): {', '.join(unknown)}")
    args.full = not args.quick and args.requests == 2000 and args.configs == list(CONFIGS)
    return args


@contextlib.contextmanager
def quota_simulator(count: int, rpm: int) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """A fresh simulator process; the dict is filled with its counters when it stops."""
    ports = free_ports(count)
    counters: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llmlb-quota-") as tmp:
        stats_path = os.path.join(tmp, "stats.json")
        spec = QuotaSimSpec(ports=ports, rpm=rpm, stats_path=stats_path, core=UPSTREAM_CORE)
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._quota_sim", msgspec.json.encode(spec).decode()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd=os.path.dirname(HERE),
        )
        try:
            deadline = time.monotonic() + 30
            for port in ports:
                _wait_port(port, proc, deadline)
            yield ports, counters
        finally:
            _stop(proc)
            with contextlib.suppress(OSError, ValueError), open(stats_path) as f:
                counters.update(json.load(f))


def run_one(args: argparse.Namespace, config: str, rep: int) -> QuotaResult | None:
    pooled_per_s = args.rpm * args.providers / 60
    timeout = args.requests / pooled_per_s * 4 + 180
    with quota_simulator(args.providers, args.rpm) as (ports, counters):
        spec = QuotaSpec(
            config=config,
            ports=ports,
            rpm=args.rpm,
            requests=args.requests,
            concurrency=args.concurrency,
            rep=rep,
            pin_core=CLIENT_CORE,
        )
        cmd = [
            sys.executable,
            "-m",
            "benchmarks._quota_clients",
            msgspec.json.encode(spec).decode(),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(HERE)
            )
        except subprocess.TimeoutExpired:
            print(f"    !! {config}: no result within {timeout:.0f} s")
            return None
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not line.startswith("{"):
        tail = proc.stderr.strip().splitlines()[-3:]
        print(f"    !! {config}: failed: {' | '.join(tail)}")
        return None
    result = msgspec.json.decode(line, type=QuotaResult)
    result.upstream = {
        "requests": sum(c.get("requests", 0) for c in counters.values()),
        "rate_limited": sum(c.get("rate_limited", 0) for c in counters.values()),
        "per_provider": {
            name: {"requests": c.get("requests", 0), "rate_limited": c.get("rate_limited", 0)}
            for name, c in counters.items()
        },
    }
    return result


def _progress(r: QuotaResult) -> str:
    up = r.upstream
    return (
        f"  [rep {r.rep + 1}] {r.config:<17} {r.ok:>5}/{r.requests} ok in {r.seconds:6.1f} s = "
        f"{r.rpm:7,.0f} rpm ({r.share:6.1%} of {r.pooled_rpm:,.0f})  upstream 429s "
        f"{up.get('rate_limited', '?'):>5} of {up.get('requests', '?')} requests  "
        f"p50 {r.p50_ms / 1000:6.2f} s  p99 {r.p99_ms / 1000:6.2f} s"
        + (f"  failed {r.failed} {r.errors}" if r.failed else "")
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def targets(results: list[QuotaResult]) -> list[str]:
    """Issue 14's measured targets, each stated as met or not (per repetition)."""
    lines = []
    for r in results:
        limited = r.upstream.get("rate_limited", 0)
        ratio = limited / r.requests if r.requests else 0.0
        if r.config == "llmlb-configured":
            met = limited == 0 and r.share >= 0.95 and r.failed == 0
            lines.append(
                f"- configured limits (rep {r.rep + 1}): {limited} upstream 429s (target 0), "
                f"{r.share:.1%} of the pooled rpm (target ≥ 95 %), {r.failed} failed: "
                f"**{'met' if met else 'NOT met'}**"
            )
        elif r.config == "llmlb-learned":
            met = ratio <= 0.02 and r.share >= 0.90 and r.failed == 0
            lines.append(
                f"- limits learned from headers (rep {r.rep + 1}): {limited} upstream 429s = "
                f"{ratio:.2%} of requests (target ≤ 2 %), {r.share:.1%} of the pooled rpm "
                f"(target ≥ 90 %), {r.failed} failed: **{'met' if met else 'NOT met'}**"
            )
    return lines


def report(args: argparse.Namespace, results: list[QuotaResult]) -> str:
    md = [
        f"## Quota: {args.providers} providers × rpm={args.rpm} (pooled "
        f"{args.providers * args.rpm:,} rpm), {args.requests:,} requests at concurrency "
        f"{args.concurrency}",
        "",
        "| configuration | ok | failed | upstream 429s (each run) | 429s / requests | seconds | "
        "rpm | share of pooled | p50 s | p99 s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in args.configs:
        runs = [r for r in results if r.config == config]
        if not runs:
            continue
        counts = [int(r.upstream.get("rate_limited", 0)) for r in runs]
        limited = _median([float(c) for c in counts])
        span = f" (median of {len(runs)})" if len(runs) > 1 else ""
        md.append(
            f"| {LABELS[config]}{span} | {_median([r.ok for r in runs]):,.0f} | "
            f"{_median([r.failed for r in runs]):,.0f} | {' / '.join(f'{c:,}' for c in counts)} | "
            f"{limited / args.requests:.2%} | {_median([r.seconds for r in runs]):.1f} | "
            f"{_median([r.rpm for r in runs]):,.0f} | {_median([r.share for r in runs]):.1%} | "
            f"{_median([r.p50_ms for r in runs]) / 1000:.2f} | "
            f"{_median([r.p99_ms for r in runs]) / 1000:.2f} |"
        )
    md += ["", "Targets (issue 14):", *targets(results)]
    for r in results:
        if r.failed:
            sample = "; ".join(f"{k}: {v[:160]}" for k, v in r.error_samples.items())
            md.append(f"- {r.config} rep {r.rep + 1} failures: {r.errors} — e.g. {sample}")
    return "\n".join(md) + "\n"


def plot(args: argparse.Namespace, results: list[QuotaResult], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    longest = 0.0
    for config in args.configs:
        runs = [r for r in results if r.config == config]
        if not runs:
            continue
        r = runs[0]
        xs = r.completions
        ax.step(xs, range(1, len(xs) + 1), where="post", label=LABELS[config])
        longest = max(longest, r.seconds)
    rate = args.rpm * args.providers / 60
    ax.plot([0, args.requests / rate], [0, args.requests], "k:", label="pooled quota")
    ax.set_xlabel("seconds since the batch started")
    ax.set_ylabel("requests completed")
    ax.set_title(
        f"{args.requests:,} requests, C={args.concurrency}, "
        f"{args.providers} providers × rpm {args.rpm}"
    )
    ax.set_xlim(0, longest * 1.02 if longest else None)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pin(UPSTREAM_CORE)
    os.makedirs(args.out, exist_ok=True)
    print(
        f"quota scenario: {args.providers} providers × rpm {args.rpm}, {args.requests} requests "
        f"at C={args.concurrency}, {args.reps} rep(s) × {args.configs}"
    )
    results: list[QuotaResult] = []
    for rep in range(args.reps):
        for config in args.configs:
            result = run_one(args, config, rep)
            if result is not None:
                results.append(result)
                print(_progress(result), flush=True)
    md = report(args, results)
    print("\n" + md)
    with open(os.path.join(args.out, "quota.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "quota.json"), "w") as f:
        json.dump({"args": vars(args), "results": msgspec.to_builtins(results)}, f, indent=1)
    png = os.path.join(args.out, "quota.png")
    if results and plot(args, results, png):
        print(f"wrote {args.out}/quota.md, quota.json, quota.png")
        if args.full:
            import shutil

            shutil.copyfile(png, os.path.join(HERE, "quota.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
