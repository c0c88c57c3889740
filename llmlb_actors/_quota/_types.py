"""The values that cross the `QuotaStore` seam: limits, costs, verdicts, observations, views.

All immutable ``msgspec.Struct``s, so a store in another process (issue: shared
state) can send them as they are. Times are on the caller's clock
(``trio.current_time()``); durations are seconds.
"""

from __future__ import annotations

import math

import msgspec

__all__ = [
    "Admission",
    "Cost",
    "Hint",
    "Limits",
    "Observation",
    "QuotaView",
    "Reservation",
]


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's configured budgets; ``None`` means no such budget.

    Attributes:
        rpm: requests per minute, enforced as at most ``ceil(rpm / 60)`` in any
            rolling 1-second window.
        tpm: tokens per minute: a bucket of ``tpm`` tokens refilling ``tpm / 60``
            per second.
        rpd: requests in any rolling 24 hours.
        tpd: tokens in any rolling 24 hours.
    """

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.rpd is None and self.tpd is None


class Cost(msgspec.Struct, frozen=True):
    """What one attempt is expected to use: estimated prompt tokens and reserved completion."""

    prompt_tokens: int
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """What `QuotaStore.reserve` took for one attempt; hand it back to `QuotaStore.reconcile`.

    ``id`` is unique per store (a shared store keys its server-side record with it).
    """

    provider: str
    id: int
    cost: Cost
    at: float


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    """A store's verdict on one cost at one provider.

    Attributes:
        at: the earliest time the cost fits (``<= now``: it fits now). ``inf``
            with ``fits`` true means "not before an answer arrives" (a probe is in
            flight, or a hold whose end is unknown): wait for a change.
        fits: false when the cost is larger than a whole budget: it never fits.
        reason: the budget that binds (``"rpm"``, ``"tpm"``, ``"rpd"``, ``"tpd"``,
            ``"requests"``/``"tokens"``/``"input-tokens"``/``"output-tokens"`` as the
            provider's headers report them, ``"retry-after"``, ``"daily-quota"``,
            ``"probe"``), or ``None`` when it fits now.
        reservation: set when `QuotaStore.reserve` granted it.
    """

    at: float
    fits: bool = True
    reason: str | None = None
    reservation: Reservation | None = None

    def admits(self, now: float) -> bool:
        return self.fits and self.at <= now

    @property
    def granted(self) -> bool:
        return self.reservation is not None


class Hint(msgspec.Struct, frozen=True, kw_only=True):
    """One budget as a provider's headers describe it (any part may be missing).

    ``reset`` is seconds from the response until the budget is full again
    (OpenAI's and Anthropic's meaning).
    """

    limit: float | None = None
    remaining: float | None = None
    reset: float | None = None

    @property
    def empty(self) -> bool:
        return self.limit is None and self.remaining is None and self.reset is None


class Observation(msgspec.Struct, frozen=True, kw_only=True):
    """What one response said about a provider's quota.

    Attributes:
        requests, tokens, input_tokens, output_tokens: per-minute budgets from
            rate-limit headers.
        retry_after: seconds the provider asked us to wait (``retry-after-ms``
            before ``retry-after``; Gemini's ``RetryInfo.retryDelay``).
        exhausted_for: seconds a per-day quota stays exhausted (Gemini's
            ``QuotaFailure`` naming a per-day quota).
        source: the header family read (``"openai"``, ``"anthropic"``, ``"gemini"``).
    """

    requests: Hint | None = None
    tokens: Hint | None = None
    input_tokens: Hint | None = None
    output_tokens: Hint | None = None
    retry_after: float | None = None
    exhausted_for: float | None = None
    source: str = ""

    @property
    def empty(self) -> bool:
        return (
            self.requests is None
            and self.tokens is None
            and self.input_tokens is None
            and self.output_tokens is None
            and self.retry_after is None
            and self.exhausted_for is None
        )


class QuotaView(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one provider's budgets, for stats and strategies.

    Attributes:
        limits: the configured budgets.
        learned_rpm, learned_tpm: limits the provider's headers reported.
        remaining_requests: requests it would admit now (the tightest of the
            1-second window, a learned remaining count and the daily budget);
            ``None`` when nothing limits requests.
        remaining_tokens: tokens it would admit now; ``None`` when unlimited.
        refill_in: seconds until a one-request, zero-token attempt fits
            (0: now; ``inf``: not before an answer arrives).
        reason: the budget behind a non-zero ``refill_in``.
        headroom: remaining over limit of the tightest budget, in [0, 1]
            (1 when nothing limits it): what the ``quota`` strategy compares.
    """

    limits: Limits = Limits()
    learned_rpm: int | None = None
    learned_tpm: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    refill_in: float = 0.0
    reason: str | None = None
    headroom: float = 1.0

    @property
    def limited(self) -> bool:
        return not (
            self.limits.empty
            and self.learned_rpm is None
            and self.learned_tpm is None
            and self.remaining_requests is None
            and self.remaining_tokens is None
            and self.refill_in == 0.0
        )


INF = math.inf
