"""One provider's budgets: configured and learned limits combined, as pure functions of time.

A `ProviderBudget` answers "when does this cost fit?" (`earliest`), takes a
reservation (`reserve`), settles it with the real usage (`reconcile`), and
folds in what the provider's headers said (`observe`). Every method takes
``now`` from the caller, so tests drive it with any clock and a store can run
it wherever its state lives.

==================  ========================================================================
budget              rule
==================  ========================================================================
``rpm``             at most ``ceil(rpm / 60)`` requests in any rolling 1-second window
                    (Azure's enforcement; per-minute APIs are satisfied too). A learned
                    request limit tightens it the same way: the stricter wins.
``tpm``             a bucket of ``tpm`` tokens refilling ``tpm / 60`` per second; each
                    attempt reserves its estimate and is reconciled with the real usage
``rpd``, ``tpd``    rolling 24 hours (`DailyBudget`)
learned             from headers: a bucket per reported budget whose level is the lower of
                    ours and the provider's ``remaining``, refilled at ``limit / 60`` per
                    second when the limit is known, and full at its ``reset`` in any case
holds               ``retry-after`` and an exhausted per-day quota keep it out until then
probe               a provider with no known limits takes one attempt at a time until an
                    answer says what its limits are (or that it sends none)
==================  ========================================================================
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Final

import msgspec

from ._bucket import EPSILON, TokenBucket
from ._daily import DailyBudget
from ._types import Admission, Cost, Hint, Limits, Observation, QuotaView
from ._window import RollingWindow, move_last

__all__ = [
    "MAX_LIMIT",
    "MAX_WAIT",
    "ProviderBudget",
    "requests_per_second",
    "sanitize",
]

log = logging.getLogger("llmlb_actors.quota")

#: Nothing a provider says keeps it out for more than a day (its headers may be wrong).
MAX_WAIT: Final = 86_400.0
#: Larger "limits" are treated as this: pacing arithmetic stays finite.
MAX_LIMIT: Final = 1e12
#: A remaining count reported without a reset: assume the per-minute budget is full
#: again within a minute.
_DEFAULT_RESET: Final = 60.0

_DIMENSIONS: Final = ("requests", "tokens", "input-tokens", "output-tokens")


def requests_per_second(rpm: float) -> int:
    """The 1-second window's cap for a per-minute request limit: ``ceil(rpm / 60)``."""
    return max(1, math.ceil(rpm / 60.0 - 1e-9))


def _cost(dimension: str, cost: Cost) -> int:
    if dimension == "requests":
        return 1
    if dimension == "tokens":
        return cost.tokens
    if dimension == "input-tokens":
        return cost.prompt_tokens
    return cost.completion_tokens


def _clamp_hint(name: str, hint: Hint | None) -> Hint | None:
    if hint is None:
        return None
    limit, remaining, reset = hint.limit, hint.remaining, hint.reset
    if limit is not None and limit <= 0:
        # Azure has sent -1/0 placeholders: a pair that says nothing is ignored whole.
        log.debug("ignored %s limit %r (not positive) and its remaining count", name, limit)
        limit = None
        remaining = None
    elif limit is not None and limit > MAX_LIMIT:
        limit = MAX_LIMIT
    if remaining is not None:
        if remaining < 0:
            log.debug("clamped %s remaining %r to 0", name, remaining)
            remaining = 0.0
        if limit is not None and remaining > limit:
            remaining = limit
    if reset is not None:
        if reset < 0:
            reset = 0.0
        elif reset > MAX_WAIT:
            log.debug("clamped %s reset %r s to a day", name, reset)
            reset = MAX_WAIT
    clamped = Hint(limit=limit, remaining=remaining, reset=reset)
    return None if clamped.empty else clamped


def _clamp_wait(value: float | None) -> float | None:
    if value is None:
        return None
    return min(max(0.0, value), MAX_WAIT)


def sanitize(observation: Observation) -> Observation:
    """Clamp absurd numbers: no negative counts or waits, no wait beyond a day."""
    return msgspec.structs.replace(
        observation,
        requests=_clamp_hint("requests", observation.requests),
        tokens=_clamp_hint("tokens", observation.tokens),
        input_tokens=_clamp_hint("input-tokens", observation.input_tokens),
        output_tokens=_clamp_hint("output-tokens", observation.output_tokens),
        retry_after=_clamp_wait(observation.retry_after),
        exhausted_for=_clamp_wait(observation.exhausted_for),
    )


class _Taken(msgspec.Struct):
    """What one reservation took, so reconciling it touches exactly those budgets."""

    cost: Cost
    buckets: tuple[str, ...]
    day_slot: float | None
    probe: bool
    stamp: float
    """Its entry in the request window: the admission time, then the send time."""


class ProviderBudget:
    """Every budget of one provider. Strictly private to the stores.

    ``window_guard`` lengthens the 1-second window the balancer paces with, so
    a request delayed a little more than its successor on the way to the
    provider still lands in a window the provider accepts.
    """

    def __init__(
        self, limits: Limits, now: float, *, window_guard: float = 0.0, probe: bool = False
    ) -> None:
        self.limits = limits
        self.window_guard = window_guard
        self.learned: dict[str, int] = {}
        self.window: RollingWindow | None = None
        self.buckets: dict[str, TokenBucket] = {}
        self.day_requests = None if limits.rpd is None else DailyBudget(limits.rpd)
        self.day_tokens = None if limits.tpd is None else DailyBudget(limits.tpd)
        self.holds: dict[str, float] = {}
        self.probing = probe
        self.probe_in_flight = False
        self._taken: dict[int, _Taken] = {}
        # Admissions of the last window, kept while no window exists yet: a request
        # limit learned later must count the requests already sent (the probe's).
        self._recent: deque[float] = deque()
        self._resize(now)

    # -- limits ---------------------------------------------------------------------------

    def _effective(self, dimension: str) -> float | None:
        configured = {"requests": self.limits.rpm, "tokens": self.limits.tpm}.get(dimension)
        learned = self.learned.get(dimension)
        values = [v for v in (configured, learned) if v is not None]
        return float(min(values)) if values else None

    def _resize(self, now: float) -> None:
        rpm = self._effective("requests")
        if rpm is not None:
            cap = requests_per_second(rpm)
            if self.window is None:
                self.window = RollingWindow(cap, 1.0 + self.window_guard)
                for t in self._recent:
                    self.window.add(t)
                self._recent.clear()
            else:
                self.window.cap = cap
        tpm = self._effective("tokens")
        if tpm is not None:
            self._bucket("tokens", tpm, now)
        for dimension in ("requests", "input-tokens", "output-tokens"):
            learned = self.learned.get(dimension)
            if learned is not None:
                self._bucket(dimension, learned, now)

    def _bucket(self, dimension: str, capacity: float, now: float) -> TokenBucket:
        bucket = self.buckets.get(dimension)
        if bucket is None:
            bucket = self.buckets[dimension] = TokenBucket(capacity, now)
        elif bucket.capacity != capacity:
            bucket.resize(capacity, now)
        return bucket

    def reconfigure(self, limits: Limits, now: float) -> None:
        """New configured limits; learned ones and the usage so far are kept."""
        self.limits = limits
        if limits.rpm is None and "requests" not in self.learned:
            self.window = None
        if limits.tpm is None and "tokens" not in self.learned:
            self.buckets.pop("tokens", None)
        if limits.rpd is None:
            self.day_requests = None
        elif self.day_requests is None:
            self.day_requests = DailyBudget(limits.rpd)
        else:
            self.day_requests.limit = float(limits.rpd)
        if limits.tpd is None:
            self.day_tokens = None
        elif self.day_tokens is None:
            self.day_tokens = DailyBudget(limits.tpd)
        else:
            self.day_tokens.limit = float(limits.tpd)
        self._resize(now)

    # -- decisions --------------------------------------------------------------------------

    def earliest(self, cost: Cost, now: float) -> Admission:
        """When ``cost`` fits every budget (``at <= now``: now); never reserves."""
        at = now
        reason: str | None = None
        for why, until in list(self.holds.items()):
            if until <= now:
                del self.holds[why]
            elif until > at:
                at, reason = until, why
        window = self.window
        if window is not None:
            t = window.earliest(now)
            if t > at:
                at, reason = t, "rpm"
        for dimension, bucket in self.buckets.items():
            amount = _cost(dimension, cost)
            if amount <= 0:
                continue
            t = bucket.earliest(amount, now)
            why = "tpm" if dimension == "tokens" and self.limits.tpm is not None else dimension
            if t == math.inf and amount > bucket.capacity + EPSILON:
                return Admission(at=math.inf, fits=False, reason=why)
            if t > at:
                at, reason = t, why
        for why, day, amount in (
            ("rpd", self.day_requests, 1),
            ("tpd", self.day_tokens, cost.tokens),
        ):
            if day is None or amount <= 0:
                continue
            t = day.earliest(amount, now)
            if t == math.inf:
                return Admission(at=math.inf, fits=False, reason=why)
            if t > at:
                at, reason = t, why
        if self.probing and self.probe_in_flight and at <= now:
            return Admission(at=math.inf, reason="probe")
        return Admission(at=at, reason=reason)

    def reserve(self, cost: Cost, now: float, reservation_id: int) -> None:
        """Take ``cost`` now; the caller checked `earliest` first."""
        if self.window is not None:
            self.window.add(now)
        else:
            recent = self._recent
            while recent and recent[0] + 1.0 + self.window_guard <= now:
                recent.popleft()
            recent.append(now)
        taken = []
        for dimension, bucket in self.buckets.items():
            amount = _cost(dimension, cost)
            if amount:
                bucket.take(amount, now)
            taken.append(dimension)
        if self.day_requests is not None:
            self.day_requests.take(1, now)
        slot = None if self.day_tokens is None else self.day_tokens.take(cost.tokens, now)
        probe = self.probing
        if probe:
            self.probe_in_flight = True
        self._taken[reservation_id] = _Taken(cost, tuple(taken), slot, probe, now)

    def sent(self, reservation_id: int, now: float) -> None:
        """The reserved request went out now: its window entry moves to the send time.

        The provider counts a request when it arrives, so the window must hold send
        times: a request held up (by a connection being set up) and the next window's
        requests must not arrive in one second. A delay within half the guard stays
        uncounted (the guard covers it): moving every entry by the usual few
        milliseconds between admission and send would stretch every window by them.
        Every other entry is at or before ``now``, so the moved one goes last and the
        window stays in order.
        """
        taken = self._taken.get(reservation_id)
        if taken is None or now - taken.stamp <= self.window_guard / 2:
            return
        if self.window is not None:
            self.window.move(taken.stamp, now)
        else:
            move_last(self._recent, taken.stamp, now)
        taken.stamp = now

    def reconcile(self, reservation_id: int, used: Cost | None, now: float) -> None:
        """Settle a reservation: ``used`` is the real usage, ``None`` for a failed attempt.

        A failed attempt refunds its completion reservation (its prompt was sent
        and may have been counted). An unknown reservation is ignored.
        """
        taken = self._taken.pop(reservation_id, None)
        if taken is None:
            return
        reserved = taken.cost
        actual = used if used is not None else Cost(reserved.prompt_tokens, 0)
        for dimension in taken.buckets:
            bucket = self.buckets.get(dimension)
            if bucket is not None:
                bucket.reconcile(_cost(dimension, reserved), _cost(dimension, actual), now)
        if taken.day_slot is not None and self.day_tokens is not None:
            delta = actual.tokens - reserved.tokens
            if delta:
                self.day_tokens.adjust(taken.day_slot, delta, now)
        if taken.probe:
            self.probe_in_flight = False
            if used is not None:
                self.probing = False  # an answer: its headers (or their absence) told us

    def observe(self, observation: Observation, now: float) -> None:
        """Fold in one response's quota information (sanitized first)."""
        obs = sanitize(observation)
        learned_any = False
        for dimension, hint in zip(
            _DIMENSIONS,
            (obs.requests, obs.tokens, obs.input_tokens, obs.output_tokens),
            strict=True,
        ):
            if hint is None:
                continue
            learned_any = True
            if hint.limit is not None:
                limit = max(1, int(hint.limit))
                if self.learned.get(dimension) != limit:
                    self.learned[dimension] = limit
                    self._resize(now)
            if hint.remaining is None:
                continue
            bucket = self.buckets.get(dimension)
            if bucket is None:
                # Remaining without a known limit: no refill rate, full again at the reset.
                bucket = self.buckets[dimension] = TokenBucket(math.inf, now)
            reset = hint.reset if hint.reset is not None else _DEFAULT_RESET
            bucket.observe(hint.remaining, now + reset, now)
        if obs.retry_after is not None and obs.retry_after > 0:
            self._hold("retry-after", now + obs.retry_after)
        if obs.exhausted_for is not None:
            self._hold("daily-quota", now + obs.exhausted_for)
        if learned_any:
            self.probing = False

    def _hold(self, why: str, until: float) -> None:
        if until > self.holds.get(why, -math.inf):
            self.holds[why] = until

    # -- views ------------------------------------------------------------------------------

    def view(self, now: float) -> QuotaView:
        requests: list[float] = []
        tokens: list[float] = []
        headroom = 1.0
        window = self.window
        if window is not None:
            left = window.remaining(now)
            requests.append(left)
            headroom = min(headroom, left / window.cap)
        for dimension, bucket in self.buckets.items():
            level = bucket.remaining(now)
            if not math.isfinite(level):
                continue
            (requests if dimension == "requests" else tokens).append(level)
            if math.isfinite(bucket.capacity) and bucket.capacity > 0:
                headroom = min(headroom, level / bucket.capacity)
        for out, day in ((requests, self.day_requests), (tokens, self.day_tokens)):
            if day is not None:
                day_left = day.remaining(now)
                out.append(day_left)
                headroom = min(headroom, day_left / day.limit)
        verdict = self.earliest(Cost(0, 0), now)
        return QuotaView(
            limits=self.limits,
            learned_rpm=self.learned.get("requests"),
            learned_tpm=self.learned.get("tokens"),
            remaining_requests=None if not requests else max(0, math.floor(min(requests))),
            remaining_tokens=None if not tokens else max(0, math.floor(min(tokens))),
            refill_in=max(0.0, verdict.at - now),
            reason=verdict.reason if verdict.at > now else None,
            headroom=min(1.0, max(0.0, headroom)),
        )

    def unlimited(self, now: float) -> bool:
        """Nothing here can refuse a request (so callers may skip asking)."""
        return (
            self.window is None
            and not self.buckets
            and self.day_requests is None
            and self.day_tokens is None
            and not self.probing
            and not self._taken
            and all(until <= now for until in self.holds.values())
        )

    @property
    def reservations(self) -> int:
        """Reservations taken and not yet reconciled."""
        return len(self._taken)
