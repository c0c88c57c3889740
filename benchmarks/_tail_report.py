"""Tables, targets and the latency-CDF plot of the tail-latency scenarios.

Figures per (scenario, configuration) are medians over repetitions. Latency is
what the caller saw (retries, backoff and hedges included). Traffic shares and
upstream attempts are counted at the upstream, so an attempt the client
cancelled (a losing hedge) still counts.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from ._results import percentile
from ._tail_scenarios import LITELLM, SCENARIOS, scaled

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._tail_client import TailResult

__all__ = ["Metrics", "metrics", "tail_markdown", "tail_plot"]

LABELS = {
    "round-robin": "round-robin",
    "failover": "failover",
    "weighted": "weighted",
    "least-busy": "least-busy",
    "latency": "latency (P2C peak-EWMA)",
    "latency+hedge": "latency + hedging",
    "round-robin+hedge": "round-robin + hedging",
    "healthy-2": "only the 2 healthy (round-robin)",
    "no-retry-budget": "round-robin, no retry budget (before)",
    LITELLM: "LiteLLM latency-based-routing",
}

Metrics = dict[str, float]


def _arrivals(result: TailResult, name: str | None, start: float, end: float) -> float:
    """Requests the upstream received in [start, end) seconds (one provider, or all)."""
    times: list[float] = result.series["t"]
    names = [name] if name is not None else list(result.series["requests"])

    def at(t: float) -> float:
        i = bisect_left(times, t)
        total = 0.0
        for n in names:
            counts = result.series["requests"][n]
            if not times:
                continue
            if i >= len(times):
                total += counts[-1]
            elif i == 0:
                total += counts[0] * (t / times[0] if times[0] > 0 else 1.0)
            else:
                t0, t1 = times[i - 1], times[i]
                c0, c1 = counts[i - 1], counts[i]
                total += c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        return total

    return at(end) - at(start)


def _shares(
    result: TailResult, focus: str, end: float, width: float = 1.0
) -> list[tuple[float, float]]:
    """(bin start, focus share of upstream arrivals) per ``width``-second bin."""
    out = []
    t = 0.0
    while t + width <= end + 1e-9:
        total = _arrivals(result, None, t, t + width)
        mine = _arrivals(result, focus, t, t + width)
        out.append((t, mine / total if total else 0.0))
        t += width
    return out


def _end(result: TailResult) -> float:
    """Where share figures stop: the end of the load (not the drain after it)."""
    scenario = scaled(SCENARIOS[result.scenario], result.factor)
    last = max((r[1] for r in result.records), default=0.0)
    return min(last, scenario.duration) if scenario.duration else last


def metrics(result: TailResult) -> Metrics:
    """The figures of one run."""
    scenario = scaled(SCENARIOS[result.scenario], result.factor)
    records = result.records
    latencies = sorted((r[1] - r[0]) * 1000.0 for r in records if r[2])
    failed = sum(1 for r in records if not r[2])
    end = _end(result)
    upstream = sum(c[-1] for c in result.series["requests"].values() if c)
    m: Metrics = {
        "requests": float(len(records)),
        "failed": float(failed + result.unfinished),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "p999": percentile(latencies, 99.9),
        "upstream": float(upstream),
        "extra_pct": 100.0 * (upstream - len(records)) / len(records) if records else 0.0,
        "cpu_ms_per_req": 1000.0 * result.cpu_s / len(records) if records else 0.0,
    }
    focus = scenario.focus
    f = result.factor
    if focus is not None and focus in result.series["requests"]:
        m["focus_share_pct"] = 100.0 * _arrivals(result, focus, 0.0, end) / max(1.0, upstream)
    if result.scenario == "brownout" and focus is not None:
        shares = _shares(result, focus, end, width=max(0.25, f))
        below = next((t + max(0.25, f) for t, s in shares if s < 0.10), float("nan"))
        m["share_below_10pct_at_s"] = below / f
        late = [s for t, s in shares if t >= 10.0 * f]
        m["late_share_pct"] = 100.0 * statistics.fmean(late) if late else float("nan")
    if result.scenario == "shift" and focus is not None:
        shift = scenario.timeline[0].at
        width = 2.0 * f
        shares = _shares(result, focus, end, width=width / 2)
        # A 2 s sliding window, starting after the shift.
        rolling = [
            (shares[i][0], (shares[i][1] + shares[i + 1][1]) / 2) for i in range(len(shares) - 1)
        ]
        back = next((t + width for t, s in rolling if t >= shift and s >= 0.25), float("nan"))
        m["share_25pct_after_s"] = (back - shift) / f
        m["before_share_pct"] = (
            100.0
            * _arrivals(result, focus, 0.0, shift)
            / max(1.0, _arrivals(result, None, 0.0, shift))
        )
        last = end - 10.0 * f
        m["last_10s_share_pct"] = (
            100.0
            * _arrivals(result, focus, last, end)
            / max(1.0, _arrivals(result, None, last, end))
        )
    if result.scenario == "outage":
        # From the moment the upstream confirmed each switch (all providers at once).
        down, up = scenario.timeline[0].at, scenario.timeline[-1].at
        if len(result.switches) >= 2:
            down, up = result.switches[0][1], result.switches[-1][1]
        made = sum(1 for r in records if down <= r[0] < up)
        attempts = _arrivals(result, None, down, up)
        m["outage_requests"] = float(made)
        m["outage_attempts"] = attempts
        m["outage_ratio"] = attempts / made if made else float("nan")
        after = [r for r in records if r[0] >= up]
        m["after_requests"] = float(len(after))
        m["after_failed"] = float(sum(1 for r in after if not r[2]))
        m["started"] = float(len(records) + result.unfinished)
    return m


def _median(results: Sequence[TailResult], key: str) -> float:
    values = [metrics(r).get(key, float("nan")) for r in results]
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def _group(results: Sequence[TailResult]) -> dict[tuple[str, str], list[TailResult]]:
    groups: dict[tuple[str, str], list[TailResult]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.config), []).append(r)
    return groups


def _fmt(value: float, digits: int = 0) -> str:
    if value != value:
        return "–"
    return f"{value:,.{digits}f}"


def _table(
    scenario: str,
    groups: dict[tuple[str, str], list[TailResult]],
    columns: list[tuple[str, str, int]],
) -> list[str]:
    configs = [c for c in SCENARIOS[scenario].configs if (scenario, c) in groups]
    head = "| configuration | " + " | ".join(title for title, _, _ in columns) + " |"
    lines = [head, "|---|" + "---:|" * len(columns)]
    for config in configs:
        runs = groups[(scenario, config)]
        cells = [_fmt(_median(runs, key), digits) for _, key, digits in columns]
        lines.append(f"| {LABELS.get(config, config)} | " + " | ".join(cells) + " |")
    return lines


def _check(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def _targets(groups: dict[tuple[str, str], list[TailResult]], factor: float) -> list[str]:
    def med(scenario: str, config: str, key: str) -> float:
        runs = groups.get((scenario, config))
        return _median(runs, key) if runs else float("nan")

    def known(*values: float) -> bool:
        return all(v == v for v in values)

    rows = ["| scenario | target | result | |", "|---|---|---|---|"]
    hedged, rr, two = (
        med("degraded", c, "p99") for c in ("latency+hedge", "round-robin", "healthy-2")
    )
    extra = med("degraded", "latency+hedge", "extra_pct")
    if known(hedged, rr, two, extra):
        rows.append(
            f"| degraded | latency + hedging p99 ≤ 1/3 of round-robin's | {hedged:.0f} vs "
            f"{rr:.0f} ms ({hedged / rr:.2f}×) | {_check(hedged <= rr / 3)} |"
        )
        rows.append(
            f"| degraded | … and ≤ 2× the p99 of the 2 healthy alone | {hedged:.0f} vs "
            f"{two:.0f} ms ({hedged / two:.2f}×) | {_check(hedged <= 2 * two)} |"
        )
        rows.append(
            f"| degraded | … with ≤ 5 % extra upstream requests | {extra:+.1f} % | "
            f"{_check(extra <= 5.0)} |"
        )
    for config in ("latency", "latency+hedge"):
        failed = med("brownout", config, "failed")
        below = med("brownout", config, "share_below_10pct_at_s")
        if known(failed):
            rows.append(
                f"| brownout ({LABELS[config]}) | 0 errors reach callers; the flaky provider's "
                f"share < 10 % within 10 s | {failed:.0f} errors; below 10 % after "
                f"{_fmt(below, 1)} s | {_check(failed == 0 and below <= 10.0)} |"
            )
        ratio = med("outage", config, "outage_ratio")
        after = med("outage", config, "after_failed")
        if known(ratio, after):
            rows.append(
                f"| outage ({LABELS[config]}) | upstream attempts ≤ 1.3× the requests made in "
                f"the outage; every request after recovery succeeds | {ratio:.2f}×; "
                f"{after:.0f} failed after | {_check(ratio <= 1.3 and after == 0)} |"
            )
        back = med("shift", config, "share_25pct_after_s")
        if known(med("shift", config, "requests")):
            rows.append(
                f"| shift ({LABELS[config]}) | the recovered provider's share ≥ 25 % within 30 s "
                f"| after {_fmt(back, 1)} s | {_check(back <= 30.0)} |"
            )
    if factor != 1.0:
        rows.append(
            f"\nScaled run (×{factor:g} in time and size): times are given in the full "
            "scenario's seconds; targets are for full-size runs."
        )
    return rows


def tail_markdown(results: Sequence[TailResult], *, factor: float, reps: int) -> str:
    groups = _group(results)
    out = [
        "## Tail latency and failure containment (simulator)",
        "",
        f"Medians over {reps} repetition(s); latency is what callers saw (ms); upstream "
        "requests are counted at the simulated providers (cancelled hedges included).",
        "",
        "### Targets",
        "",
        *_targets(groups, factor),
    ]
    common = [
        ("requests", "requests", 0),
        ("failed", "failed", 0),
        ("p50 ms", "p50", 1),
        ("p99 ms", "p99", 1),
        ("p99.9 ms", "p999", 1),
        ("extra upstream %", "extra_pct", 1),
        ("CPU ms/req", "cpu_ms_per_req", 2),
    ]
    sections: list[tuple[str, list[tuple[str, str, int]]]] = [
        ("degraded", [*common, ("slow's share %", "focus_share_pct", 1)]),
        (
            "brownout",
            [
                *common[:4],
                ("extra upstream %", "extra_pct", 1),
                ("flaky's share %", "focus_share_pct", 1),
                ("< 10 % after s", "share_below_10pct_at_s", 1),
                ("share after 10 s %", "late_share_pct", 1),
            ],
        ),
        (
            "outage",
            [
                ("started", "started", 0),
                ("failed", "failed", 0),
                ("made in outage", "outage_requests", 0),
                ("upstream attempts in outage", "outage_attempts", 0),
                ("ratio", "outage_ratio", 2),
                ("after recovery: requests", "after_requests", 0),
                ("failed", "after_failed", 0),
                ("p99 ms", "p99", 0),
            ],
        ),
        (
            "shift",
            [
                *common[:4],
                ("slow's share before %", "before_share_pct", 1),
                ("≥ 25 % after s", "share_25pct_after_s", 1),
                ("share, last 10 s %", "last_10s_share_pct", 1),
            ],
        ),
    ]
    for scenario, columns in sections:
        if not any(s == scenario for s, _ in groups):
            continue
        out += ["", f"### {scenario}: {SCENARIOS[scenario].title}", ""]
        out += _table(scenario, groups, columns)
    firsts = {(r.scenario, r.config): r.first_error for r in results if r.first_error is not None}
    if firsts:
        out += ["", "First error per run with failures:", ""]
        out += [f"- {s} / {c}: `{e}`" for (s, c), e in sorted(firsts.items())]
    return "\n".join(out) + "\n"


def tail_plot(results: Sequence[TailResult], path: str) -> bool:
    """The latency CDF of *degraded* (whole and tail), shares over time, the outage."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = _group(results)
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    styles = _styles()

    def lat(runs: list[TailResult]) -> list[float]:
        return sorted((r[1] - r[0]) * 1000.0 for run in runs for r in run.records if r[2])

    for ax, low in ((axes[0][0], 0.0), (axes[0][1], 0.9)):
        for config in SCENARIOS["degraded"].configs:
            runs = groups.get(("degraded", config))
            if not runs:
                continue
            values = lat(runs)
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.plot(values, ys, label=LABELS[config], **styles(config))
        ax.set_xscale("log")
        ax.set_ylim(low, 1.0005)
        ax.set_xlabel("latency seen by the caller, ms (log)")
        ax.set_ylabel("fraction of requests")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_title("degraded: latency CDF")
    axes[0][1].set_title("degraded: the tail (≥ 90th percentile)")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7, loc="lower right")

    def share_panel(ax: Any, scenario: str, title: str, mark: float | None) -> None:
        for config in SCENARIOS[scenario].configs:
            runs = groups.get((scenario, config))
            if not runs:
                continue
            run = runs[0]
            focus = SCENARIOS[scenario].focus
            assert focus is not None
            shares = _shares(run, focus, _end(run), width=max(0.25, run.factor))
            ax.plot(
                [(t + 0.5 * max(0.25, run.factor)) / run.factor for t, _ in shares],
                [100 * s for _, s in shares],
                label=LABELS[config],
                **styles(config),
            )
        if mark is not None:
            ax.axhline(mark, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("time, s (full-scale scenario)")
        ax.set_ylabel("its share of upstream requests, %")
        ax.grid(True, alpha=0.3)

    share_panel(axes[0][2], "brownout", "brownout: the flaky provider's share", 10.0)
    share_panel(axes[1][0], "shift", "shift: the recovering provider's share", 25.0)
    axes[1][0].axvline(10.0, color="grey", linestyle="--", linewidth=1)

    ax = axes[1][1]
    for config in SCENARIOS["outage"].configs:
        runs = groups.get(("outage", config))
        if not runs:
            continue
        run = runs[0]
        end = max((r[1] for r in run.records), default=0.0)
        width = max(0.25, 0.5 * run.factor)
        xs, ys = [], []
        t = 0.0
        while t + width <= end:
            xs.append((t + width / 2) / run.factor)
            ys.append(_arrivals(run, None, t, t + width) / width * run.factor)
            t += width
        ax.plot(xs, ys, label=LABELS[config], **styles(config))
    ax.axvspan(10.0, 20.0, color="red", alpha=0.08)
    ax.set_title("outage: attempts reaching the providers")
    ax.set_xlabel("time, s (the outage shaded)")
    ax.set_ylabel("upstream requests / s")
    ax.grid(True, alpha=0.3)

    ax = axes[1][2]
    for config in SCENARIOS["outage"].configs:
        runs = groups.get(("outage", config))
        if not runs:
            continue
        run = runs[0]
        width = max(0.25, 0.5 * run.factor)
        by_bin: dict[int, list[bool]] = {}
        for start, _, ok, _, _ in run.records:
            by_bin.setdefault(int(start / width), []).append(ok)
        keys = sorted(by_bin)
        ax.plot(
            [(k + 0.5) * width / run.factor for k in keys],
            [100 * sum(by_bin[k]) / len(by_bin[k]) for k in keys],
            label=LABELS[config],
            **styles(config),
        )
    ax.axvspan(10.0, 20.0, color="red", alpha=0.08)
    ax.set_title("outage: requests that succeeded, by start time")
    ax.set_xlabel("time the request started, s")
    ax.set_ylabel("% succeeded")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _styles() -> Callable[[str], dict[str, Any]]:
    palette = {
        "round-robin": "#1f77b4",
        "failover": "#8c564b",
        "weighted": "#17becf",
        "least-busy": "#ff7f0e",
        "latency": "#2ca02c",
        "latency+hedge": "#d62728",
        "round-robin+hedge": "#9467bd",
        "healthy-2": "#7f7f7f",
        "no-retry-budget": "#bcbd22",
        LITELLM: "#e377c2",
    }

    def style(config: str) -> dict[str, Any]:
        out: dict[str, Any] = {"color": palette.get(config, "black"), "linewidth": 1.4}
        if config == "healthy-2":
            out["linestyle"] = "--"
        if config == LITELLM:
            out["linestyle"] = ":"
        return out

    return style
