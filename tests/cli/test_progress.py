"""Progress lines tell the truth: ETA from the recent rate, the tail shown as in-flight work,
retries and errors counted. On virtual time."""

from __future__ import annotations

import io
import logging

import trio
import trio.testing

from llmlb_actors._cli.logs import cli_logging
from llmlb_actors._cli.progress import Progress, open_progress


class Counts:
    def __init__(self) -> None:
        self.in_flight = 0
        self.retries = 0

    def __call__(self) -> tuple[int, int]:
        return self.in_flight, self.retries


async def test_the_tail_shows_what_is_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    counts = Counts()
    progress = Progress(2793, "batch", observe=counts)
    counts.in_flight = 64
    for _ in range(2786):
        progress.advance()
        await trio.sleep(0.01)
    counts.in_flight = 7
    for _ in range(30):  # 30 s with the last 7 hanging
        await trio.sleep(1)
        line = progress.line()
        assert "eta" not in line
        assert "waiting on 7 in flight" in line


async def test_eta_comes_from_the_recent_rate(autojump_clock: trio.testing.MockClock) -> None:
    counts = Counts()
    progress = Progress(1000, "batch", observe=counts)
    counts.in_flight = 10
    for _ in range(500):  # fast at first: 100/s
        progress.advance()
        await trio.sleep(0.01)
    for _ in range(60):  # then 1/s for a minute
        progress.advance()
        await trio.sleep(1)
        progress.line()  # the reporter samples as it draws
    # 440 left at ~1/s: minutes, not the ~40 s the average rate would promise.
    assert "eta 7m" in progress.line()


async def test_counts_in_flight_retries_and_errors(autojump_clock: trio.testing.MockClock) -> None:
    counts = Counts()
    progress = Progress(10, "bench", observe=counts)
    counts.in_flight, counts.retries = 3, 163
    progress.advance(error=True)
    progress.advance()
    await trio.sleep(1)
    line = progress.line()
    assert line.startswith("bench: 2/10 (20%)")
    assert "3 in flight" in line
    assert "163 retries" in line
    assert "1 error" in line
    assert "1 errors" not in line
    counts.retries = 1
    assert "1 retry," in progress.line()


async def test_plain_lines_and_collapsed_warnings(autojump_clock: trio.testing.MockClock) -> None:
    """Off a terminal: a line every interval; 500 identical warnings become one and a count."""
    out = io.StringIO()
    log = logging.getLogger("llmlb_actors")
    with cli_logging(out):
        async with open_progress(100, "batch", stream=out, interval=2.0) as progress:
            for _ in range(500):
                log.warning("provider %s left rotation: %s", "p1", "[p1] HTTP 401: bad key")
            log.warning("provider %s left rotation: %s", "p2", "[p2] HTTP 403: forbidden")
            for _ in range(100):
                progress.advance()
                await trio.sleep(0.05)
    lines = out.getvalue().splitlines()
    assert lines.count("warning: provider p1 left rotation: [p1] HTTP 401: bad key") == 1
    assert "warning: provider p2 left rotation: [p2] HTTP 403: forbidden" in lines
    repeated = "warning: repeated 499 more times: provider p1 left rotation: [p1] HTTP 401: bad key"
    assert repeated in lines
    assert sum("batch: " in line for line in lines) >= 2
    assert lines[-1].startswith("batch: 100/100 (100%)")
    assert len(lines) < 12
