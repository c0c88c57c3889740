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

    from .._config import BalancerConfig

__all__ = ["RequestLoop", "Routing"]

_TOOLS_OR_IMAGES = NEEDS_TOOLS | NEEDS_IMAGES

#: The deadline of a request without a timeout (one shared object, none per request).
_NO_DEADLINE = nullcontext()

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
        limit = timeout if timeout is not None else self._request_timeout
        if limit is not None:
            call.deadline = start + limit
        self._requests += 1
        self._calls.add(call)
        outcome: LLMResponse | StreamHandle | None = None
        try:
            with _NO_DEADLINE if limit is None else trio.move_on_after(limit):
                call.next_attempt()
                if not self._routing.route_now(call):
                    await self._routing.route_queued(call, wait=self._wait_for_room)
                if call.outcome is None:
                    call.waiter = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(call)
                else:
                    await trio.lowlevel.checkpoint()
                first = call.outcome
                if isinstance(first, LLMResponse):
                    outcome = _answered(call, first, start, attempts=1)
                elif isinstance(first, StreamHandle):
                    outcome = first
                else:
                    outcome = await self._retry(call, start)
            if outcome is None:
                call.abandon()
                errors = call.errors or []
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

    async def _retry(self, call: Call, start: float) -> LLMResponse | StreamHandle:
        """Judge the current attempt's failure; retry, fail over or give up."""
        config = self._balancer_config
        errors = call.errors = []
        retries = 0
        reroutes = 0
        while True:
            outcome = call.outcome
            if isinstance(outcome, LLMResponse):
                return _answered(call, outcome, start, attempts=len(errors) + 1)
            if isinstance(outcome, StreamHandle):
                return outcome
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
                self._retries += 1
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
