"""Turning interleaved measurements into medians, ratios, markdown tables and a plot."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._results import PointResult

__all__ = [
    "LABELS",
    "Summary",
    "added_cpu",
    "cpu_flatness",
    "markdown_table",
    "plot",
    "ratios",
    "summarize",
]

LABELS = {
    "httpx": "httpx.AsyncClient on trio (naive baseline)",
    "aiohttp": "aiohttp on asyncio (reference)",
    "litellm": "LiteLLM Router, 2 deployments",
    "llmlb-1": "llmlb_actors, 1 provider",
    "llmlb-3": "llmlb_actors, 3 providers round-robin",
    "llmlb-transport": "llmlb TrioTransport alone",
    "llmlb-provider": "llmlb HTTPProvider alone (adapter + transport)",
    "llmlb-1-httpx": "llmlb_actors, 1 provider, httpx transport",
    "llmlb-stream": "llmlb_actors stream, 1 provider",
    "llmlb-stream-3": "llmlb_actors stream, 3 providers round-robin (OpenAI SSE)",
    "llmlb-stream-3-anthropic": "llmlb_actors stream, 3 providers (Anthropic SSE)",
    "llmlb-stream-3-gemini": "llmlb_actors stream, 3 providers (Gemini SSE)",
    "llmlb-stream-provider": "llmlb HTTPProvider.stream alone (OpenAI SSE)",
    "aiohttp-stream": "aiohttp on asyncio, raw SSE (reference)",
    "llmlb-aio": "llmlb_actors.aio on asyncio (trio thread), 1 provider",
    "llmlb-aio-guest": "llmlb_actors.aio, runner='guest', 1 provider",
    "llmlb-sync": "llmlb_actors.sync from C threads, 1 provider",
    "litellm-sync": "LiteLLM Router.completion from C threads",
}


class Summary:
    """Median and range of each metric for one (configuration, concurrency)."""

    def __init__(self, config: str, concurrency: int, results: list[PointResult]) -> None:
        self.config = config
        self.concurrency = concurrency
        self.results = results

    def values(self, metric: Callable[[PointResult], float]) -> list[float]:
        return [metric(r) for r in self.results if r.requests > 0]

    def median(self, metric: Callable[[PointResult], float]) -> float:
        values = self.values(metric)
        return statistics.median(values) if values else float("nan")

    def span(self, metric: Callable[[PointResult], float]) -> tuple[float, float]:
        values = self.values(metric)
        return (min(values), max(values)) if values else (float("nan"), float("nan"))

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results)


def summarize(results: Iterable[PointResult]) -> dict[tuple[str, int], Summary]:
    groups: dict[tuple[str, int], list[PointResult]] = defaultdict(list)
    for r in results:
        groups[(r.config, r.concurrency)].append(r)
    return {key: Summary(key[0], key[1], rs) for key, rs in groups.items()}


def _num(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    if value != value:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _with_span(
    s: Summary, metric: Callable[[PointResult], float], fmt: Callable[[float], str]
) -> str:
    lo, hi = s.span(metric)
    if len(s.values(metric)) < 2:
        return fmt(s.median(metric))
    return f"{fmt(s.median(metric))} ({fmt(lo)}–{fmt(hi)})"


def markdown_table(summaries: dict[tuple[str, int], Summary], order: list[str]) -> str:
    """One row per (configuration, concurrency): medians, with (min-max) over repetitions."""
    lines = [
        "| client | C | req/s (min–max) | p50 ms | p99 ms | CPU µs/req (min–max) "
        "| peak RSS MiB | achieved C | upstream CPU % | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in order:
        keys = sorted(k for k in summaries if k[0] == config)
        for i, key in enumerate(keys):
            s = summaries[key]
            label = LABELS.get(config, config) if i == 0 else ""
            lines.append(
                f"| {label} | {key[1]} "
                f"| {_with_span(s, lambda r: r.rps, _num)} "
                f"| {_ms(s.median(lambda r: r.p50_ms))} "
                f"| {_ms(s.median(lambda r: r.p99_ms))} "
                f"| {_with_span(s, lambda r: r.cpu_us_per_req, _num)} "
                f"| {_num(s.median(lambda r: r.peak_rss_mib))} "
                f"| {_num(s.median(lambda r: r.littles_l), 0 if key[1] >= 10 else 2)} "
                f"| {_num(s.median(lambda r: r.upstream_cpu_pct))} "
                f"| {s.errors} |"
            )
    return "\n".join(lines)


def _per_rep(results: Iterable[PointResult]) -> dict[tuple[str, int, int], PointResult]:
    return {(r.config, r.concurrency, r.rep): r for r in results if r.requests > 0}


def ratios(
    results: list[PointResult],
    subject: str,
    reference: str,
    metric: Callable[[PointResult], float],
) -> dict[int, tuple[float, float, float]]:
    """``{C: (median, min, max)}`` of subject/reference, paired within each repetition."""
    by = _per_rep(results)
    out: dict[int, list[float]] = defaultdict(list)
    for (config, c, rep), r in by.items():
        if config != subject:
            continue
        ref = by.get((reference, c, rep))
        if ref is not None and metric(ref) > 0:
            out[c].append(metric(r) / metric(ref))
    return {c: (statistics.median(v), min(v), max(v)) for c, v in sorted(out.items()) if v}


def added_cpu(
    results: list[PointResult], subject: str, base: str
) -> dict[int, tuple[float, float, float]]:
    """``{C: (median, min, max)}`` of CPU µs/req of subject minus base, paired per repetition."""
    by = _per_rep(results)
    out: dict[int, list[float]] = defaultdict(list)
    for (config, c, rep), r in by.items():
        if config != subject:
            continue
        ref = by.get((base, c, rep))
        if ref is not None:
            out[c].append(r.cpu_us_per_req - ref.cpu_us_per_req)
    return {c: (statistics.median(v), min(v), max(v)) for c, v in sorted(out.items()) if v}


def cpu_flatness(summaries: dict[tuple[str, int], Summary], config: str) -> dict[str, Any]:
    """Median CPU per request at each C, relative to C=1, and max/min over all C."""
    cpu = {
        c: s.median(lambda r: r.cpu_us_per_req)
        for (name, c), s in sorted(summaries.items())
        if name == config
    }
    cpu = {c: v for c, v in cpu.items() if v == v}
    if not cpu:
        return {}
    first = cpu[min(cpu)]
    return {
        "cpu_us": cpu,
        "relative_to_lowest_c": {c: v / first for c, v in cpu.items()},
        "max_over_min": max(cpu.values()) / min(cpu.values()),
    }


def plot(
    summaries: dict[tuple[str, int], Summary], order: list[str], path: str, title: str
) -> None:
    """Throughput and p99 against concurrency, one line per configuration (min-max bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(13, 6))
    for config in order:
        keys = sorted(k for k in summaries if k[0] == config)
        keys = [k for k in keys if summaries[k].values(lambda r: r.rps)]
        if not keys:
            continue
        cs = [k[1] for k in keys]
        label = LABELS.get(config, config)
        style = "-o" if config in ("llmlb-1", "llmlb-3", "llmlb-1-httpx") else "--s"
        for ax, metric in ((ax_rps, lambda r: r.rps), (ax_p99, lambda r: r.p99_ms)):
            med = [summaries[k].median(metric) for k in keys]
            spans = [summaries[k].span(metric) for k in keys]
            err = [
                [m - lo for m, (lo, _) in zip(med, spans, strict=True)],
                [hi - m for m, (_, hi) in zip(med, spans, strict=True)],
            ]
            ax.errorbar(cs, med, yerr=err, fmt=style, capsize=3, label=label, markersize=4)
    ticks = sorted({c for _, c in summaries})
    for ax in (ax_rps, ax_p99):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.set_xlabel("requests in flight (C)")
        ax.grid(True, which="both", alpha=0.3)
    ax_rps.set_yscale("log")
    ax_rps.set_ylabel("requests/s (median, min–max)")
    ax_rps.set_title("Throughput")
    ax_p99.set_yscale("log")
    ax_p99.set_ylabel("p99 latency, ms")
    ax_p99.set_title("p99 latency")
    handles, labels = ax_rps.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
