"""Peak-EWMA latency cost of one provider, as a pure function of time and observations.

The cost is the load-balancing signal of the ``latency`` strategy (Finagle's
``PeakEwma``, tower's and linkerd2-proxy's ``peak_ewma``): it jumps at once to a
latency slower than itself, and otherwise decays with ``exp(-dt/tau)``. Two choices
are ours, and each is documented where a user can read it (README, "Tail latency"):

- **Decay toward zero while nothing is observed.** Finagle and tower decay the
  cost toward 0 every time the balancer *reads* it (a read is an observation of a
  zero latency), so a provider that has not answered for a while becomes worth
  trying again. Here the decay is a function of the time since the last
  observation, so the value does not depend on how often it is read; an
  observation below the decayed cost replaces it (the cost never sinks below
  what was just observed). With frequent observations this is exactly Finagle's
  behaviour under frequent reads: the cost tracks the recent peak and decays
  toward faster answers with ``exp(-dt/tau)``.
- **A provider without an observation** costs nothing while it has no request
  pending, and a penalty while it has one: it gets one probe at a time until
  its first answer (Finagle's rule; tower and linkerd assume a default latency).

Failures never make a provider look faster: they are observed as a lower bound
(`PeakEwma.observe_at_least`), which raises the cost if the failure took longer
than the current cost and otherwise changes nothing.

**Cancelled work still counts.** An attempt cancelled unanswered (the loser of a
hedge) tells only that the provider was slower than the winner. If that were
all it recorded, a slow provider whose every attempt is hedged and cancelled
would never be seen answering slowly: its cost would only decay, P2C would keep
sending it work, and each of those requests would need a hedge (measured on the
simulator's *degraded* scenario: the slow provider got 2.5x the first attempts
with hedging on). So a cancelled attempt (`PeakEwma.abandon`) stays counted as
pending until the time the cost predicted it would end: an LLM upstream usually
keeps generating after the client hangs up, so the provider really is still
busy with it. And an attempt *overtaken* by a copy sent after it (the evidence
that its provider is slow) says nothing against the cost it was sent at: the
cost goes back to at least that value (the decay during its life is undone) and
does not decay until that predicted end. Without the last rule the provider is
picked again the moment a hold ends, each cycle a little cheaper, and its share
creeps up. A copy that lost to an attempt sent before it is only held: it says
nothing about its provider, and freezing its cost would slow the recovery of a
provider that got fast again.
"""

from __future__ import annotations

import heapq
import math

__all__ = ["UNMEASURED_PENALTY", "PeakEwma"]

#: The load of a provider that has a request pending but has never answered
#: (times its pending count): above any real latency, so it is probed one at a time.
UNMEASURED_PENALTY = 1e9


class PeakEwma:
    """The peak-sensitive moving latency (seconds) of one provider. Strictly private.

    ``tau`` is the decay time constant (``BalancerConfig.latency_decay``): after
    ``tau`` seconds without a slower observation, the excess of a peak over the
    latencies now observed has shrunk to ``1/e``.
    """

    __slots__ = ("_cost", "_frozen", "_holds", "_stamp", "due", "floor", "tau")

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self._cost: float | None = None  # at ``_stamp``; None before the first observation
        self._stamp = 0.0
        self._holds: list[float] = []  # a heap of the predicted ends of cancelled attempts
        self._frozen = float("-inf")  # no decay before this (the last hold's end)
        # An answer faster than ``floor`` (the stored cost) before ``due`` (a hundredth of
        # ``tau`` after the last update) changes nothing `observe` keeps: every answer on
        # the hot path goes through here, and a caller may test this itself and skip the
        # call. Within that hundredth the cost decays by 1 % at most, so such an answer
        # counts as a floor from the next update on, at most 0.1 s later (tau = 10 s).
        self.floor = float("-inf")
        self.due = float("-inf")

    @property
    def measured(self) -> bool:
        return self._cost is not None

    def cost(self, now: float) -> float | None:
        """The cost at ``now`` (seconds), decayed since the last observation; None if unmeasured."""
        cost = self._cost
        if cost is None:
            return None
        stamp = self._stamp
        elapsed = now - (stamp if stamp >= self._frozen else self._frozen)
        if elapsed <= 0.0:
            return cost
        return cost * math.exp(-elapsed / self.tau)

    def observe(self, latency: float, now: float) -> None:
        """A successful answer that took ``latency`` seconds, seen at ``now``."""
        if latency < self.floor and now < self.due:
            return  # see `floor`
        cost = self._cost
        if cost is not None and latency < cost:
            stamp = self._stamp
            elapsed = now - (stamp if stamp >= self._frozen else self._frozen)
            if elapsed > 0.0:
                cost *= math.exp(-elapsed / self.tau)
                if latency > cost:
                    cost = latency
        else:
            cost = latency
        self._set(cost, now)

    def _set(self, cost: float, now: float) -> None:
        self._cost = self.floor = cost
        self._stamp = now
        self.due = now + self.tau * 0.01

    def observe_at_least(self, latency: float, now: float) -> None:
        """An attempt that failed, or was cancelled unanswered, after ``latency`` seconds.

        Its real latency was at least that: a slower one raises the cost; a faster
        one says nothing (a quick error is not a quick answer).
        """
        current = self.cost(now)
        if current is None or latency > current:
            self._set(latency, now)

    def abandon(self, started: float, now: float, *, overtaken: bool) -> None:
        """An attempt sent at ``started`` was cancelled unanswered at ``now``.

        It stays pending until ``started`` plus the cost. ``overtaken``: a copy
        sent after it answered first; then the cost returns to at least what it
        was when the attempt was sent (or to the time it ran, if longer) and does
        not decay until that predicted end. If the cost was updated since the
        attempt was sent, that newer value stands. Either way the time it ran is
        a lower bound.
        """
        elapsed = now - started
        then = self._cost_at(started) if overtaken else None
        self.observe_at_least(elapsed if then is None else max(elapsed, then), now)
        predicted = self.cost(now) if then is None else then
        if predicted is not None and predicted > elapsed:
            end = started + predicted
            heapq.heappush(self._holds, end)
            if then is not None:
                self._frozen = max(self._frozen, end)

    def _cost_at(self, when: float) -> float | None:
        """The cost at ``when``, if nothing was observed since (None otherwise)."""
        cost = self._cost
        if cost is None or when < self._stamp:
            return None
        return self.cost(when)

    def held(self, now: float) -> int:
        """Cancelled attempts still counted as pending at ``now``."""
        holds = self._holds
        while holds and holds[0] <= now:
            heapq.heappop(holds)
        return len(holds)

    def load(self, now: float, pending: int) -> float:
        """What P2C compares: ``cost x (pending + held + 1)``, or the probe rule when unmeasured."""
        cost = self.cost(now)
        if self._holds:
            pending += self.held(now)
        if cost is None:
            return UNMEASURED_PENALTY * pending
        return cost * (pending + 1)
