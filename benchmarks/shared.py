"""``python -m benchmarks.shared`` (``--scenario shared``): one quota, several balancers.

Part 1, pooling (issue 18): a fresh ``redis-server`` on a free port, a
simulator process with ``--providers`` (4) providers each enforcing a rolling-window
quota of ``--rpm`` (600: 10 requests a second), and ``--balancers`` (3) balancer
processes that split ``--requests`` (1,200) between them, every balancer
configured with each provider's rpm. Run with shared state (every balancer's
budgets in that Redis) and without (each balancer paces to the whole limit on
its own: the N x limit failure), interleaved over ``--reps``. Reported: upstream
429s (counted by the simulator), the share of the pooled quota used over the
run, and the admission round trip each request paid to Redis (p50/p99 µs).

Part 2, throughput: one balancer at ``--concurrency`` (512) against a simulator
without quotas (0 latency), providers configured with a limit far above the
rate so every request is admitted through the store: shared state vs the
in-process store vs budgets off, requests per second.

Part 3, how the others learn about a hold: an admission round trip (the reserve
script, which reads the provider's holds) against a bare ``EVALSHA`` of a
one-line script, and a pub/sub message's publish-to-delivery latency.

Writes ``out/shared.md`` and ``out/shared.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ._quota_sim import QuotaSimSpec
from ._shared_worker import SharedResult, SharedSpec
from ._upstream import _stop, _wait_port, free_ports

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["main", "parse_args"]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.shared", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 240 requests, 1 rep")
    p.add_argument("--requests", type=int, help="pooling batch, split over the balancers (1200)")
    p.add_argument("--balancers", type=int, default=3, help="balancer processes (default 3)")
    p.add_argument("--providers", type=int, default=4, help="simulated providers (default 4)")
    p.add_argument("--rpm", type=int, default=600, help="each provider's quota (default 600)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 2)")
    p.add_argument("--concurrency", type=int, default=512, help="throughput C (default 512)")
    p.add_argument("--throughput-requests", type=int, help="requests per throughput run (5000)")
    p.add_argument("--out", default=os.path.join(HERE, "out"), help="output directory")
    args = p.parse_args(argv)
    args.requests = args.requests or (240 if args.quick else 1200)
    args.reps = args.reps or (1 if args.quick else 2)
    args.throughput_requests = args.throughput_requests or (1000 if args.quick else 5000)
    return args


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: `make bench` installs it (apt-get)")
    (port,) = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="llmlb-redis-") as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(port, proc, time.monotonic() + 10)  # type: ignore[arg-type]
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def simulator(count: int, rpm: int, latency: float) -> Iterator[tuple[list[int], dict[str, Any]]]:
    ports = free_ports(count)
    counters: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llmlb-shared-") as tmp:
        stats_path = os.path.join(tmp, "stats.json")
        spec = QuotaSimSpec(
            ports=ports, rpm=rpm, stats_path=stats_path, latency=latency, latency_jitter=latency
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._quota_sim", msgspec.json.encode(spec).decode()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 30
            for port in ports:
                _wait_port(port, proc, deadline)  # type: ignore[arg-type]
            yield ports, counters
        finally:
            _stop(proc)  # type: ignore[arg-type]
            with contextlib.suppress(OSError, ValueError), open(stats_path) as f:
                counters.update(json.load(f))


def _workers(specs: list[SharedSpec], timeout: float) -> list[SharedResult]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks._shared_worker", msgspec.json.encode(s).decode()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for s in specs
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        line = out.strip().splitlines()[-1] if out.strip() else ""
        if proc.returncode != 0 or not line.startswith("{"):
            raise RuntimeError(f"balancer process failed: {err.strip().splitlines()[-3:]}")
        results.append(msgspec.json.decode(line, type=SharedResult))
    return results


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def pooling(args: argparse.Namespace, shared: bool, rep: int) -> dict[str, Any]:
    """One fleet run: ``args.balancers`` processes, one simulator, one Redis (if shared)."""
    pooled = args.rpm * args.providers / 60  # requests a second
    share = [args.requests // args.balancers] * args.balancers
    share[0] += args.requests - sum(share)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server()) if shared else None
        ports, counters = stack.enter_context(simulator(args.providers, args.rpm, 0.05))
        start_at = time.time() + 3.0  # every process has connected by then
        specs = [
            SharedSpec(
                ports=ports,
                rpm=args.rpm,
                requests=n,
                concurrency=64,
                shared_state=url,
                start_at=start_at,
                name=f"b{i}",
            )
            for i, n in enumerate(share)
        ]
        results = _workers(specs, timeout=args.requests / pooled * 6 + 120)
    ok = sum(r.ok for r in results)
    start = min(r.started for r in results)
    end = max(r.finished for r in results)
    seconds = end - start
    reserve = [t for r in results for t in r.reserve_us]
    return {
        "config": "shared" if shared else "local",
        "rep": rep,
        "ok": ok,
        "failed": sum(r.failed for r in results),
        "errors": [r.errors for r in results],
        "seconds": seconds,
        "share_of_pooled": ok / (seconds * pooled) if seconds > 0 else 0.0,
        "upstream_requests": sum(c.get("requests", 0) for c in counters.values()),
        "upstream_429": sum(c.get("rate_limited", 0) for c in counters.values()),
        "reserve_p50_us": _pct(reserve, 0.5),
        "reserve_p99_us": _pct(reserve, 0.99),
        "admissions": len(reserve),
        "refusals": sum(r.refusals for r in results),
        "local_decisions": sum(r.local_decisions for r in results),
        "per_balancer_ok": [r.ok for r in results],
    }


def throughput(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """One balancer at C against a simulator without quotas: ``shared``, ``local`` or ``off``."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server()) if mode == "shared" else None
        ports, _ = stack.enter_context(simulator(args.providers, 10**9, 0.0))
        spec = SharedSpec(
            ports=ports,
            rpm=None if mode == "off" else 10**9,
            requests=args.throughput_requests,
            concurrency=args.concurrency,
            shared_state=url,
            start_at=time.time() + 1.5,
        )
        (result,) = _workers([spec], timeout=600)
    seconds = result.finished - result.started
    return {
        "mode": mode,
        "ok": result.ok,
        "failed": result.failed,
        "seconds": seconds,
        "rps": result.ok / seconds if seconds > 0 else 0.0,
        "reserve_p50_us": _pct(result.reserve_us, 0.5),
        "reserve_p99_us": _pct(result.reserve_us, 0.99),
        "local_decisions": result.local_decisions,
    }


def holds(samples: int = 2000) -> dict[str, Any]:
    """Reads on admission vs pub/sub: what each way of learning about a hold costs."""
    import trio

    from llmlb_actors._shared import _scripts

    out: dict[str, Any] = {}

    async def measure(url: str) -> None:
        import coredis

        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with coredis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
            bare = client.register_script("return 1")
            reserve = client.register_script(_scripts.RESERVE)
            await client.hset("llmlb:{p}:h", {"hold:circuit": "1", "by:circuit": "x"})
            keys = ["llmlb:{p}:w", "llmlb:{p}:b", "llmlb:{p}:h", "llmlb:{p}:d"]
            times: dict[str, list[float]] = {"bare": [], "reserve": []}
            for i in range(samples):
                for name, script, args in (
                    ("bare", bare, []),
                    ("reserve", reserve, ["", f"m{i}", 10**9, 1_020_000, 0, 0, 0, 10, 10, "y"]),
                ):
                    t0 = time.perf_counter()
                    await script(keys=keys if name == "reserve" else [], args=args)
                    times[name].append((time.perf_counter() - t0) * 1e6)
            for name, values in times.items():
                out[f"{name}_p50_us"] = _pct(values, 0.5)
                out[f"{name}_p99_us"] = _pct(values, 0.99)
            # Pub/sub: publish on one connection, receive on a subscriber's.
            latencies: list[float] = []
            async with client.pubsub(channels=["llmlb:holds"]) as sub:
                await trio.sleep(0.1)
                for _ in range(min(samples, 500)):
                    t0 = time.perf_counter()
                    await client.publish("llmlb:holds", "p circuit 30")
                    async for message in sub:
                        if message.get("type") == "message":
                            break
                    latencies.append((time.perf_counter() - t0) * 1e6)
            out["pubsub_p50_us"] = _pct(latencies, 0.5)
            out["pubsub_p99_us"] = _pct(latencies, 0.99)

    with redis_server() as url:
        try:
            trio.run(measure, url)
        except Exception as exc:  # report what could be measured
            out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def report(
    args: argparse.Namespace,
    pools: list[dict[str, Any]],
    rates: list[dict[str, Any]],
    hold: dict[str, Any],
) -> str:
    md = [
        f"## Shared state: {args.balancers} balancer processes, one Redis, {args.providers} "
        f"providers × rpm {args.rpm} (pooled {args.providers * args.rpm / 60:g} requests/s), "
        f"{args.requests:,} requests split over the processes",
        "",
        "| configuration | rep | ok | failed | upstream 429s | upstream requests | seconds | "
        "share of pooled | Redis admission p50 µs | p99 µs | refused by Redis | "
        "decided locally |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in pools:
        label = "shared_state (one Redis)" if r["config"] == "shared" else "no shared state"
        lat = (
            f"{r['reserve_p50_us']:,.0f} | {r['reserve_p99_us']:,.0f} | {r['refusals']} | "
            f"{r['local_decisions']}"
            if r["config"] == "shared"
            else "– | – | – | –"
        )
        md.append(
            f"| {label} | {r['rep'] + 1} | {r['ok']:,} | {r['failed']} | {r['upstream_429']:,} | "
            f"{r['upstream_requests']:,} | {r['seconds']:.1f} | {r['share_of_pooled']:.1%} | "
            f"{lat} |"
        )
    md += ["", "Targets (issue 18):"]
    for r in pools:
        if r["config"] == "shared":
            met = r["upstream_429"] == 0 and r["share_of_pooled"] >= 0.90 and r["failed"] == 0
            md.append(
                f"- shared, rep {r['rep'] + 1}: {r['upstream_429']} upstream 429s (target 0), "
                f"{r['share_of_pooled']:.1%} of the pooled quota (target ≥ 90 %): "
                f"**{'met' if met else 'NOT met'}**"
            )
    md += [
        "",
        f"### Throughput, one balancer at C={args.concurrency}, "
        f"{args.throughput_requests:,} requests, simulator without quotas",
        "",
        "| budgets | requests/s | failed | Redis admission p50 µs | p99 µs | decided locally |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rates:
        label = {"shared": "shared_state (Redis)", "local": "in-process store", "off": "quota off"}
        lat = (
            f"{r['reserve_p50_us']:,.0f} | {r['reserve_p99_us']:,.0f} | {r['local_decisions']}"
            if r["mode"] == "shared"
            else "– | – | –"
        )
        md.append(f"| {label[r['mode']]} | {r['rps']:,.0f} | {r['failed']} | {lat} |")
    md += [
        "",
        "### Learning about a hold: reads on admission vs pub/sub",
        "",
        "| round trip | p50 µs | p99 µs |",
        "|---|---:|---:|",
        f"| bare EVALSHA (`return 1`) | {hold.get('bare_p50_us', float('nan')):,.0f} | "
        f"{hold.get('bare_p99_us', float('nan')):,.0f} |",
        f"| reserve script (reads the holds) | {hold.get('reserve_p50_us', float('nan')):,.0f} | "
        f"{hold.get('reserve_p99_us', float('nan')):,.0f} |",
        f"| pub/sub publish → delivery | {hold.get('pubsub_p50_us', float('nan')):,.0f} | "
        f"{hold.get('pubsub_p99_us', float('nan')):,.0f} |",
    ]
    if "error" in hold:
        md.append(f"\n(measurement stopped: {hold['error']})")
    return "\n".join(md) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    print(
        f"shared scenario: {args.balancers} balancers × {args.providers} providers × rpm "
        f"{args.rpm}, {args.requests} requests, {args.reps} rep(s); throughput at "
        f"C={args.concurrency}"
    )
    pools = []
    for rep in range(args.reps):
        for shared in (True, False):
            r = pooling(args, shared, rep)
            pools.append(r)
            print(
                f"  [rep {rep + 1}] {r['config']:<6} {r['ok']}/{args.requests} ok in "
                f"{r['seconds']:.1f} s = {r['share_of_pooled']:.1%} of pooled; upstream 429s "
                f"{r['upstream_429']}; admission p50/p99 {r['reserve_p50_us']:.0f}/"
                f"{r['reserve_p99_us']:.0f} µs",
                flush=True,
            )
    rates = []
    for mode in ("shared", "local", "off"):
        r = throughput(args, mode)
        rates.append(r)
        print(f"  throughput {mode:<6} {r['rps']:,.0f} req/s ({r['failed']} failed)", flush=True)
    hold = holds(500 if args.quick else 2000)
    md = report(args, pools, rates, hold)
    print("\n" + md)
    with open(os.path.join(args.out, "shared.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "shared.json"), "w") as f:
        json.dump(
            {"args": vars(args), "pooling": pools, "throughput": rates, "holds": hold}, f, indent=1
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
