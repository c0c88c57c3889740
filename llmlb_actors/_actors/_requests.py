"""The request loop: submit a call, wait for its attempt, retry, fail over or re-route.

It runs in the caller's task (no extra hop): the caller routes its call through
the dispatcher (`Routing`), parks until a provider worker resolves the attempt,
and only if that attempt did not answer enters the retry loop, which judges the
failure, backs off and submits again. Every outcome is counted once in the
balancer's totals.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Protocol

import msgspec
import trio

from .._backoff import compute_backoff
from .._errors import BalancerClosedError, LLMError, LoadBalancerError
from .._models import LLMRequest, LLMResponse
from .._stats import BalancerTotals
from ._call import NEEDS_IMAGES, NEEDS_TOOLS, Call, Reroute, StreamHandle, call_for

if TYPE_CHECKING:
    import random
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from .._config import BalancerConfig

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


def _until(call: Call) -> AbstractContextManager[object]:
    """A cancel scope at the call's deadline, for the paths that wait longer than one
    attempt (queued for the dispatcher, backing off, retrying)."""
    return _NO_DEADLINE if call.deadline == _NEVER else trio.move_on_at(call.deadline)


def _answered(call: Call, response: LLMResponse, start: float, *, attempts: int) -> LLMResponse:
    """The response as the caller gets it: which provider, how long, how many attempts."""
    answered = msgspec.structs.replace(
        response,
        provider=call.provider or "",
        latency=trio.current_time() - start,
        attempts=attempts,
    )
    metadata = call.request.metadata
    if metadata is not None:  # the caller's labels come back; they were never sent
        answered = msgspec.structs.replace(answered, metadata=metadata)
    return answered


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
        self._calls: set[Call] = set()
        self.closed = False
        self._requests = 0
        self._succeeded = 0
        self._failed = 0
        self._retries = 0
        self._rerouted = 0

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
                    outcome = _answered(call, first, start, attempts=1)
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
        config = self._balancer_config
        errors = call.errors = []
        retries = 0
        reroutes = 0
        # A retry is counted in the totals (progress lines show them) when its outcome is
        # in, or the request ends, and only if it went to a provider (``call.assigned``
        # grew): one failed unsent because every provider refused, or cancelled before
        # it went (a batch stopping), was not made.
        decided_at: int | None = None
        try:
            while True:
                outcome = call.outcome
                if decided_at is not None:
                    if isinstance(outcome, Reroute):
                        decided_at = call.assigned  # handed back unrun: counts when it goes
                    else:
                        if call.assigned > decided_at:
                            self._retries += 1
                        decided_at = None
                if isinstance(outcome, LLMResponse):
                    return _answered(call, outcome, start, attempts=len(errors) + 1)
                if isinstance(outcome, StreamHandle):
                    return outcome
                if trio.current_time() >= call.deadline:
                    if isinstance(outcome, LLMError):
                        errors.append(outcome)
                    return None  # out of time: no judging, no retry
                if isinstance(outcome, LoadBalancerError):
                    outcome.errors = errors + outcome.errors
                    raise outcome
                if isinstance(outcome, Reroute) or (
                    isinstance(outcome, LLMError) and outcome.kind == "crash"
                ):
                    if isinstance(outcome, LLMError):
                        errors.append(outcome)
                    if not isinstance(outcome, Reroute) or outcome.counted:
                        reroutes += 1
                        self._rerouted += 1
                    if reroutes > _MAX_REROUTES:
                        raise LoadBalancerError("All providers failed: too many re-routes", errors)
                else:
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
                    if retries >= config.max_retries:
                        raise LoadBalancerError(
                            f"All providers failed after {len(errors)} attempts", errors
                        )
                    retries += 1
                    decided_at = call.assigned
                    # After a refusal (401/403/404) fail over at once: the next provider
                    # is not the one that refused us.
                    if not outcome.disables_provider:
                        wait = max(
                            compute_backoff(
                                retries, config.retry_delay, config.max_retry_delay, self._rng
                            ),
                            self._routing.earliest_retry_wait(call, trio.current_time()),
                        )
                        if wait > 0:
                            await trio.sleep(wait)
                if self.closed:
                    raise BalancerClosedError("the balancer is closed")
                call.next_attempt()
                if not self._routing.route_now(call):
                    await self._routing.route_queued(call, wait=self._wait_for_room)
                await call.wait_outcome()
        finally:
            if decided_at is not None and call.assigned > decided_at:
                self._retries += 1  # went, then the request ended (cancelled, closed)

    def totals(self) -> BalancerTotals:
        """Balancer-wide counters."""
        return BalancerTotals(
            requests=self._requests,
            succeeded=self._succeeded,
            failed=self._failed,
            in_flight=len(self._calls),
            retries=self._retries,
            rerouted=self._rerouted,
        )

    def close(self) -> None:
        """Shutdown: refuse new requests and end every one in flight with `BalancerClosedError`."""
        self.closed = True
        for call in list(self._calls):
            call.resolve(call.attempt, BalancerClosedError("the balancer was shut down"))
            call.abandon()
        self._routing.close()
