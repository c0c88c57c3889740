"""``python -m benchmarks.run``: the side-by-side benchmark (``make bench``).

One interleaved run (rep 1: A B C …, rep 2: A B C …) of every configuration
at every concurrency, each point in a fresh process pinned to the client
core while the upstream owns the other core; then an interleaved streaming
run (fixed SSE bodies from nginx), the scale checks against the simulator,
and profiles of the llmlb hot paths. Writes ``benchmarks/out/latest.md``,
``latest.json``, ``bench.png`` and ``stream.png``; a full default run also
refreshes the committed ``benchmarks/bench.png`` and ``benchmarks/stream.png``.

``--scenario stream`` runs the streaming part alone (and its profile);
``--quick`` is a smoke run of well under a minute; see ``--help``.
``--scenario quota [its options]`` runs the quota scenario (``benchmarks/quota.py``)
instead; a full default run ends with it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any

import msgspec

from ._common import CLIENT_CORE, UPSTREAM_CORE, ChatBody, pin, proc_cpu_seconds
from ._report import (
    LABELS,
    added_cpu,
    cpu_flatness,
    markdown_table,
    plot,
    ratios,
    summarize,
)
from ._results import PointResult, PointSpec
from ._scale import ScaleSpec
from ._streaming import (
    STREAM_CONCURRENCY,
    STREAM_CONFIGS,
    run_streams,
    stream_plot,
    stream_report,
)
from ._upstream import Upstream, nginx_path, run_nginx, run_simulator

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["main", "parse_args"]

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIGS = [
    "httpx",
    "aiohttp",
    "litellm",
    "llmlb-transport",
    "llmlb-provider",
    "llmlb-1",
    "llmlb-3",
    "llmlb-aio",
    "llmlb-sync",
    "litellm-sync",
]
DEFAULT_CONCURRENCY = [1, 64, 512, 2048]
#: Too slow to run at high concurrency in a 15-minute budget: the naive httpx pool
#: takes minutes to finish its first 2048 requests, LiteLLM ~45 s.
SLOW_CONFIGS = frozenset({"httpx", "litellm", "llmlb-1-httpx", "litellm-sync"})
#: One caller thread per request in flight: capped like the slow ones (2048 threads
#: measure the operating system more than the client).
THREADED_CONFIGS = frozenset({"llmlb-sync", "litellm-sync"})
#: LiteLLM is measured over a fixed number of requests, not a time window.
LITELLM_CONFIGS = frozenset({"litellm", "litellm-sync"})
#: Named subsets (``--scenario NAME``): configurations, concurrencies, and no streaming,
#: scale or profile runs. ``frontends``: the asyncio and sync front-ends (issue 17).
SCENARIOS: dict[str, dict[str, list[Any]]] = {
    "frontends": {
        "configs": [
            "aiohttp",
            "llmlb-1",
            "llmlb-aio",
            "llmlb-aio-guest",
            "llmlb-sync",
            "litellm-sync",
        ],
        "concurrency": [64, 512],
    },
}
#: Scenarios with their own runner (``--scenario NAME [its options]``): a module with
#: ``main(argv) -> int`` each. ``quota``: pooled quota, side by side (issue 14).
MODULE_SCENARIOS = {"quota": "benchmarks.quota", "shared": "benchmarks.shared"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 rep, C=1,64, short windows")
    p.add_argument(
        "--scenario",
        choices=sorted([*SCENARIOS, *MODULE_SCENARIOS, "stream", "whole"]),
        help="a named subset. stream: the streaming run and its profile only; whole: no "
        "streaming run; frontends: aiohttp, llmlb-1, llmlb-aio, llmlb-aio-guest, llmlb-sync, "
        "litellm-sync at C=64,512, no stream/scale/profile; "
        f"{', '.join(MODULE_SCENARIOS)}: their own runners (and options)",
    )
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 3)")
    p.add_argument("--concurrency", type=_ints, help="comma-separated (default 1,64,512,2048)")
    p.add_argument(
        "--configs",
        type=_names,
        help=f"comma-separated, from: {', '.join(sorted(LABELS))} "
        f"(default {','.join(DEFAULT_CONFIGS)}; --quick drops litellm)",
    )
    p.add_argument("--measure", type=float, help="measuring window in s (default 3)")
    p.add_argument("--warmup", type=float, help="warm-up in s before each window (default 1)")
    p.add_argument(
        "--slow-max-concurrency",
        type=int,
        default=512,
        help="httpx and LiteLLM run only up to this C (default 512)",
    )
    p.add_argument("--litellm-requests", type=int, help="requests per LiteLLM point (default 150)")
    p.add_argument(
        "--simulator", action="store_true", help="use the simulator even if nginx exists"
    )
    p.add_argument("--no-stream", action="store_true", help="skip the streaming run")
    p.add_argument(
        "--stream-configs",
        type=_names,
        help=f"streaming configurations (default {','.join(STREAM_CONFIGS)})",
    )
    p.add_argument(
        "--stream-concurrency",
        type=_ints,
        help=f"streaming C values (default {','.join(map(str, STREAM_CONCURRENCY))})",
    )
    p.add_argument("--no-scale", action="store_true", help="skip the scale checks")
    p.add_argument("--no-profile", action="store_true", help="skip the profile")
    p.add_argument(
        "--no-scenarios",
        action="store_true",
        help=f"a full run skips {', '.join(MODULE_SCENARIOS)}",
    )
    p.add_argument("--inflight", type=int, help="requests in flight at once (default 10000)")
    p.add_argument("--batch", type=int, help="requests through lb.map (default 100000)")
    p.add_argument("--out", default=os.path.join(HERE, "out"), help="output directory")
    args = p.parse_args(argv)
    if args.scenario in SCENARIOS:
        scenario = SCENARIOS[args.scenario]
        args.configs = args.configs or list(scenario["configs"])
        args.concurrency = args.concurrency or list(scenario["concurrency"])
        args.no_stream = args.no_scale = args.no_profile = True
    quick = args.quick
    args.reps = args.reps or (1 if quick else 3)
    args.concurrency = args.concurrency or ([1, 64] if quick else DEFAULT_CONCURRENCY)
    args.full = args.configs is None and not quick and args.reps >= 3
    args.full = args.full and args.concurrency == DEFAULT_CONCURRENCY
    args.stream_full = (
        not quick
        and args.reps >= 3
        and args.stream_configs is None
        and args.stream_concurrency in (None, STREAM_CONCURRENCY)
    )
    args.stream_configs = args.stream_configs or STREAM_CONFIGS
    args.stream_concurrency = args.stream_concurrency or ([1, 64] if quick else STREAM_CONCURRENCY)
    if args.scenario == "stream":
        args.full = False
        args.no_scale = True
    elif args.scenario == "whole":
        args.no_stream = True
        args.stream_full = False
    args.stream_full = args.stream_full and not args.no_stream
    if args.configs is None:
        args.configs = [c for c in DEFAULT_CONFIGS if not (quick and c in LITELLM_CONFIGS)]
    args.measure = args.measure or (1.0 if quick else 3.0)
    args.warmup = args.warmup or (0.3 if quick else 1.0)
    args.litellm_requests = args.litellm_requests or (30 if quick else 150)
    args.inflight = args.inflight or (1000 if quick else 10_000)
    args.batch = args.batch or (5_000 if quick else 100_000)
    return args


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in LABELS and n != "raw-trio-httptools"]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown configuration(s): {', '.join(unknown)}")
    return names


# -- environment ------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    dists = [
        "llmlb-actors",
        "trio",
        "httpx",
        "httpcore",
        "httptools",
        "msgspec",
        "aiohttp",
        "litellm",
        "openai",
        "matplotlib",
        "pyinstrument",
    ]
    nginx = nginx_path()
    nginx_version = ""
    if nginx:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=5)
            nginx_version = out.stderr.strip().split("/")[-1]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        "versions": {d: _version(d) for d in dists},
        "nginx": nginx_version or "absent",
        "wrk": bool(shutil.which("wrk")),
        "load_average_start": os.getloadavg(),
    }


# -- running points -----------------------------------------------------------------------


def run_point(spec: PointSpec, timeout: float) -> PointResult | None:
    """One point in a fresh worker process; None (with the reason printed) if it failed."""
    cmd = [sys.executable, "-m", "benchmarks._worker", msgspec.json.encode(spec).decode()]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(HERE)
        )
    except subprocess.TimeoutExpired:
        print(f"    !! {spec.config} C={spec.concurrency}: no result within {timeout:.0f} s")
        return None
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not line.startswith("{"):
        tail = proc.stderr.strip().splitlines()[-3:]
        print(f"    !! {spec.config} C={spec.concurrency}: failed: {' | '.join(tail)}")
        return None
    return msgspec.json.decode(line, type=PointResult)


def _spec_for(args: argparse.Namespace, up: Upstream, config: str, c: int, rep: int) -> PointSpec:
    max_requests = args.litellm_requests if config in LITELLM_CONFIGS else None
    return PointSpec(
        config=config,
        concurrency=c,
        upstream=up,
        rep=rep,
        warmup_s=args.warmup,
        measure_s=max(args.measure, 60.0) if config in LITELLM_CONFIGS else args.measure,
        max_requests=max_requests,
        pin_core=CLIENT_CORE,
    )


def _progress(r: PointResult, reps: int) -> str:
    extra = ""
    if "attempts_running_mean" in r.extra:
        extra = f" running≈{r.extra['attempts_running_mean']:.0f}"
    if "chunks_per_s" in r.extra:
        extra += (
            f" ttfc p50 {r.extra['ttfc_p50_ms']:.2f} ms, {r.extra['chunks_per_s']:,.0f} chunks/s"
        )
    return (
        f"  [rep {r.rep + 1}/{reps}] C={r.concurrency:<5} {r.config:<16} "
        f"{r.rps:>8,.0f} req/s  p50 {r.p50_ms:8.2f} ms  p99 {r.p99_ms:9.2f} ms  "
        f"CPU {r.cpu_us_per_req:7,.0f} µs/req  RSS {r.peak_rss_mib:5.0f} MiB  "
        f"C≈{r.littles_l:.0f}  upstream {r.upstream_cpu_pct:3.0f}%"
        + (f"  errors {r.errors}" if r.errors else "")
        + extra
    )


def interleaved(
    args: argparse.Namespace, up: Upstream, configs: list[str], concurrency: list[int]
) -> list[PointResult]:
    """rep x C x configuration, configurations interleaved within each (rep, C)."""
    results: list[PointResult] = []
    for rep in range(args.reps):
        for c in concurrency:
            for config in configs:
                capped = config in SLOW_CONFIGS or config in THREADED_CONFIGS
                if capped and c > args.slow_max_concurrency:
                    continue
                spec = _spec_for(args, up, config, c, rep)
                timeout = spec.warmup_s + spec.measure_s + (240 if config in SLOW_CONFIGS else 90)
                result = run_point(spec, timeout)
                if result is not None:
                    results.append(result)
                    print(_progress(result, args.reps), flush=True)
    return results


# -- the upstream alone -------------------------------------------------------------------


def _wrk(up: Upstream, connections: int, seconds: float) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    body = msgspec.json.encode(ChatBody.make()).decode()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            f"wrk.method = 'POST'\nwrk.body = '{body}'\n"
            "wrk.headers['Content-Type'] = 'application/json'\n"
        )
        script = f.name
    try:
        out = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script, up.chat_url(0)],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            preexec_fn=lambda: pin(CLIENT_CORE),
        )
    finally:
        os.unlink(script)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    return float(match.group(1)) if match else None


def upstream_capacity(args: argparse.Namespace, up: Upstream) -> dict[str, Any]:
    """Closed-loop load on the upstream alone: wrk if installed, else raw trio + httptools."""
    seconds = 1.0 if args.quick else 3.0
    out: dict[str, Any] = {"tool": "wrk -t1" if shutil.which("wrk") else "raw-trio-httptools"}
    for c in (1, 64):
        before = proc_cpu_seconds(up.pids)
        t0 = time.perf_counter()
        rps = _wrk(up, c, seconds)
        if rps is None:
            out["tool"] = "raw-trio-httptools"
            spec = PointSpec(
                config="raw-trio-httptools",
                concurrency=c,
                upstream=up,
                warmup_s=0.3,
                measure_s=seconds,
                pin_core=CLIENT_CORE,
            )
            result = run_point(spec, 60)
            rps = result.rps if result else float("nan")
            cpu_pct = result.upstream_cpu_pct if result else float("nan")
        else:
            cpu_pct = (proc_cpu_seconds(up.pids) - before) / (time.perf_counter() - t0) * 100
        out[str(c)] = {"rps": rps, "upstream_cpu_pct": cpu_pct}
    return out


# -- streaming, scale, profile ------------------------------------------------------------


def _run_scale(spec: ScaleSpec, timeout: float) -> dict[str, Any] | None:
    cmd = [sys.executable, "-m", "benchmarks._scale", msgspec.json.encode(spec).decode()]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(HERE)
        )
    except subprocess.TimeoutExpired:
        print(f"    !! scale {spec.kind}: no result within {timeout:.0f} s")
        return None
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not line.startswith("{"):
        print(f"    !! scale {spec.kind} failed: {proc.stderr.strip()[-500:]}")
        return None
    result: dict[str, Any] = json.loads(line)
    return result


def scale(args: argparse.Namespace, up: Upstream) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print(f"\nScale: {args.inflight:,} requests in flight at once (simulator, 1 s latency):")
    with run_simulator(1, latency=1.0) as sim:
        spec = ScaleSpec(
            kind="inflight", requests=args.inflight, upstream=sim, pin_core=CLIENT_CORE
        )
        res = _run_scale(spec, 600)
    if res is not None:
        out["inflight"] = res
        print(
            f"  {res['ok']:,}/{res['requests']:,} succeeded in {res['seconds']:.1f} s; "
            f"at most {res['most_attempts_running']:,} attempts running at once "
            f"(simulator CPU {res['upstream_cpu_pct']:.0f}%); "
            f"RSS {res['baseline_rss_mib']:.0f} → {res['highest_rss_mib']:.0f} MiB = "
            f"{res['kib_per_in_flight']:.1f} KiB per in-flight request"
        )
    print(f"\nScale: {args.batch:,} requests through lb.map (concurrency 512, {up.kind}):")
    spec = ScaleSpec(kind="batch", requests=args.batch, upstream=up, pin_core=CLIENT_CORE)
    res = _run_scale(spec, 1200)
    if res is not None:
        out["batch"] = res
        marks = ", ".join(f"{int(k):,}: {v:.1f} MiB" for k, v in res["peak_rss_mib_at"].items())
        print(
            f"  {res['ok']:,}/{res['requests']:,} succeeded in {res['seconds']:.1f} s "
            f"({res['rps']:,.0f} req/s, via {'lb.map' if res['uses_lb_map'] else 'a nursery'}); "
            f"peak RSS after {marks}"
        )
    return out


def profile(
    args: argparse.Namespace, up: Upstream, out_dir: str, config: str = "llmlb-3"
) -> dict[str, str]:
    """pyinstrument and cProfile of ``config`` at C=64."""
    paths: dict[str, str] = {}
    print(f"\nProfiling {config} at C=64:")
    for kind in ("pyinstrument", "cprofile"):
        path = os.path.join(out_dir, f"profile-{kind}-{config}-c64.txt")
        spec = PointSpec(
            config=config,
            concurrency=64,
            upstream=up,
            warmup_s=args.warmup,
            measure_s=args.measure,
            pin_core=CLIENT_CORE,
            profile=f"{kind}:{path}",
        )
        result = run_point(spec, spec.measure_s + 120)
        if result is not None:
            paths[f"{kind}-{config}"] = path
            print(f"  {kind}: {path} ({result.cpu_us_per_req:,.0f} µs/req under the profiler)")
    return paths


# -- report -------------------------------------------------------------------------------


def _fmt_ratio(r: tuple[float, float, float] | None, digits: int = 2) -> str:
    if r is None:
        return "–"
    return f"{r[0]:.{digits}f}× ({r[1]:.{digits}f}–{r[2]:.{digits}f})"


def _fmt_delta(r: tuple[float, float, float] | None) -> str:
    if r is None:
        return "–"
    return f"{r[0]:+,.0f} µs ({r[1]:+,.0f} to {r[2]:+,.0f})"


def _whole_report(
    args: argparse.Namespace, points: list[PointResult], md: list[str], data: dict[str, Any]
) -> None:
    """The whole-response tables: the run, ratios, added CPU and CPU against C."""
    summaries = summarize(points)
    order = [c for c in DEFAULT_CONFIGS + sorted(LABELS) if c in args.configs]
    order = list(dict.fromkeys(order))
    subjects = [
        c
        for c in (
            "llmlb-3",
            "llmlb-1",
            "llmlb-provider",
            "llmlb-transport",
            "llmlb-aio",
            "llmlb-aio-guest",
            "llmlb-sync",
        )
        if c in args.configs
    ]
    cs = sorted({p.concurrency for p in points})
    md.append(
        "Medians over repetitions, (min–max). *achieved C* = throughput × mean latency "
        "(Little's law): the concurrency really sustained. *upstream CPU* = the upstream "
        "process's CPU during the window, % of one core (100 would mean it limits).\n"
    )
    md.append(markdown_table(summaries, order))

    md.append("\n## Ratios (paired within each repetition; median (min–max))\n")
    md.append("| subject | vs | metric | " + " | ".join(f"C={c}" for c in cs) + " |")
    md.append("|---|---|---|" + "---:|" * len(cs))
    for subject in subjects:
        for ref in ("aiohttp", "litellm", "litellm-sync", "llmlb-aio"):
            if ref not in args.configs or ref == subject:
                continue
            if ref == "litellm-sync" and subject != "llmlb-sync":
                continue  # LiteLLM's sync Router: the sync front-end's counterpart
            if ref == "llmlb-aio" and subject != "llmlb-aio-guest":
                continue  # the two asyncio runners, against each other
            rows: list[tuple[str, Any]] = [("throughput", lambda r: r.rps)]
            if ref in ("aiohttp", "llmlb-aio"):
                rows.append(("p99 latency", lambda r: r.p99_ms))
                rows.append(("CPU/request", lambda r: r.cpu_us_per_req))
            for name, metric in rows:
                rat = ratios(points, subject, ref, metric)
                data["ratios"][f"{subject}/{ref}/{name}"] = rat
                md.append(
                    f"| {subject} | {ref} | {name} | "
                    + " | ".join(_fmt_ratio(rat.get(c)) for c in cs)
                    + " |"
                )

    md.append("\n## What each layer adds (CPU µs per request, paired)\n")
    md.append("| layer | " + " | ".join(f"C={c}" for c in cs) + " |")
    md.append("|---|" + "---:|" * len(cs))
    layers = [
        ("balancer, 1 provider − transport alone", "llmlb-1", "llmlb-transport"),
        ("balancer, 3 providers − transport alone", "llmlb-3", "llmlb-transport"),
        ("adapter + provider − transport alone", "llmlb-provider", "llmlb-transport"),
        ("actors (balancer, 1 provider − provider alone)", "llmlb-1", "llmlb-provider"),
        ("asyncio front-end (llmlb-aio − trio, 1 provider)", "llmlb-aio", "llmlb-1"),
        ("asyncio guest run (llmlb-aio-guest − trio, 1 provider)", "llmlb-aio-guest", "llmlb-1"),
        ("sync front-end (llmlb-sync − trio, 1 provider)", "llmlb-sync", "llmlb-1"),
    ]
    for label, subject, base in layers:
        if subject in args.configs and base in args.configs:
            delta = added_cpu(points, subject, base)
            data["added_cpu"][f"{subject}-{base}"] = delta
            md.append(f"| {label} | " + " | ".join(_fmt_delta(delta.get(c)) for c in cs) + " |")

    md.append("\n## CPU per request against concurrency (median µs; ratio to the lowest C)\n")
    md.append("| client | " + " | ".join(f"C={c}" for c in cs) + " | max/min |")
    md.append("|---|" + "---:|" * (len(cs) + 1))
    for config in order:
        flat = cpu_flatness(summaries, config)
        if not flat:
            continue
        data["cpu_flatness"][config] = flat
        cells = [
            f"{flat['cpu_us'][c]:,.0f} ({flat['relative_to_lowest_c'][c]:.2f})"
            if c in flat["cpu_us"]
            else "–"
            for c in cs
        ]
        md.append(
            f"| {LABELS.get(config, config)} | "
            + " | ".join(cells)
            + f" | {flat['max_over_min']:.2f} |"
        )


def report(
    args: argparse.Namespace,
    env: dict[str, Any],
    up: Upstream,
    capacity: dict[str, Any],
    points: list[PointResult],
    streams: list[PointResult],
    scaled: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    summaries = summarize(points)
    md: list[str] = []
    md.append(f"# llmlb_actors benchmark — {env['date']}\n")
    md.append(
        f"- Machine: {env['machine']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in env['load_average_start'])}, at end "
        f"{', '.join(f'{x:.1f}' for x in env['load_average_end'])}"
    )
    md.append(f"- Python: {env['python']}")
    md.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    if up.kind == "nginx":
        md.append(
            f"- Upstream: nginx {env['nginx']} (1 worker, fixed chat.completion reply), "
            f"pinned to core {UPSTREAM_CORE}; clients pinned to core {CLIENT_CORE}"
        )
    else:
        md.append(
            "- Upstream: **the llmlb_actors simulator in its own process (nginx is not "
            "installed)**: it may limit throughput; check the upstream CPU column"
        )
    cap = "; ".join(
        f"C={c}: {capacity[c]['rps']:,.0f} req/s "
        f"(upstream CPU {capacity[c]['upstream_cpu_pct']:.0f}%)"
        for c in ("1", "64")
        if c in capacity
    )
    md.append(f"- Upstream alone ({capacity.get('tool')} on the client core): {cap}")
    md.append(
        f"- Interleaved: {args.reps} repetitions × C in {args.concurrency} × "
        f"{len(args.configs)} configurations, each point a fresh process; "
        f"warm-up {args.warmup:g} s, window {args.measure:g} s "
        f"(LiteLLM: {args.litellm_requests} requests); httpx and LiteLLM only up to "
        f"C={args.slow_max_concurrency}"
    )
    md.append("- Command: `" + " ".join(["python -m benchmarks.run", *sys.argv[1:]]) + "`\n")
    data: dict[str, Any] = {"ratios": {}, "added_cpu": {}, "cpu_flatness": {}}
    if points:
        _whole_report(args, points, md, data)
    if streams:
        text, data["streaming"] = stream_report(streams, up.kind)
        md.append(text)

    if scaled:
        md.append("\n## Scale\n")
        inflight = scaled.get("inflight")
        if inflight:
            md.append(
                f"- **{inflight['requests']:,} requests in flight at once** (simulator, 1 s "
                f"latency, one provider with `max_concurrency={inflight['requests']}`): "
                f"{inflight['ok']:,} succeeded, {inflight['failed']} failed, in "
                f"{inflight['seconds']:.1f} s; at most **{inflight['most_attempts_running']:,} "
                f"attempts running at once** at the HTTP layer"
                + (
                    " (the rest waited in the provider's mailbox)"
                    if inflight["most_attempts_running"] < inflight["requests"]
                    else ""
                )
                + f"; RSS {inflight['baseline_rss_mib']:.1f} MiB before → "
                f"{inflight['highest_rss_mib']:.1f} MiB highest = "
                f"**{inflight['kib_per_in_flight']:.1f} KiB per in-flight request**; "
                f"{inflight['cpu_us_per_req']:,.0f} µs CPU per request (connection set-up "
                f"included); simulator CPU {inflight['upstream_cpu_pct']:.0f}%."
            )
        batch = scaled.get("batch")
        if batch:
            marks = ", ".join(
                f"{int(k):,}: {v:.1f} MiB" for k, v in batch["peak_rss_mib_at"].items()
            )
            md.append(
                f"- **{batch['requests']:,} requests through "
                f"{'`lb.map`' if batch['uses_lb_map'] else 'a bounded nursery'}** "
                f"(concurrency {batch['concurrency']}, {up.kind}): {batch['ok']:,} succeeded "
                f"in {batch['seconds']:.1f} s ({batch['rps']:,.0f} req/s); peak RSS after "
                f"{marks} (baseline {batch['baseline_rss_mib']:.1f} MiB)."
            )
    data["summaries"] = {
        f"{k[0]}@{k[1]}": {
            "rps": s.median(lambda r: r.rps),
            "p50_ms": s.median(lambda r: r.p50_ms),
            "p99_ms": s.median(lambda r: r.p99_ms),
            "cpu_us_per_req": s.median(lambda r: r.cpu_us_per_req),
            "peak_rss_mib": s.median(lambda r: r.peak_rss_mib),
        }
        for k, s in summaries.items()
    }
    return "\n".join(md) + "\n", data


# -- main ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _upstream(args: argparse.Namespace) -> Iterator[Upstream]:
    if not args.simulator and nginx_path() is not None:
        with run_nginx() as up:
            yield up
        return
    reason = "--simulator was given" if args.simulator else "nginx is not installed"
    print(
        f"!! {reason}: the upstream is the llmlb_actors SIMULATOR in its own process, "
        "not nginx; it may be the bottleneck (see the upstream CPU column)."
    )
    with run_simulator(3) as up:
        yield up


def run_scenario(name: str, argv: Sequence[str]) -> int:
    import importlib

    if name not in MODULE_SCENARIOS:
        print(f"unknown scenario {name!r}; expected one of {', '.join(MODULE_SCENARIOS)}")
        return 2
    scenario_main = importlib.import_module(MODULE_SCENARIOS[name]).main
    return int(scenario_main(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--scenario" in argv:
        at = argv.index("--scenario")
        name = argv[at + 1] if at + 1 < len(argv) else ""
        if name in MODULE_SCENARIOS:
            return run_scenario(name, argv[:at] + argv[at + 2 :])
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("!! fewer than 2 cores: client and upstream will share one core")
    pin(UPSTREAM_CORE)  # the runner itself mostly sleeps; keep it off the client core
    os.makedirs(args.out, exist_ok=True)
    env = environment()
    started = time.perf_counter()
    print(f"llmlb_actors benchmark — {env['date']}\n{env['machine']}\n{env['python']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    with _upstream(args) as up:
        print(
            f"upstream: {up.kind} on 127.0.0.1 ports {up.ports} (core {UPSTREAM_CORE}); "
            f"clients on core {CLIENT_CORE}"
        )
        capacity = upstream_capacity(args, up)
        print(
            f"upstream alone ({capacity['tool']}): "
            + "; ".join(
                f"C={c}: {capacity[c]['rps']:,.0f} req/s, upstream CPU "
                f"{capacity[c]['upstream_cpu_pct']:.0f}%"
                for c in ("1", "64")
            )
        )
        points: list[PointResult] = []
        if args.scenario != "stream":
            print(f"\nInterleaved run: {args.reps} reps × C={args.concurrency} × {args.configs}")
            points = interleaved(args, up, args.configs, args.concurrency)
        streams = [] if args.no_stream else run_streams(args, up, run_point, _progress)
        scaled = {} if args.no_scale else scale(args, up)
        profiles: dict[str, str] = {}
        if not args.no_profile:
            if args.scenario != "stream":
                profiles.update(profile(args, up, args.out))
            if streams:
                profiles.update(profile(args, up, args.out, "llmlb-stream-3"))
    env["load_average_end"] = os.getloadavg()
    env["wall_seconds"] = time.perf_counter() - started
    md, data = report(args, env, up, capacity, points, streams, scaled)
    if profiles:
        md += (
            "\nProfiles: "
            + ", ".join(f"`{os.path.relpath(p, HERE)}`" for p in profiles.values())
            + "\n"
        )
    md += f"\nWall time of the whole run: {env['wall_seconds'] / 60:.1f} min.\n"
    print("\n" + md)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    payload = {
        "environment": env,
        "args": {k: v for k, v in vars(args).items()},
        "upstream": msgspec.to_builtins(up),
        "upstream_capacity": capacity,
        "points": msgspec.to_builtins(points),
        "streaming": msgspec.to_builtins(streams),
        "scale": scaled,
        "profiles": profiles,
        **{k: _jsonable(v) for k, v in data.items()},
    }
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(payload, f, indent=1)
    png = os.path.join(args.out, "bench.png")
    if points:
        order = [c for c in args.configs]
        plot(
            summarize(points),
            order,
            png,
            f"{env['date']} · {env['machine']} · {env['python'].split(' (')[0]} · "
            f"upstream {up.kind}",
        )
        print(f"wrote {args.out}/latest.md, latest.json, bench.png")
        if args.full:
            shutil.copyfile(png, os.path.join(HERE, "bench.png"))
            print("full run: copied the plot to benchmarks/bench.png")
    if streams:
        stream_png = os.path.join(args.out, "stream.png")
        stream_plot(
            summarize(streams),
            stream_png,
            f"{env['date']} · {env['machine']} · {env['python'].split(' (')[0]} · "
            f"upstream {up.kind}, SSE",
        )
        print(f"wrote {args.out}/stream.png")
        if args.stream_full and up.kind == "nginx":
            shutil.copyfile(stream_png, os.path.join(HERE, "stream.png"))
            print("full streaming run: copied the plot to benchmarks/stream.png")
    if args.full and not args.no_scenarios:
        for name in MODULE_SCENARIOS:
            run_scenario(name, ["--out", args.out])
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
