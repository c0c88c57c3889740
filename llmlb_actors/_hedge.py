"""Hedged requests: the `Hedge` setting and the delay after which a copy is sent.

A hedge is a second copy of a request that has not answered after a delay, sent
to a different provider; the first success wins and the others are cancelled
(Dean & Barroso, *The Tail at Scale*, 2013). The delay is a fixed number of
seconds or a percentile of the recent successful latencies **across all
providers** for that kind of request (whole answers, or time to the first chunk
of a stream), so a slow provider cannot hide behind its own slow percentile.
"""

from __future__ import annotations

import math
import re
from collections import deque
from typing import Final

import msgspec

from ._errors import ConfigError
from ._stats import percentile

__all__ = ["MAX_EXTRA", "Hedge", "HedgeDelay", "hedge_quantile"]

#: At most this many copies beyond the first (gRPC's hedging policy allows 5 attempts).
MAX_EXTRA: Final = 4
_PERCENTILE = re.compile(r"^p([5-9][0-9])$")


def hedge_quantile(after: str | float) -> float | None:
    """``"p95"`` → 0.95; a number of seconds → None. Assumes a validated value."""
    if isinstance(after, str):
        match = _PERCENTILE.match(after)
        assert match is not None
        return int(match.group(1)) / 100.0
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Hedge(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Send a copy of a slow request to another provider (`BalancerConfig.hedge`).

    ==========  =======  ===========================================================
    field       default  meaning
    ==========  =======  ===========================================================
    after       "p95"    when to hedge: ``"p50"`` ... ``"p99"``, a percentile of recent
                         successful latencies across all providers (time to first
                         chunk for streams), or a fixed delay in seconds
    max_extra   1        copies beyond the first, one more after each further delay
                         (1 to 4)
    budget      0.05     hedges are at most this fraction of the requests of the last
                         10 s, so a general slowdown cannot double the load
    ==========  =======  ===========================================================

    A hedge goes only to an admissible provider that is not already running the
    request; with one admissible provider there is nothing to hedge to. The first
    success is returned; the other attempts are cancelled (their connections
    closed) and counted as ``hedges_cancelled``, never as failures. A stream may
    be hedged only before its first chunk, and only one stream is ever delivered.
    """

    after: str | float = "p95"
    max_extra: int = 1
    budget: float = 0.05

    def __post_init__(self) -> None:
        after = self.after
        if isinstance(after, str):
            if not _PERCENTILE.match(after):
                raise ConfigError(
                    f"hedge.after must be 'p50' to 'p99' or a number of seconds, got {after!r}",
                    field="hedge.after",
                )
        elif not _is_number(after) or not math.isfinite(after) or after <= 0:
            raise ConfigError(
                f"hedge.after must be 'p50' to 'p99' or a finite number of seconds > 0, "
                f"got {after!r}",
                field="hedge.after",
            )
        extra = self.max_extra
        if isinstance(extra, bool) or not isinstance(extra, int) or not 1 <= extra <= MAX_EXTRA:
            raise ConfigError(
                f"hedge.max_extra must be an integer from 1 to {MAX_EXTRA}, got {extra!r}",
                field="hedge.max_extra",
            )
        budget = self.budget
        if not _is_number(budget) or not math.isfinite(budget) or budget <= 0:
            raise ConfigError(
                f"hedge.budget must be a finite number > 0, got {budget!r}", field="hedge.budget"
            )

    def __repr__(self) -> str:
        return f"Hedge(after={self.after!r}, max_extra={self.max_extra}, budget={self.budget!r})"


class HedgeDelay:
    """The current hedge delay for one kind of request. Strictly private.

    For a percentile, the recent successful latencies are kept in a window of the
    last ``window`` samples; the percentile is recomputed every ``refresh``
    samples, so asking for the delay costs nothing. Until there are enough samples
    for the percentile to mean something (20 for p95, 100 for p99) there is no
    delay, and so no hedging.
    """

    __slots__ = ("_cached", "_fixed", "_min_samples", "_quantile", "_refresh", "_samples", "_since")

    def __init__(self, after: str | float, *, window: int = 1024, refresh: int = 32) -> None:
        quantile = hedge_quantile(after)
        self._quantile = quantile
        self._fixed = None if quantile is not None else float(after)
        self._samples: deque[float] = deque(maxlen=window)
        self._refresh = refresh
        self._since = 0
        self._cached: float | None = None
        # A percentile needs at least one sample above it: 20 for p95, 100 for p99.
        self._min_samples = 0 if quantile is None else max(20, round(1.0 / (1.0 - quantile)))

    def observe(self, seconds: float) -> None:
        """A successful attempt of this kind took ``seconds`` (to its first chunk for streams)."""
        if self._quantile is None:
            return
        self._samples.append(seconds)
        self._since += 1
        if self._since >= self._refresh or self._cached is None:
            self._recompute()

    def _recompute(self) -> None:
        self._since = 0
        assert self._quantile is not None
        if len(self._samples) < self._min_samples:
            self._cached = None
            return
        self._cached = percentile(sorted(self._samples), self._quantile)

    def delay(self) -> float | None:
        """Seconds to wait before hedging; None while there are too few samples."""
        if self._fixed is not None:
            return self._fixed
        return self._cached
