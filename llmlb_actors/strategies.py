"""Routing strategies: which provider gets the next attempt.

The dispatcher owns one strategy object and calls `Strategy.select` with the
candidates for one attempt: providers in rotation, healthy, with mailbox room
and not yet tried by this request (when any untried remain), in configuration
order. Strategies are synchronous and never block, so a decision is atomic.

=========== =================================================================
name        picks
=========== =================================================================
round-robin the next candidate after the previous pick, in config order
failover    the first candidate in config order
weighted    smooth weighted round-robin (nginx): exact proportions per window
least-busy  the fewest requests in flight; ties in config order
latency     the lowest smoothed latency x (1 + in flight); unmeasured first
quota       the most budget left relative to its limit (rpm, tpm, learned limits)
custom      your callable over read-only `ProviderState` snapshots
=========== =================================================================

With quotas on, every strategy sees only the providers whose budget admits the
request now.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

import msgspec

from ._config import STRATEGY_NAMES, ProviderState, StrategyName
from ._errors import StrategyError
from ._quota._strategy import QuotaStrategy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._config import BalancerConfig

__all__ = [
    "Candidate",
    "CustomStrategy",
    "FailoverStrategy",
    "LatencyStrategy",
    "LeastBusyStrategy",
    "QuotaStrategy",
    "RoundRobinStrategy",
    "Strategy",
    "StrategyOptions",
    "WeightedStrategy",
    "make_strategy",
]


class Candidate(Protocol):
    """What strategies read about a provider (the dispatcher's live view)."""

    @property
    def name(self) -> str: ...

    @property
    def index(self) -> int: ...

    @property
    def weight(self) -> float: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def latency_ewma(self) -> float | None: ...

    def snapshot(self) -> ProviderState: ...


class Strategy(Protocol):
    """A routing policy. ``candidates`` is non-empty and in config order."""

    name: str

    def select(self, candidates: Sequence[Candidate]) -> Candidate: ...

    def forget(self, name: str) -> None:
        """A provider was removed: drop any state kept for it."""
        ...


class RoundRobinStrategy:
    """Strict rotation in configuration order over the current candidates."""

    name = "round-robin"

    def __init__(self) -> None:
        self._last_index = -1

    def select(self, candidates: Sequence[Candidate]) -> Candidate:
        last = self._last_index
        chosen = candidates[0]
        for candidate in candidates:
            if candidate.index > last:
                chosen = candidate
                break
        self._last_index = chosen.index
        return chosen

    def forget(self, name: str) -> None:
        pass


class FailoverStrategy:
    """The first candidate in configuration order."""

    name = "failover"

    def select(self, candidates: Sequence[Candidate]) -> Candidate:
        return candidates[0]

    def forget(self, name: str) -> None:
        pass


class WeightedStrategy:
    """Smooth weighted round-robin, as nginx does it.

    Each pick adds every candidate's weight to its running score, takes the
    highest score (first in config order on ties) and subtracts the total
    weight from it. With integer weights the picks repeat with period
    ``sum(weights)``, so every window of that many consecutive picks holds each
    provider exactly ``weight`` times.
    """

    name = "weighted"

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def select(self, candidates: Sequence[Candidate]) -> Candidate:
        current = self._current
        total = 0.0
        best: Candidate | None = None
        best_score = float("-inf")
        for candidate in candidates:
            score = current.get(candidate.name, 0.0) + candidate.weight
            current[candidate.name] = score
            total += candidate.weight
            if score > best_score:
                best, best_score = candidate, score
        assert best is not None
        current[best.name] = best_score - total
        return best

    def forget(self, name: str) -> None:
        self._current.pop(name, None)


class LeastBusyStrategy:
    """Fewest requests in flight; ties go to the earlier provider in config order."""

    name = "least-busy"

    def select(self, candidates: Sequence[Candidate]) -> Candidate:
        best = candidates[0]
        for candidate in candidates[1:]:
            if candidate.in_flight < best.in_flight:
                best = candidate
        return best

    def forget(self, name: str) -> None:
        pass


class LatencyStrategy:
    """Adaptive: lowest smoothed latency scaled by load; unmeasured providers first."""

    name = "latency"

    def select(self, candidates: Sequence[Candidate]) -> Candidate:
        best = candidates[0]
        best_score = self._score(best)
        for candidate in candidates[1:]:
            score = self._score(candidate)
            if score < best_score:
                best, best_score = candidate, score
        return best

    @staticmethod
    def _score(candidate: Candidate) -> float:
        ewma = candidate.latency_ewma
        if ewma is None:
            return -1.0 / (1 + candidate.in_flight)
        return ewma * (1 + candidate.in_flight)

    def forget(self, name: str) -> None:
        pass


class CustomStrategy:
    """Wraps a user callable over `ProviderState` snapshots.

    If the callable raises, or returns something that is not one of the
    snapshots it was given, the request fails with `StrategyError`.
    """

    name = "custom"

    def __init__(self, fn: Callable[[list[ProviderState]], ProviderState]) -> None:
        self._fn = fn

    def select(self, candidates: Sequence[Candidate]) -> Candidate:
        snapshots = [c.snapshot() for c in candidates]
        label = getattr(self._fn, "__name__", type(self._fn).__name__)
        try:
            chosen = self._fn(snapshots)
        except Exception as exc:
            raise StrategyError(
                f"custom strategy {label!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(chosen, ProviderState):
            for candidate, snap in zip(candidates, snapshots, strict=True):
                if chosen is snap or chosen.name == snap.name:
                    return candidate
        names = ", ".join(s.name for s in snapshots)
        raise StrategyError(
            f"custom strategy {label!r} returned {chosen!r}, which is not one of the "
            f"candidates ({names})"
        )

    def forget(self, name: str) -> None:
        pass


class StrategyOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What a strategy factory may use besides the name (from `BalancerConfig`)."""

    custom: Callable[[list[ProviderState]], ProviderState] | None = None
    """``BalancerConfig.custom_strategy``."""
    rng: random.Random = msgspec.field(default_factory=random.Random)
    """The balancer's random source (seeded from ``BalancerConfig.seed``)."""
    headroom: Callable[[str], float] | None = None
    """Budget left relative to its limit per provider name, in [0, 1] (``quota``)."""

    @classmethod
    def from_config(cls, config: BalancerConfig, rng: random.Random) -> StrategyOptions:
        return cls(custom=config.custom_strategy, rng=rng)


def _custom(options: StrategyOptions) -> Strategy:
    if options.custom is None:
        raise StrategyError("strategy 'custom' needs custom_strategy, a callable")
    return CustomStrategy(options.custom)


#: The strategy registry: name → factory. A name must also be in ``StrategyName``
#: (mypy checks the keys; a test checks that every name has a factory).
STRATEGIES: dict[StrategyName, Callable[[StrategyOptions], Strategy]] = {
    "round-robin": lambda _: RoundRobinStrategy(),
    "failover": lambda _: FailoverStrategy(),
    "weighted": lambda _: WeightedStrategy(),
    "least-busy": lambda _: LeastBusyStrategy(),
    "latency": lambda _: LatencyStrategy(),
    "quota": lambda options: QuotaStrategy(options.headroom),
    "custom": _custom,
}


def make_strategy(
    name: str,
    custom: Callable[[list[ProviderState]], ProviderState] | None = None,
    *,
    options: StrategyOptions | None = None,
) -> Strategy:
    """A fresh strategy object for a strategy name from `BalancerConfig`.

    Raises:
        StrategyError: an unknown name, or ``"custom"`` without a callable.
    """
    if name not in STRATEGY_NAMES:
        raise StrategyError(
            f"unknown strategy {name!r}; expected one of {', '.join(STRATEGY_NAMES)}"
        )
    factory = STRATEGIES[cast("StrategyName", name)]
    if options is None:
        options = StrategyOptions(custom=custom)
    elif custom is not None:
        options = msgspec.structs.replace(options, custom=custom)
    return factory(options)
