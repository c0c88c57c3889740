"""The balancer's side of the `QuotaStore` seam: admit, reserve, settle, explain.

The dispatcher asks the gate which of a call's candidates admit it now
(`QuotaGate.admissible`), reserves on the one the strategy picked
(`QuotaGate.reserve`), and the provider actor settles the reservation with
the attempt's real usage and what its response said (`QuotaGate.settle`).
Strictly private; it knows providers by their config and calls by the few
fields below, never the actor classes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

import msgspec
import trio

from .._errors import LoadBalancerError, RateLimitedError
from ._estimate import completion_reservation, estimate_chars
from ._types import Cost

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._config import ProviderConfig
    from .._models import LLMRequest, Usage
    from ._estimate import TokenEstimator
    from ._store import QuotaStore
    from ._types import Observation, Reservation

__all__ = ["PROBED_PROTOCOLS", "QuotaCall", "QuotaCandidate", "QuotaGate", "Wait"]

#: Protocols whose APIs send rate-limit headers on every answer: with probing on, a
#: provider of one of them with no configured limits takes one attempt at a time until
#: its first answer says what its limits are. Others (Gemini, Cohere, custom providers)
#: would only be slowed down by it.
PROBED_PROTOCOLS = frozenset({"openai", "anthropic", "openai-compatible", "azure"})


class QuotaCandidate(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def provider_config(self) -> ProviderConfig: ...


class QuotaCall(Protocol):
    request: LLMRequest
    reservation: Reservation | None
    costs: dict[tuple[str | None, int | None], Cost] | None


_C = TypeVar("_C", bound=QuotaCandidate)


class Wait(NamedTuple):
    """No candidate admits the call now: when one will, and why each does not."""

    at: float
    """Earliest time one admits it; ``inf``: not before an answer arrives (or never)."""
    fits: bool
    """Some candidate could ever admit it (false: larger than every budget)."""
    reasons: dict[str, tuple[str, float]]
    """Provider → (the binding budget, when it admits the call)."""


class QuotaGate:
    """Budgets for one balancer, behind one `QuotaStore`."""

    def __init__(
        self,
        store: QuotaStore,
        estimator: TokenEstimator = estimate_chars,
        *,
        probe: bool = False,
        max_retry_after: float = math.inf,
    ) -> None:
        self.store = store
        self.estimator = estimator
        self.probe = probe
        # A provider's Retry-After is honoured up to this (BalancerConfig.max_retry_delay),
        # as the actors honour it; an exhausted daily quota is not a Retry-After.
        self.max_retry_after = max_retry_after
        # Providers that may refuse: configured limits, or learned/probing state. The
        # others skip the store entirely, so an unlimited fleet pays nothing per call
        # (the dispatcher tests this set's truth inline).
        self.limited_names: set[str] = set()
        self.waits = 0
        """Calls that waited for a budget before being sent."""
        self.wait_seconds = 0.0
        """Time they waited, summed."""
        self.refused = 0
        """Calls failed at once with `RateLimitedError`."""

    # -- membership ----------------------------------------------------------------------

    def add(self, config: ProviderConfig, now: float) -> None:
        limits = config.limits
        probe = self.probe and limits.empty and config.protocol_name in PROBED_PROTOCOLS
        self.store.configure(config.name, limits, now, probe=probe)
        if not self.store.unlimited(config.name, now):
            self.limited_names.add(config.name)

    def remove(self, name: str) -> None:
        self.limited_names.discard(name)
        self.store.forget(name)

    def limited(self, name: str) -> bool:
        return name in self.limited_names

    def headroom(self, name: str, now: float) -> float:
        """Budget left relative to its limit, in [0, 1] (1: nothing limits it)."""
        return self.store.view(name, now).headroom if name in self.limited_names else 1.0

    def _refresh(self, name: str, now: float) -> None:
        """Stop consulting a provider the store says nothing limits."""
        if self.store.unlimited(name, now):
            self.limited_names.discard(name)

    # -- one call ------------------------------------------------------------------------

    def cost(self, call: QuotaCall, config: ProviderConfig) -> Cost:
        """What an attempt of ``call`` reserves at ``config``'s provider (cached per model)."""
        key = (config.model, config.default_max_tokens)
        costs = call.costs
        if costs is None:
            costs = call.costs = {}
        else:
            cached = costs.get(key)
            if cached is not None:
                return cached
        prompt = self.estimator(call.request, config.model)
        if isinstance(prompt, bool) or not isinstance(prompt, int) or prompt < 0:
            raise TypeError(f"token estimator returned {prompt!r}, not a non-negative int")
        cost = Cost(prompt, completion_reservation(call.request, config.default_max_tokens))
        costs[key] = cost
        return cost

    def admissible(self, pool: Sequence[_C], call: QuotaCall, now: float) -> list[_C] | Wait:
        """The candidates whose budgets admit ``call`` now, or a `Wait` if none does."""
        limited = self.limited_names
        out: list[_C] = []
        verdicts = None
        for candidate in pool:
            if candidate.name not in limited:
                out.append(candidate)
                continue
            verdict = self.store.earliest(
                candidate.name, self.cost(call, candidate.provider_config), now
            )
            if verdict.admits(now):
                out.append(candidate)
            else:
                if verdicts is None:
                    verdicts = {}
                verdicts[candidate.name] = verdict
        if out or verdicts is None:
            return out
        at = math.inf
        fits = False
        reasons: dict[str, tuple[str, float]] = {}
        for name, verdict in verdicts.items():
            reasons[name] = (verdict.reason or "quota", verdict.at if verdict.fits else math.inf)
            if verdict.fits:
                fits = True
                at = min(at, verdict.at)
        return Wait(at, fits, reasons)

    def reserve(self, candidate: QuotaCandidate, call: QuotaCall, now: float) -> bool:
        """Take the call's cost at ``candidate``; False if it was refused.

        A remote store only records a claim here (an unconfirmed reservation, id 0):
        the provider's worker confirms it with `confirm` right before sending.
        """
        name = candidate.name
        call.reservation = None
        if name not in self.limited_names:
            return True
        cost = self.cost(call, candidate.provider_config)
        if not self.store.local:
            call.reservation = self.store.claim(name, cost, now)
            return True
        admission = self.store.reserve_nowait(name, cost, now)
        call.reservation = admission.reservation
        return admission.reservation is not None

    @staticmethod
    def unconfirmed(call: QuotaCall) -> bool:
        """The call holds a claim a remote store has not confirmed yet."""
        reservation = call.reservation
        return reservation is not None and reservation.id == 0

    async def confirm(self, call: QuotaCall, now: float) -> bool:
        """Turn the call's claim into a reservation: the remote store's one round trip.

        False: refused (the store now knows when the provider admits again, and has
        told the dispatcher); the call must be routed again. If the wait is cancelled
        the claim is settled by the store and the call holds nothing.
        """
        claim = call.reservation
        assert claim is not None
        call.reservation = None  # a cancelled round trip leaves nothing to refund here
        admission = await self.store.reserve(claim.provider, claim.cost, now)
        call.reservation = admission.reservation
        if admission.reservation is None:
            return False
        if admission.at > trio.current_time():
            # The store booked a slot ahead (the shared window's next one): send then.
            await trio.sleep_until(admission.at)
        return True

    def health(self, provider: str, reason: str, seconds: float, now: float) -> None:
        """A provider left rotation here for ``seconds`` (or came back, ``<= 0``)."""
        if not self.store.local:
            self.store.report_health(provider, reason, seconds, now)

    def sent(self, call: QuotaCall, now: float) -> None:
        """The call's attempt went out now: its window entry counts from now."""
        reservation = call.reservation
        if reservation is not None:
            self.store.mark_sent(reservation, now)

    def settle(
        self,
        call: QuotaCall,
        usage: Usage | None,
        observation: Observation | None,
        now: float,
        *,
        provider: str,
    ) -> None:
        """Settle the call's reservation: real usage (``None``: it failed) and the headers."""
        reservation = call.reservation
        call.reservation = None
        if (
            observation is not None
            and observation.retry_after is not None
            and observation.retry_after > self.max_retry_after
        ):
            observation = msgspec.structs.replace(observation, retry_after=self.max_retry_after)
        used = None
        if usage is not None and usage.total_tokens > 0:
            used = Cost(usage.prompt_tokens, usage.completion_tokens)
        elif usage is not None and reservation is not None:
            used = reservation.cost  # an answer without usage: keep the estimate
        if reservation is not None:
            self.store.reconcile_nowait(reservation, used, now, observation)
        elif observation is not None and provider in self.limited_names:
            self.store.observe_nowait(provider, observation, now)
        elif observation is not None:
            # A provider we had stopped consulting reports a budget: consult it again.
            self.limited_names.add(provider)
            self.store.observe_nowait(provider, observation, now)
        if reservation is not None or observation is not None:
            self._refresh(provider, now)

    # -- explaining a refusal ------------------------------------------------------------

    def refusal(self, wait: Wait, now: float, *, why: str) -> LoadBalancerError:
        """The error for a call no provider admits and that will not wait."""
        if not wait.fits:
            parts = ", ".join(f"{name}: {reason}" for name, (reason, _) in wait.reasons.items())
            return LoadBalancerError(
                f"Request too large for every provider's budget ({parts}): it can never fit"
            )
        parts = ", ".join(
            f"{name}: {reason} "
            + ("until an answer arrives" if at == math.inf else f"refills in {at - now:.3g}s")
            for name, (reason, at) in wait.reasons.items()
        )
        retry_after = None if wait.at == math.inf else max(0.0, wait.at - now)
        return RateLimitedError(
            f"Rate limited ({why}): no provider's budget admits the request now ({parts})",
            retry_after=retry_after,
            budgets={name: reason for name, (reason, _) in wait.reasons.items()},
        )
