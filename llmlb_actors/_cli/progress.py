"""Progress reporting for long CLI runs. Strictly private.

On a terminal: a rich progress bar with rate, ETA and the error count. Not on
a terminal (CI logs, ``> file``, a harness capturing stderr): one plain line
every few seconds, so logs stay readable and small. Both are driven by a trio
task, never a thread, and both write to stderr so stdout stays for results.
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TextIO

import trio

from .._groups import collapse_group

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Progress", "open_progress"]


class Progress:
    """Counters the command updates; the reporter task reads them."""

    def __init__(self, total: int | None, label: str) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.errors = 0
        self.started = trio.current_time()

    def advance(self, *, error: bool = False) -> None:
        self.done += 1
        self.errors += error

    def line(self) -> str:
        """``label: 120/200 (60%) 45.2/s, eta 2s, 3 errors``."""
        elapsed = max(trio.current_time() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            share = f"{self.done}/{self.total} ({100 * self.done / self.total:.0f}%)"
            left = max(self.total - self.done, 0)
            eta = f", eta {left / rate:.0f}s" if rate > 0 and left else ""
        else:
            share, eta = str(self.done), ""
        return f"{self.label}: {share} {rate:.1f}/s{eta}, {self.errors} errors"


@asynccontextmanager
async def open_progress(
    total: int | None,
    label: str,
    *,
    stream: TextIO | None = None,
    interval: float = 2.0,
    enabled: bool = True,
) -> AsyncIterator[Progress]:
    """Report ``Progress`` while the block runs; a last line (or full bar) at the end."""
    out = stream or sys.stderr
    progress = Progress(total, label)
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
    print(progress.line(), file=out, flush=True)


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
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    bar = RichProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("[red]{task.fields[errors]} errors"),
        console=Console(file=out),
        auto_refresh=False,  # refreshed by the trio task below, not by a thread
        transient=False,
    )
    task = bar.add_task(progress.label, total=progress.total, rate="0.0", errors=0)

    def refresh() -> None:
        elapsed = max(trio.current_time() - progress.started, 1e-9)
        bar.update(
            task,
            completed=progress.done,
            rate=f"{progress.done / elapsed:.1f}",
            errors=progress.errors,
        )
        bar.refresh()

    async def loop() -> None:
        while True:
            refresh()
            await trio.sleep(0.1)

    with bar:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(loop)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise collapse_group(group) from None
        refresh()
