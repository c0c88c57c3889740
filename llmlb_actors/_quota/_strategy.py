"""The ``quota`` strategy: the provider with the most budget left relative to its limit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["QuotaStrategy"]


class _Candidate(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def index(self) -> int: ...

    @property
    def in_flight(self) -> int: ...


_C = TypeVar("_C", bound=_Candidate)


class QuotaStrategy:
    """Most remaining budget relative to its limit; ties: fewest in flight, then config order.

    Headroom is the tightest of a provider's budgets (the 1-second request window,
    the token bucket, a learned remaining count, the daily budgets) as a fraction of
    its limit; an unlimited provider has 1. Each pick lowers the picked provider's
    headroom, so load spreads in proportion to quota: with rpm 600 and 300, two
    requests go to the first for each one to the second. Unlike LiteLLM's
    usage-based routing it never sends past a limit: every strategy only sees the
    providers whose budget admits the request now.
    """

    name = "quota"

    def __init__(self, headroom: Callable[[str], float] | None = None) -> None:
        self._headroom = headroom

    def bind(self, headroom: Callable[[str], float]) -> None:
        """The balancer's view of each provider's headroom (in [0, 1])."""
        self._headroom = headroom

    def select(self, candidates: Sequence[_C]) -> _C:
        headroom = self._headroom
        best = candidates[0]
        if headroom is None or len(candidates) == 1:
            return best
        best_key = (-headroom(best.name), best.in_flight, best.index)
        for candidate in candidates[1:]:
            key = (-headroom(candidate.name), candidate.in_flight, candidate.index)
            if key < best_key:
                best, best_key = candidate, key
        return best

    def forget(self, name: str) -> None:
        pass
