"""The request loop: submit a call, wait for its attempt, retry, fail over or re-route.

It runs in the caller's task (no extra hop): the caller routes its call through
the dispatcher (`Routing`), parks until a provider worker resolves the attempt,
and only if that attempt did not answer enters the retry loop, which judges the
failure, backs off and submits again. Every outcome is counted once in the
balancer's totals.

Retries draw on a retry budget (`.._retry_budget`): every request deposits, every
retry withdraws, so when everything fails at once retries stay a bounded
fraction of the load. The deposit costs the happy path one comparison a request:
requests are counted anyway, and the count is handed to the budgets once a
second (`_deposit`). With `BalancerConfig.hedge`, requests take the hedged path
(`_hedging.run_hedged`) instead.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Protocol

import trio

from .._backoff import compute_backoff
from .._errors import BalancerClosedError, LLMError, LoadBalancerError
from .._models import LLMRequest, LLMResponse
from .._retry_budget import RETRY_FLOOR_PER_SECOND, WindowBudget
from .._stats import BalancerTotals
from ._call import NEEDS_IMAGES, NEEDS_TOOLS, Call, Reroute, StreamHandle, Tries, answered, call_for
from ._hedging import Hedging, run_hedged

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Collection
    from contextlib import AbstractContextManager

    from .._config import BalancerConfig
    from .provider import ProviderActor

__all__ = ["RequestLoop", "Routing"]

_TOOLS_OR_IMAGES = NEEDS_TOOLS | NEEDS_IMAGES

#: The deadline of a request without a timeout (one shared object, none per request).
_NO_DEADLINE = nullcontext()
_NEVER = float("inf")

# Re-routes (a provider crashed or left before running the attempt) do not use
# up retries, but are bounded so that a request always ends.
_MAX_REROUTES = 32


class Routing(Protocol):
    """The dispatcher, as the request loop sees it."""

    def route_now(self, call: Call) -> bool:
        """Route ``call`` in the caller's task if nothing is queued ahead of it.

        False: the call must go through the queue (`route_queued`).
        """
        ...

    async def route_queued(self, call: Call, *, wait: bool) -> None:
        """Put ``call`` in the dispatcher's queue; with ``wait=False`` fail if it is full.

        Raises:
            OverloadedError: the queue is full and ``wait`` is False.
            BalancerClosedError: the queue was closed (shutdown).
        """
        ...

    def earliest_retry_wait(self, call: Call, now: float) -> float:
        """Seconds until some provider that may take ``call`` is past its Retry-After."""
        ...

    def close(self) -> None:
        """Stop taking calls; callers waiting for room in the queue are woken."""
        ...

    def route_hedge(
        self, call: Call, exclude: Collection[str], pay: Callable[[], bool]
    ) -> ProviderActor | None:
        """Route a hedge of a running request now, to a provider not in ``exclude``.

        ``pay`` is asked once a provider is found; None if none was, or it said no.
        """
        ...


def _until(call: Call) -> AbstractContextManager[object]:
    """A cancel scope at the call's deadline, for the paths that wait longer than one
    attempt (queued for the dispatcher, backing off, retrying)."""
    return _NO_DEADLINE if call.deadline == _NEVER else trio.move_on_at(call.deadline)


class RequestLoop:
    """Runs each request to its one outcome, in the task of whoever asked. Strictly private."""

    def __init__(
        self,
        balancer_config: BalancerConfig,
        routing: Routing,
        rng: random.Random,
        *,
        check_needs: Callable[[int], None] | None = None,
    ) -> None:
        self._balancer_config = balancer_config
        # Raises ConfigError when no provider can take a call's tools or images.
        self._check_needs = check_needs
        self._routing = routing
        self._rng = rng
        self._request_timeout = balancer_config.request_timeout
        self._wait_for_room = balancer_config.on_overload == "wait"
        self._calls: set[Call] = set()  # one per request in flight
        self._hedges: set[Call] = set()  # a hedged request's further attempts
        self.closed = False
        self._requests = 0
        self._succeeded = 0
        self._failed = 0
        self._retries = 0
        self._rerouted = 0
        self._retry_refusals = 0
        ratio = balancer_config.retry_budget
        self._retry_budget = (
            None if ratio is None else WindowBudget(ratio, floor_per_second=RETRY_FLOOR_PER_SECOND)
        )
        hedge = balancer_config.hedge
        self.hedging = None if hedge is None else Hedging(hedge)
        self._budgets = [
            b
            for b in (self._retry_budget, None if self.hedging is None else self.hedging.budget)
            if b is not None
        ]
        # Requests handed to the budgets so far, when, and when the next hand-over is due.
        self._deposited = 0
        self._deposited_at = 0.0
        self._deposit_due = float("-inf") if self._budgets else float("inf")

    async def run(
        self, request: LLMRequest, *, stream: bool, timeout: float | None
    ) -> LLMResponse | StreamHandle:
        """Submit, wait, and retry only if the first attempt did not answer.

        Every object this coroutine holds lives as long as the request, and at
        thousands in flight what they cost is mostly the garbage collector
        walking them: the happy path stays in this one frame, with no
        allocation it can avoid.
        """
        if not isinstance(request, LLMRequest):
            raise TypeError(f"request must be an LLMRequest, got {type(request).__name__}")
        if self.closed:
            raise BalancerClosedError("the balancer is closed")
        if self.hedging is not None:
            return await run_hedged(self, request, stream=stream, timeout=timeout)
        if request.tools is None and request.messages is None:
            call = Call(request, stream=stream)  # a prompt: every provider can take it
        else:
            call = call_for(request, stream)
            if call.needs & _TOOLS_OR_IMAGES and self._check_needs is not None:
                self._check_needs(call.needs)
        start = trio.current_time()
        scope: AbstractContextManager[object]
        if timeout is not None:
            limit: float | None = timeout
            scope = trio.move_on_after(timeout)  # the caller's own deadline: exact throughout
        else:
            # The config's deadline costs no cancel scope while the first attempt goes
            # well (one per request was ~25% of this layer's instructions): the worker
            # cuts the attempt at call.deadline, and a scope is armed only on the slow
            # paths (queued, retrying) by _until.
            limit = self._request_timeout
            scope = _NO_DEADLINE
        if limit is not None:
            call.deadline = start + limit
        self._requests += 1
        if start >= self._deposit_due:
            self._deposit(start)
        self._calls.add(call)
        outcome: LLMResponse | StreamHandle | None = None
        first = None
        try:
            with scope:
                call.next_attempt()
                if self._routing.route_now(call):
                    if call.outcome is None:
                        call.waiter = trio.lowlevel.current_task()
                        await trio.lowlevel.wait_task_rescheduled(call)
                    else:
                        await trio.lowlevel.checkpoint()
                else:
                    with _until(call):
                        await self._routing.route_queued(call, wait=self._wait_for_room)
                        await call.wait_outcome()
                first = call.outcome
                if isinstance(first, LLMResponse):
                    outcome = answered(call, first, start, attempts=1)
                elif isinstance(first, StreamHandle):
                    outcome = first
                elif first is not None and trio.current_time() < call.deadline:
                    with _until(call):
                        outcome = await self._retry(call, start)
            if outcome is None:
                call.abandon()
                errors = call.errors or ([first] if isinstance(first, LLMError) else [])
                raise LoadBalancerError(
                    f"Request timed out after {limit:g}s ({len(errors)} attempts failed)", errors
                )
        except BaseException:
            call.abandon()
            self._failed += 1
            raise
        finally:
            self._calls.discard(call)
        self._succeeded += 1
        return outcome

    async def _retry(self, call: Call, start: float) -> LLMResponse | StreamHandle | None:
        """Judge the current attempt's failure; retry, fail over or give up.

        None: the request's deadline passed (the caller raises the timeout error).
        """
        errors = call.errors = []
        tries = Tries()
        try:
            while True:
                outcome = call.outcome
                if tries.decided_at is not None:
                    self.count_retry(call, tries)
                if isinstance(outcome, LLMResponse):
                    return answered(call, outcome, start, attempts=len(errors) + 1)
                if isinstance(outcome, StreamHandle):
                    return outcome
                if trio.current_time() >= call.deadline:
                    if isinstance(outcome, LLMError):
                        errors.append(outcome)
                    return None  # out of time: no judging, no retry
                wait = self.judge(call, errors, tries)
                if wait > 0:
                    await trio.sleep(wait)
                await self.submit_again(call)
                await call.wait_outcome()
        finally:
            if tries.decided_at is not None and call.assigned > tries.decided_at:
                self._retries += 1  # went, then the request ended (cancelled, closed)

    def check_needs(self, needs: int) -> None:
        """Fail at once if no provider could ever take a request with tools or images."""
        if needs & _TOOLS_OR_IMAGES and self._check_needs is not None:
            self._check_needs(needs)

    def count_retry(self, call: Call, tries: Tries) -> None:
        """A retry is counted in the totals (progress lines show them) once its outcome
        is in, and only if it went to a provider (``call.assigned`` grew): one failed
        unsent because every provider refused, or cancelled before it went (a batch
        stopping), was not made; one handed back unrun counts when it goes again."""
        if isinstance(call.outcome, Reroute):
            tries.decided_at = call.assigned
            return
        if tries.decided_at is not None and call.assigned > tries.decided_at:
            self._retries += 1
        tries.decided_at = None

    def judge(self, call: Call, errors: list[LLMError], tries: Tries) -> float:
        """``call``'s attempt did not answer: seconds to wait before trying again.

        Raises the request's final error when there is to be no next attempt.
        """
        config = self._balancer_config
        outcome = call.outcome
        if isinstance(outcome, LoadBalancerError):
            outcome.errors = errors + outcome.errors
            raise outcome
        if isinstance(outcome, Reroute) or (
            isinstance(outcome, LLMError) and outcome.kind == "crash"
        ):
            if isinstance(outcome, LLMError):
                errors.append(outcome)
            if not isinstance(outcome, Reroute) or outcome.counted:
                tries.reroutes += 1
                self._rerouted += 1
            if tries.reroutes > _MAX_REROUTES:
                raise LoadBalancerError("All providers failed: too many re-routes", errors)
            return 0.0
        assert isinstance(outcome, LLMError)
        errors.append(outcome)
        if outcome.kind == "cancelled":
            # This caller is still waiting, so it did not cancel: the actor holding
            # the attempt was stopped because the balancer is shutting down.
            raise BalancerClosedError("the balancer was shut down", errors)
        if not outcome.retryable and not outcome.disables_provider:
            raise LoadBalancerError(
                f"Request rejected by {outcome.provider}: {outcome.message}", errors
            )
        if tries.retries >= config.max_retries:
            raise LoadBalancerError(f"All providers failed after {len(errors)} attempts", errors)
        now = trio.current_time()
        if not self._may_retry(now):
            raise LoadBalancerError(
                f"All providers failed after {len(errors)} attempts: the retry budget is "
                f"exhausted (retries are limited to {config.retry_budget:.0%} of the requests "
                f"of the last 10 s, plus {RETRY_FLOOR_PER_SECOND:g} a second)",
                errors,
            )
        tries.retries += 1
        tries.decided_at = call.assigned  # counted in the totals once it went (count_retry)
        # After a refusal (401/403/404) fail over at once: the next provider
        # is not the one that refused us.
        if outcome.disables_provider:
            return 0.0
        return max(
            compute_backoff(tries.retries, config.retry_delay, config.max_retry_delay, self._rng),
            self._routing.earliest_retry_wait(call, now),
        )

    async def submit_again(self, call: Call) -> None:
        """Route a fresh attempt of ``call``."""
        if self.closed:
            raise BalancerClosedError("the balancer is closed")
        call.next_attempt()
        if not self._routing.route_now(call):
            await self._routing.route_queued(call, wait=self._wait_for_room)

    # -- budgets -------------------------------------------------------------------------

    def _deposit(self, now: float) -> None:
        """Hand the requests counted since the last hand-over to the budgets.

        They all started within a second of the last hand-over (the first one
        later triggers the next), so they are booked then; this one is booked now.
        """
        pending = self._requests - self._deposited
        for budget in self._budgets:
            if pending > 1:
                budget.deposit(self._deposited_at, pending - 1)
            budget.deposit(now, 1)
        self._deposited = self._requests
        self._deposited_at = now
        self._deposit_due = now + 1.0

    def _settle_deposits(self) -> None:
        """Before spending: book the requests counted since the last hand-over."""
        pending = self._requests - self._deposited
        if pending:
            for budget in self._budgets:
                budget.deposit(self._deposited_at, pending)
            self._deposited = self._requests

    def _may_retry(self, now: float) -> bool:
        budget = self._retry_budget
        if budget is None:
            return True
        self._settle_deposits()
        if budget.try_spend(now):
            return True
        self._retry_refusals += 1
        return False

    def may_hedge(self, now: float) -> bool:
        """Take a token of the hedge budget (the hedged path asks once it found a provider)."""
        assert self.hedging is not None
        self._settle_deposits()
        return self.hedging.budget.try_spend(now)

    # -- what a hedged request (`_hedging.run_hedged`) uses ---------------------------

    @property
    def request_timeout(self) -> float | None:
        return self._request_timeout

    def admit(self, call: Call, start: float) -> None:
        self._requests += 1
        if start >= self._deposit_due:
            self._deposit(start)
        self._calls.add(call)

    def track(self, call: Call) -> None:
        self._hedges.add(call)

    def release(self, call: Call) -> None:
        self._calls.discard(call)
        self._hedges.discard(call)

    def count_outcome(self, ok: bool) -> None:
        if ok:
            self._succeeded += 1
        else:
            self._failed += 1

    def route_hedge(
        self, call: Call, exclude: Collection[str], pay: Callable[[], bool]
    ) -> ProviderActor | None:
        if self.closed:
            return None
        return self._routing.route_hedge(call, exclude, pay)

    def totals(self) -> BalancerTotals:
        """Balancer-wide counters."""
        return BalancerTotals(
            requests=self._requests,
            succeeded=self._succeeded,
            failed=self._failed,
            in_flight=len(self._calls),
            retries=self._retries,
            rerouted=self._rerouted,
            retry_budget_refusals=self._retry_refusals,
            hedge_budget_used=0 if self.hedging is None else self.hedging.budget.spent,
            hedge_budget_refusals=0 if self.hedging is None else self.hedging.budget.refused,
        )

    def close(self) -> None:
        """Shutdown: refuse new requests and end every one in flight with `BalancerClosedError`."""
        self.closed = True
        for call in [*self._calls, *self._hedges]:
            call.resolve(call.attempt, BalancerClosedError("the balancer was shut down"))
            call.abandon()
        self._routing.close()
