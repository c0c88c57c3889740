"""Progress reporting for long CLI runs. Strictly private.

On a terminal: a rich progress bar. Not on a terminal (CI logs, ``> file``, a
harness capturing stderr): one plain line every few seconds, so logs stay
readable and small. Both are driven by a trio task, never a thread, and both
write to stderr so stdout stays for results.

What the line says must stay true to the end of a run: the ETA comes from the
recent completion rate (a run that slows down does not keep promising the
early speed), and once everything left is already in flight there is no rate
to extrapolate, so the line says what it is waiting on instead of an ETA.
"""

from __future__ import annotations

import sys
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TextIO

import trio

from .._groups import collapse_group
from .logs import flush_repeats, routed
from .text import duration, plural

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["Progress", "open_progress"]

#: Seconds of history behind the rate and the ETA.
RATE_WINDOW = 30.0


class Progress:
    """Counters the command updates; the reporter task reads them.

    ``observe``, if given, returns ``(in_flight, retries)`` of the balancer now.
    """

    def __init__(
        self,
        total: int | None,
        label: str,
        *,
        observe: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.observe = observe
        self.done = 0
        self.errors = 0
        self.started = trio.current_time()
        # (time, done) samples taken each time the line is drawn, RATE_WINDOW long.
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])

    def advance(self, *, error: bool = False) -> None:
        self.done += 1
        self.errors += error

    def rate(self) -> float:
        """Completions per second over the last `RATE_WINDOW` seconds (records a sample)."""
        now = trio.current_time()
        samples = self._samples
        samples.append((now, self.done))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()
        then, done_then = samples[0]
        return (self.done - done_then) / (now - then) if now > then else 0.0

    def fields(self, *, final: bool = False) -> tuple[str, str, str]:
        """``(rate, tail, counts)``: ``"45.2"``, ``"eta 2m10s"`` or ``"waiting on 7 in
        flight"`` (nothing on the ``final`` line), and ``"64 in flight, 3 retries, 1 error"``."""
        rate = self.rate()
        in_flight, retries = self.observe() if self.observe is not None else (None, None)
        tail = ""
        if self.total and not final:
            left = max(self.total - self.done, 0)
            if left and in_flight is not None and left <= in_flight:
                tail = f"waiting on {in_flight} in flight"
            elif left and rate > 0:
                tail = f"eta {duration(left / rate)}"
            elif left:
                tail = "eta -"
        counts = []
        if in_flight is not None and retries is not None:
            counts += [f"{in_flight} in flight", plural(retries, "retry", "retries")]
        counts.append(plural(self.errors, "error"))
        return f"{rate:.1f}", tail, ", ".join(counts)

    def line(self, *, final: bool = False) -> str:
        """``batch: 120/200 (60%) 45.2/s, eta 2s, 64 in flight, 3 retries, 1 error``."""
        rate, tail, counts = self.fields(final=final)
        if self.total:
            share = f"{self.done}/{self.total} ({100 * self.done / self.total:.0f}%)"
        else:
            share = str(self.done)
        return f"{self.label}: {share} {rate}/s" + (f", {tail}" if tail else "") + f", {counts}"


@asynccontextmanager
async def open_progress(
    total: int | None,
    label: str,
    *,
    stream: TextIO | None = None,
    interval: float = 2.0,
    enabled: bool = True,
    observe: Callable[[], tuple[int, int]] | None = None,
) -> AsyncIterator[Progress]:
    """Report ``Progress`` while the block runs; a last line (or full bar) at the end."""
    out = stream or sys.stderr
    progress = Progress(total, label, observe=observe)
    if not enabled:
        yield progress
        return
    if out.isatty():
        async with _rich_bar(progress, out):
            yield progress
        return
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_plain_lines, progress, out, interval)
            try:
                yield progress
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise collapse_group(group) from None
    flush_repeats()
    print(progress.line(final=True), file=out, flush=True)


async def _plain_lines(progress: Progress, out: TextIO, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        print(progress.line(), file=out, flush=True)


@asynccontextmanager
async def _rich_bar(progress: Progress, out: TextIO) -> AsyncIterator[None]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as RichProgress

    console = Console(file=out)
    bar = RichProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}/s"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[tail]}"),
        TextColumn("{task.fields[counts]}"),
        console=console,
        auto_refresh=False,  # refreshed by the trio task below, not by a thread
        transient=False,
    )
    task = bar.add_task(progress.label, total=progress.total, rate="0.0", tail="", counts="")
    last_sample = float("-inf")

    def refresh(*, final: bool = False) -> None:
        nonlocal last_sample
        now = trio.current_time()
        if final or now - last_sample >= 1.0:
            last_sample = now  # one rate sample a second is plenty
            rate, tail, counts = progress.fields(final=final)
            bar.update(task, rate=rate, tail=tail, counts=counts)
        bar.update(task, completed=progress.done)
        bar.refresh()

    async def loop() -> None:
        while True:
            refresh()
            await trio.sleep(0.1)

    def above_the_bar(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    with bar, routed(above_the_bar):
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(loop)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise collapse_group(group) from None
        flush_repeats()
        refresh(final=True)
