"""Pure backoff arithmetic: no sleeping here (the caller's task sleeps)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

__all__ = ["compute_backoff"]


def compute_backoff(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first retry).

    Exponential with full jitter: uniform in ``(0, min(cap, base * 2**(retry-1))]``.
    An ``rng`` whose ``random()`` returns 0 gives the deterministic upper bound,
    which is what tests use.
    """
    if retry < 1 or base <= 0:
        return 0.0
    ceiling = min(cap, base * (2.0 ** min(retry - 1, 62)))
    return ceiling * (1.0 - rng.random())
