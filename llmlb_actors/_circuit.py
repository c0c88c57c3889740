"""A pure circuit breaker: every transition takes ``now`` from the caller."""

from __future__ import annotations

from typing import Literal

__all__ = ["Circuit", "CircuitState"]

CircuitState = Literal["closed", "open", "half-open"]


class Circuit:
    """Consecutive failures open the circuit for a cool-down; then one trial decides.

    ``closed``: traffic flows. ``open``: the provider is out of rotation until
    ``open_until``. After that the first dispatch moves it to ``half-open`` and
    is the single trial: its success closes the circuit, its failure reopens it.
    Strictly private.
    """

    __slots__ = (
        "cooldown",
        "failures",
        "last_failure_time",
        "open_until",
        "reason",
        "state",
        "threshold",
        "trial_in_flight",
    )

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.state: CircuitState = "closed"
        self.failures = 0
        self.open_until = 0.0
        self.trial_in_flight = False
        self.last_failure_time = float("-inf")
        self.reason: str | None = None

    def available(self, now: float) -> bool:
        """May a request be dispatched now?"""
        if self.state == "closed":
            return True
        if self.state == "open":
            return now >= self.open_until
        return not self.trial_in_flight

    def on_dispatch(self, now: float) -> None:
        """A request was dispatched; an elapsed open circuit becomes the half-open trial."""
        if self.state == "open" and now >= self.open_until:
            self.state = "half-open"
        if self.state == "half-open":
            self.trial_in_flight = True

    def record_success(self) -> None:
        self.state = "closed"
        self.failures = 0
        self.trial_in_flight = False
        self.reason = None

    def record_failure(self, now: float, reason: str) -> None:
        self.failures += 1
        self.last_failure_time = now
        if self.state == "half-open" or self.failures >= self.threshold:
            self.trip(now, reason)

    def record_neutral(self) -> None:
        """An attempt ended without telling us anything (cancelled): free the trial slot."""
        self.trial_in_flight = False

    def trip(self, now: float, reason: str, cooldown: float | None = None) -> None:
        """Open the circuit now (failures, a failed probe, or a misconfigured provider)."""
        self.state = "open"
        self.open_until = now + (self.cooldown if cooldown is None else cooldown)
        self.trial_in_flight = False
        self.last_failure_time = now
        self.reason = reason

    def reset(self) -> None:
        """A successful active probe: close the circuit."""
        self.record_success()
