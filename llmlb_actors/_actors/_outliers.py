"""Outlier ejection, wired: after each health failure, is that provider an outlier now?

The rule, the ejection times and the limits are pure policy (`.._outlier`); this
reads the providers' counters, applies the rule to the one that just failed and
ejects it through the actor, telling the dispatcher (which then checks the panic
threshold while any ejection is in force). Only failures run this: a success
costs nothing here. Strictly private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._outlier import INTERVAL, Counts, SuccessWindow, ejection_allowed, is_outlier

if TYPE_CHECKING:
    from .dispatcher import Dispatcher
    from .provider import ProviderActor

__all__ = ["OutlierTracker"]


class OutlierTracker:
    """Success-rate outlier detection over the providers in rotation."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._window = SuccessWindow()

    def on_health_failure(self, actor: ProviderActor, now: float) -> None:
        """``actor`` just counted a failure that says something about its health."""
        rotation = self._dispatcher.rotation
        if actor not in rotation:
            return
        totals = {a.name: Counts(a.stats.successful, a.health_failures) for a in rotation}
        window = self._window.on_failure(now, actor.name, totals)
        if not actor.available(now):
            return  # already out (circuit open, Retry-After, ejected): nothing to decide
        mine = window[actor.name]
        successes = failures = 0
        for other in rotation:
            if other is not actor and not other.ejection.active(now):
                count = window[other.name]
                successes += count.successes
                failures += count.failures
        others = Counts(successes, failures)
        if not is_outlier(mine, others):
            return
        if not ejection_allowed(self._dispatcher.admissible_count(now), len(rotation)):
            return
        reason = (
            f"success rate {mine.successes / mine.total:.0%} over the last {INTERVAL:g} s "
            f"({mine.total} attempts) against {others.successes / others.total:.0%} for the others"
        )
        self._dispatcher.note_ejection(actor.eject(now, reason))

    def forget(self, name: str) -> None:
        """A provider was removed."""
        self._window.forget(name)
