"""The streaming run: SSE streams side by side, interleaved, and its report and plot.

Against nginx, every stream is a fixed 64-delta answer (`_sse_bodies`) in the
OpenAI, Anthropic or Gemini shape; the reference is a hand-written aiohttp SSE
client (one session, SSE lines, each event decoded with msgspec). Without
nginx the simulator serves OpenAI streams only, and only those configurations
run. Per point: streams/s, time to first chunk (p50, p99), CPU per stream and
per chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import CLIENT_CORE
from ._report import LABELS, ratios, summarize
from ._results import PointResult, PointSpec
from ._sse_bodies import STREAM_DELTAS

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from ._report import Summary
    from ._upstream import Upstream

__all__ = [
    "REFERENCE",
    "STREAM_CONCURRENCY",
    "STREAM_CONFIGS",
    "cpu_per_chunk",
    "run_streams",
    "stream_plot",
    "stream_report",
]

REFERENCE = "aiohttp-stream"
STREAM_CONFIGS = [
    "aiohttp-stream",
    "llmlb-stream-provider",
    "llmlb-stream-3",
    "llmlb-stream-3-anthropic",
    "llmlb-stream-3-gemini",
]
STREAM_CONCURRENCY = [1, 64, 512]
#: Configurations that stream another protocol than OpenAI (nginx only).
_NGINX_ONLY = frozenset({"llmlb-stream-3-anthropic", "llmlb-stream-3-gemini"})


def cpu_per_chunk(r: PointResult) -> float:
    """CPU µs per delta received: the window's CPU over the deltas that arrived in it."""
    chunks = r.extra.get("chunks", 0)
    if not chunks:
        return float("nan")
    return r.cpu_us_per_req * r.requests / chunks


def _ttfc(q: str) -> Callable[[PointResult], float]:
    return lambda r: float(r.extra.get(f"ttfc_{q}_ms", float("nan")))


def run_streams(
    args: argparse.Namespace,
    up: Upstream,
    run_point: Callable[[PointSpec, float], PointResult | None],
    progress: Callable[[PointResult, int], str],
) -> list[PointResult]:
    """rep x C x configuration, interleaved like the whole-response run."""
    configs = [c for c in args.stream_configs if up.kind == "nginx" or c not in _NGINX_ONLY]
    skipped = [c for c in args.stream_configs if c not in configs]
    print(
        f"\nStreaming run ({up.kind}, {STREAM_DELTAS} deltas per answer): {args.reps} reps × "
        f"C={args.stream_concurrency} × {configs}"
        + (f" (skipped without nginx: {skipped})" if skipped else "")
    )
    results: list[PointResult] = []
    for rep in range(args.reps):
        for c in args.stream_concurrency:
            for config in configs:
                spec = PointSpec(
                    config=config,
                    concurrency=c,
                    upstream=up,
                    rep=rep,
                    warmup_s=args.warmup,
                    measure_s=args.measure,
                    pin_core=CLIENT_CORE,
                )
                result = run_point(spec, spec.warmup_s + spec.measure_s + 90)
                if result is not None:
                    results.append(result)
                    print(progress(result, args.reps), flush=True)
    return results


def _fmt_ratio(r: tuple[float, float, float] | None) -> str:
    return "–" if r is None else f"{r[0]:.2f}× ({r[1]:.2f}–{r[2]:.2f})"


def _num(value: float, digits: int = 0) -> str:
    return "–" if value != value else f"{value:,.{digits}f}"


def stream_report(points: list[PointResult], upstream_kind: str) -> tuple[str, dict[str, Any]]:
    """The streaming table, the ratios against the reference, and the protocols' per-chunk CPU."""
    summaries = summarize(points)
    configs = [c for c in STREAM_CONFIGS if any(k[0] == c for k in summaries)]
    configs += sorted({k[0] for k in summaries} - set(configs))
    cs = sorted({p.concurrency for p in points})
    source = (
        f"nginx, fixed {STREAM_DELTAS}-delta SSE bodies"
        if upstream_kind == "nginx"
        else f"the simulator, {STREAM_DELTAS} deltas per answer, no pacing"
    )
    md = [f"\n## Streaming ({source})\n"]
    md.append(
        "Medians over repetitions, (min–max). *TTFC* = time from the request to its first "
        "text delta. CPU per chunk = the client process's CPU over the window ÷ the deltas "
        "received in it.\n"
    )
    md.append(
        "| client | C | streams/s (min–max) | chunks/s | TTFC p50 ms | TTFC p99 ms "
        "| stream p99 ms | CPU µs/stream | CPU µs/chunk (min–max) | upstream CPU % | errors |"
    )
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    data: dict[str, Any] = {"summaries": {}, "ratios": {}}
    for config in configs:
        keys = sorted(k for k in summaries if k[0] == config)
        for i, key in enumerate(keys):
            s = summaries[key]
            lo, hi = s.span(lambda r: r.rps)
            clo, chi = s.span(cpu_per_chunk)
            row = {
                "streams_per_s": s.median(lambda r: r.rps),
                "chunks_per_s": s.median(lambda r: r.extra.get("chunks_per_s", 0.0)),
                "ttfc_p50_ms": s.median(_ttfc("p50")),
                "ttfc_p99_ms": s.median(_ttfc("p99")),
                "p99_ms": s.median(lambda r: r.p99_ms),
                "cpu_us_per_stream": s.median(lambda r: r.cpu_us_per_req),
                "cpu_us_per_chunk": s.median(cpu_per_chunk),
                "upstream_cpu_pct": s.median(lambda r: r.upstream_cpu_pct),
            }
            data["summaries"][f"{config}@{key[1]}"] = row
            md.append(
                f"| {LABELS.get(config, config) if i == 0 else ''} | {key[1]} "
                f"| {_num(row['streams_per_s'])} ({_num(lo)}–{_num(hi)}) "
                f"| {_num(row['chunks_per_s'])} "
                f"| {_num(row['ttfc_p50_ms'], 2)} | {_num(row['ttfc_p99_ms'], 2)} "
                f"| {_num(row['p99_ms'], 1)} "
                f"| {_num(row['cpu_us_per_stream'])} "
                f"| {_num(row['cpu_us_per_chunk'], 1)} ({_num(clo, 1)}–{_num(chi, 1)}) "
                f"| {_num(row['upstream_cpu_pct'])} | {s.errors} |"
            )
    metrics: list[tuple[str, Callable[[PointResult], float]]] = [
        ("streams/s", lambda r: r.rps),
        ("CPU/chunk", cpu_per_chunk),
        ("TTFC p50", _ttfc("p50")),
        ("TTFC p99", _ttfc("p99")),
    ]
    rows: list[tuple[str, str, str, Callable[[PointResult], float]]] = []
    present = {k[0] for k in summaries}
    if REFERENCE in present:
        for subject in configs:
            if subject != REFERENCE:
                rows += [(subject, REFERENCE, name, m) for name, m in metrics]
    if "llmlb-stream-3" in present:
        for subject in ("llmlb-stream-3-anthropic", "llmlb-stream-3-gemini"):
            if subject in present:
                rows.append((subject, "llmlb-stream-3", "CPU/chunk", cpu_per_chunk))
    if rows:
        md.append("\n### Ratios (paired within each repetition; median (min–max))\n")
        md.append("| subject | vs | metric | " + " | ".join(f"C={c}" for c in cs) + " |")
        md.append("|---|---|---|" + "---:|" * len(cs))
        for subject, ref, name, metric in rows:
            rat = ratios(points, subject, ref, metric)
            data["ratios"][f"{subject}/{ref}/{name}"] = rat
            md.append(
                f"| {subject} | {ref} | {name} | "
                + " | ".join(_fmt_ratio(rat.get(c)) for c in cs)
                + " |"
            )
    return "\n".join(md) + "\n", data


def stream_plot(summaries: dict[tuple[str, int], Summary], path: str, title: str) -> None:
    """Streams/s, TTFC p99 and CPU per chunk against C, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, str, Callable[[PointResult], float]]] = [
        ("Throughput", "streams/s (median, min–max)", lambda r: r.rps),
        ("Time to first chunk", "TTFC p99, ms", _ttfc("p99")),
        ("CPU per chunk", "CPU µs per chunk", cpu_per_chunk),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 6))
    configs = [c for c in STREAM_CONFIGS if any(k[0] == c for k in summaries)]
    for config in configs:
        keys = sorted(k for k in summaries if k[0] == config)
        cs = [k[1] for k in keys]
        style = "--s" if config == REFERENCE else "-o"
        for ax, (_, _, metric) in zip(axes, panels, strict=True):
            med = [summaries[k].median(metric) for k in keys]
            spans = [summaries[k].span(metric) for k in keys]
            err = [
                [m - lo for m, (lo, _) in zip(med, spans, strict=True)],
                [hi - m for m, (_, hi) in zip(med, spans, strict=True)],
            ]
            label = LABELS.get(config, config)
            ax.errorbar(cs, med, yerr=err, fmt=style, capsize=3, label=label, markersize=4)
    ticks = sorted({c for _, c in summaries})
    for ax, (name, ylabel, _) in zip(axes, panels, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.set_xlabel("streams in flight (C)")
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
