"""The library's log records as the ``llmlb`` command shows them. Strictly private.

The library only logs (``logging.getLogger("llmlb_actors")``); an application
routes those records where it wants. The command is such an application: it
prints each distinct warning once, counts the repeats (a wrong key fails every
request the same way: 2,000 identical lines would bury the progress display),
and prints the counts when the command ends. While a rich progress bar is
drawn, lines go through its console so they appear above the bar, not
through it.
"""

from __future__ import annotations

import logging
import re
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from .text import plural

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["cli_logging", "flush_repeats", "routed"]

_LOGGER = "llmlb_actors"
# Numbers vary between otherwise identical warnings ("timed out after 30.0012s").
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


class _CollapsingHandler(logging.Handler):
    """Prints the first record of each kind; counts the rest (see `summary`)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.WARNING)
        self._stream = stream
        self.writer: Callable[[str], None] = self._print
        self._first: dict[tuple[int, str], str] = {}
        self._repeats: dict[tuple[int, str], int] = {}

    def _print(self, line: str) -> None:
        print(line, file=self._stream, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record must not break the command
            self.handleError(record)
            return
        key = (record.levelno, _NUMBERS.sub("#", text))
        if key in self._first:
            self._repeats[key] = self._repeats.get(key, 0) + 1
            return
        self._first[key] = text
        self.writer(f"{_label(record.levelno)}: {text}")

    def summary(self) -> None:
        for key, count in self._repeats.items():
            self.writer(
                f"{_label(key[0])}: repeated {plural(count, 'more time')}: {self._first[key]}"
            )
        self._repeats.clear()


def _label(level: int) -> str:
    return logging.getLevelName(level).lower()


_active: _CollapsingHandler | None = None


@contextmanager
def cli_logging(stream: TextIO | None = None) -> Iterator[None]:
    """Show the library's warnings and errors on ``stream`` (stderr), collapsed."""
    global _active
    logger = logging.getLogger(_LOGGER)
    handler = _CollapsingHandler(stream or sys.stderr)
    saved = (logger.level, logger.propagate, _active)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False  # the command is the application: one place prints
    _active = handler
    try:
        yield
    finally:
        handler.summary()
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        _active = saved[2]


def flush_repeats() -> None:
    """Print the repeat counts now (a command's last lines should be its own)."""
    if _active is not None:
        _active.summary()


@contextmanager
def routed(writer: Callable[[str], None]) -> Iterator[None]:
    """Send log lines through ``writer`` for the block (a progress bar's console)."""
    handler = _active
    if handler is None:
        yield
        return
    saved = handler.writer
    handler.writer = writer
    try:
        yield
    finally:
        handler.writer = saved
