"""The `QuotaStore` seam and the in-process store behind it.

The balancer never touches a budget directly: it asks its store. The
in-process store keeps every budget in this process (the default); a store
shared by several balancers (a Redis one, say) implements the same interface
and no actor changes.

The contract, for implementers:

- **Clock.** Every method takes ``now``, the caller's clock
  (``trio.current_time()``), and answers in it. A shared store keeps its own
  clock (the server's) and converts: it reports waits relative to ``now``.
- **One round trip per decision.** `reserve` checks every budget of one
  provider and, if all admit the cost, takes it — atomically, in one step (one
  script call for a server-side store). `reconcile` settles one attempt and
  folds in what its response said (one more). `observe` is for answers that
  had no reservation. `mark_sent` (the request went out, after any connection
  set-up) never blocks: a shared store may record it locally and send it with
  the reconcile, or ignore it and rely on its window guard.
- **Local reads never block.** `earliest` and `view` answer from what this
  process last knew (for a shared store: the last server reply plus its own
  reservations since). The dispatcher filters candidates with them; only
  `reserve` is authoritative, and a shared store may refuse what `earliest`
  promised (another balancer got there first): the request is then routed
  again.
- **In-process fast path.** A store whose state lives in this process sets
  ``local = True`` and implements the ``*_nowait`` twins; the balancer then
  decides inline, without a task switch. A remote store leaves `reserve_nowait`
  raising; its ``reconcile_nowait``/``observe_nowait`` (the settling path, which
  the provider actors call synchronously) queue the round trip in the background.
- **Remote admission.** A store that is not ``local`` decides in two halves: the
  dispatcher `claim`s on its pick (never blocks), and the provider's worker
  calls `reserve` (the one round trip) right before sending; a refusal sends the
  call back to the dispatcher. `report_health` publishes an open circuit or a
  refusal to the other balancers, and `run` is the store's own task.
- **Change notification.** `subscribe` registers a callback the store calls
  when a budget may admit sooner than it said (a refund, an answer ending a
  probe, a removed provider): waiting requests re-check then rather than at
  their deadline.
"""

from __future__ import annotations

import abc
import itertools
import math
from typing import TYPE_CHECKING, ClassVar

import trio

from ._budget import ProviderBudget
from ._types import Admission, Cost, Limits, Observation, QuotaView, Reservation

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_WINDOW_GUARD", "InProcessQuotaStore", "QuotaStore"]

#: How much longer than 1 s the balancer's request window is, by default: a request
#: that reaches the provider up to this much later than the one sent a window after
#: it (scheduling, the network) still lands in a window the provider accepts. Costs up
#: to 5 % of the rate while requests queue for a budget. 20 ms let one 429 in 8,000
#: through on a loaded 2-core machine; pass `InProcessQuotaStore(window_guard=...)`
#: as `BalancerConfig.quota_store` to trade it differently.
DEFAULT_WINDOW_GUARD = 0.05


class QuotaStore(abc.ABC):
    """Where budgets live: reserve, reconcile, observe, and the earliest admission time.

    See the module documentation for the contract. Provider names are the
    balancer's; a store shared by several fleets namespaces its keys itself.
    """

    local: ClassVar[bool] = False
    """True when every method answers from this process's memory (``*_nowait`` work)."""

    # -- configuration (local, never blocks) -------------------------------------------------

    @abc.abstractmethod
    def configure(self, provider: str, limits: Limits, now: float, *, probe: bool = False) -> None:
        """Set a provider's configured limits (again); learned state and usage are kept.

        ``probe``: until an answer arrives, admit one attempt at a time (limits unknown).
        A shared store sends the limits along with each reservation: no round trip here.
        """

    @abc.abstractmethod
    def forget(self, provider: str) -> None:
        """The provider was removed: drop what is kept for it (a shared store: locally)."""

    @abc.abstractmethod
    def providers(self) -> list[str]:
        """Names configured here, in configuration order."""

    # -- local reads (never block) ------------------------------------------------------------

    @abc.abstractmethod
    def earliest(self, provider: str, cost: Cost, now: float) -> Admission:
        """When ``cost`` would fit at ``provider``, as this process knows it. Reserves nothing."""

    @abc.abstractmethod
    def view(self, provider: str, now: float) -> QuotaView:
        """A snapshot of the provider's budgets for stats and strategies."""

    def unlimited(self, provider: str, now: float) -> bool:
        """True when nothing can refuse ``provider`` now: no limits, none learned, no hold,
        no probe, no reservation outstanding. The balancer then stops consulting the
        store for it until an answer reports a budget. A shared store answers False."""
        return False

    # -- authoritative (one round trip each for a shared store) ------------------------------

    @abc.abstractmethod
    async def reserve(self, provider: str, cost: Cost, now: float) -> Admission:
        """Check every budget and, if all admit ``cost`` now, take it, atomically.

        Granted: ``Admission.reservation`` is set. Refused: ``at`` is the earliest
        time it could be granted (``fits`` false if never).
        """

    @abc.abstractmethod
    async def reconcile(
        self,
        reservation: Reservation,
        used: Cost | None,
        now: float,
        observation: Observation | None = None,
    ) -> None:
        """Settle an attempt: ``used`` is its real usage, ``None`` if it failed.

        Unused tokens are refunded, extra ones charged; a failed attempt refunds
        its completion reservation. ``observation`` (what the response's headers
        said) is folded in in the same step.
        """

    @abc.abstractmethod
    async def observe(self, provider: str, observation: Observation, now: float) -> None:
        """Fold in what a response said about the provider's quota."""

    def claim(self, provider: str, cost: Cost, now: float) -> Reservation:
        """A remote store's first half of a decision: the dispatcher picked ``provider``
        from local reads; the provider's worker calls `reserve` right before sending.

        Never blocks. The store may count the claim (so local reads stop promising room
        already claimed) until `reserve` settles it, or `reconcile` of the returned
        unconfirmed reservation (``id == 0``) releases it. Local stores never get claims.
        """
        return Reservation(provider=provider, id=0, cost=cost, at=now)

    def report_health(self, provider: str, reason: str, seconds: float, now: float) -> None:  # noqa: B027
        """A provider left rotation here (``reason``: ``"circuit"``, ``"disabled"``) for
        ``seconds``, or came back (``seconds <= 0``). A shared store tells the other
        balancers; this one's actors already know.
        """

    def mark_sent(self, reservation: Reservation, now: float) -> None:  # noqa: B027
        """The reserved request's bytes went out now (after any connection set-up).

        The request window should count send times, not admission times: a provider
        counts a request when it arrives. Never blocks; a shared store may ignore it
        (then its window guard must cover the delay) or send it with the reconcile.
        """

    # -- in-process fast path ---------------------------------------------------------------

    def reserve_nowait(self, provider: str, cost: Cost, now: float) -> Admission:
        """`reserve` without a checkpoint; only for ``local`` stores."""
        raise NotImplementedError(f"{type(self).__name__} is not a local store")

    def reconcile_nowait(
        self,
        reservation: Reservation,
        used: Cost | None,
        now: float,
        observation: Observation | None = None,
    ) -> None:
        """`reconcile` without a checkpoint; only for ``local`` stores."""
        raise NotImplementedError(f"{type(self).__name__} is not a local store")

    def observe_nowait(self, provider: str, observation: Observation, now: float) -> None:
        """`observe` without a checkpoint; only for ``local`` stores."""
        raise NotImplementedError(f"{type(self).__name__} is not a local store")

    # -- notification and lifetime ----------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (synchronously, never blocking) when a budget may admit sooner."""
        self._listeners().append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        listeners = self._listeners()
        if callback in listeners:
            listeners.remove(callback)

    def _listeners(self) -> list[Callable[[], None]]:
        listeners: list[Callable[[], None]] | None = self.__dict__.get("_change_listeners")
        if listeners is None:
            listeners = self.__dict__["_change_listeners"] = []
        return listeners

    def notify(self) -> None:
        """Tell subscribers a budget may admit sooner than it said."""
        for callback in list(self._listeners()):
            callback()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The store's own task (connections, heartbeats), run by the balancer for its
        lifetime and cancelled when it closes; ``task_status.started()`` once it may be
        used. In-process stores need none."""
        task_status.started()

    async def aclose(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release connections; the balancer calls it when it closes (if it made the store)."""


class InProcessQuotaStore(QuotaStore):
    """Budgets in this process's memory: the default store.

    Exact for one balancer (nothing else spends the providers' quota); every
    method answers at once. ``window_guard`` is added to the 1-second request
    window (see `DEFAULT_WINDOW_GUARD`).
    """

    local = True

    def __init__(self, *, window_guard: float = DEFAULT_WINDOW_GUARD) -> None:
        if not math.isfinite(window_guard) or not 0.0 <= window_guard < 1.0:
            raise ValueError(f"window_guard must be in [0, 1) s, got {window_guard!r}")
        self.window_guard = window_guard
        self._budgets: dict[str, ProviderBudget] = {}
        self._ids = itertools.count(1)

    # -- configuration ----------------------------------------------------------------------

    def configure(self, provider: str, limits: Limits, now: float, *, probe: bool = False) -> None:
        budget = self._budgets.get(provider)
        if budget is None:
            self._budgets[provider] = ProviderBudget(
                limits, now, window_guard=self.window_guard, probe=probe
            )
        else:
            budget.reconfigure(limits, now)
            budget.probing = budget.probing and probe
        self.notify()

    def forget(self, provider: str) -> None:
        if self._budgets.pop(provider, None) is not None:
            self.notify()

    def providers(self) -> list[str]:
        return list(self._budgets)

    def budget(self, provider: str) -> ProviderBudget | None:
        """The provider's budget object (tests and the simulator's twin use it)."""
        return self._budgets.get(provider)

    # -- reads ------------------------------------------------------------------------------

    def earliest(self, provider: str, cost: Cost, now: float) -> Admission:
        budget = self._budgets.get(provider)
        if budget is None:
            return Admission(at=now)
        return budget.earliest(cost, now)

    def view(self, provider: str, now: float) -> QuotaView:
        budget = self._budgets.get(provider)
        return QuotaView() if budget is None else budget.view(now)

    def unlimited(self, provider: str, now: float) -> bool:
        budget = self._budgets.get(provider)
        return budget is None or budget.unlimited(now)

    # -- decisions --------------------------------------------------------------------------

    def reserve_nowait(self, provider: str, cost: Cost, now: float) -> Admission:
        budget = self._budgets.get(provider)
        reservation_id = next(self._ids)
        reservation = Reservation(provider=provider, id=reservation_id, cost=cost, at=now)
        if budget is None:
            return Admission(at=now, reservation=reservation)
        verdict = budget.earliest(cost, now)
        if not verdict.admits(now):
            return verdict
        budget.reserve(cost, now, reservation_id)
        return Admission(at=now, reservation=reservation)

    def mark_sent(self, reservation: Reservation, now: float) -> None:
        budget = self._budgets.get(reservation.provider)
        if budget is not None:
            budget.sent(reservation.id, now)

    def reconcile_nowait(
        self,
        reservation: Reservation,
        used: Cost | None,
        now: float,
        observation: Observation | None = None,
    ) -> None:
        budget = self._budgets.get(reservation.provider)
        if budget is None:
            return
        # Settle first: the provider's own count (the observation) already includes the
        # real usage, so it must cap our level after the refund, not before it.
        budget.reconcile(reservation.id, used, now)
        if observation is not None:
            budget.observe(observation, now)
        self.notify()

    def observe_nowait(self, provider: str, observation: Observation, now: float) -> None:
        budget = self._budgets.get(provider)
        if budget is not None:
            budget.observe(observation, now)
            self.notify()

    async def reserve(self, provider: str, cost: Cost, now: float) -> Admission:
        return self.reserve_nowait(provider, cost, now)

    async def reconcile(
        self,
        reservation: Reservation,
        used: Cost | None,
        now: float,
        observation: Observation | None = None,
    ) -> None:
        self.reconcile_nowait(reservation, used, now, observation)

    async def observe(self, provider: str, observation: Observation, now: float) -> None:
        self.observe_nowait(provider, observation, now)
