"""The dispatcher actor: the only owner of strategy state; it decides where each attempt goes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from .._errors import (
    ALL_REFUSED,
    BalancerClosedError,
    LLMError,
    LoadBalancerError,
    OverloadedError,
    StrategyError,
)
from .._outlier import in_panic
from .._quota._gate import Wait
from ._call import NEEDS_IMAGES, NEEDS_TOOLS, Call

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from .._quota._gate import QuotaGate
    from ..strategies import Strategy
    from .provider import ProviderActor

__all__ = ["Dispatcher"]

_TOOLS_OR_IMAGES = NEEDS_TOOLS | NEEDS_IMAGES


class _Saturated:
    """Every candidate's mailbox is full: wait for room."""


_SATURATED = _Saturated()


class _Refused:
    """Every candidate refused requests (401/403/404) and is cooling down."""

    def __init__(self, actors: list[ProviderActor]) -> None:
        self.actors = actors


class Dispatcher:
    """Receives calls from callers and forwards each to one provider's mailbox.

    Candidates for an attempt are the providers in rotation that can take it
    (streaming-capable for streams, under their per-provider attempt cap) and
    are admissible (circuit available, no Retry-After pending, not ejected as
    an outlier), preferring ones this request has not tried yet, with mailbox
    room. If fewer than half the providers in rotation are admissible,
    ejections are ignored (the panic threshold): traffic spreads over the
    ejected providers rather than piling onto the few left. When none is
    admissible, the least recently failed one is tried rather than failing
    without trying, unless it refused requests (401/403/404: see
    `ProviderActor.refusal`): a refusal is not retried, and when every
    candidate refused, the call fails at once with their reasons instead of
    being sent. When all have full mailboxes, the dispatcher stops
    receiving until a worker frees room: callers then wait on the bounded
    dispatcher mailbox (backpressure). While it is idle, a new call is routed
    in the caller's task instead (`route_now`). The request loop reaches it
    through the `Routing` interface only.

    With quotas on (``quota``, a `QuotaGate`), candidates are first narrowed to
    the providers whose budgets admit the call now; the strategy picks among
    those and the pick's budget is reserved. When none admits it, the call waits
    here, at the head of the queue (so waiting calls go in arrival order), until
    the earliest refill or a change (an answer, a refund, a provider added or
    removed), its deadline, or its caller giving up; it fails at once with
    `RateLimitedError` when it may not wait (``on_overload="fail"``, or the
    refill comes after its deadline). Strictly private.
    """

    def __init__(
        self,
        strategy: Strategy,
        queue_size: int,
        quota: QuotaGate | None = None,
        *,
        fail_fast: bool = False,
    ) -> None:
        self.strategy = strategy
        self._send, self._recv = trio.open_memory_channel[Call](queue_size)
        self.rotation: list[ProviderActor] = []
        self._capacity = trio.Event()
        self._waiting = False
        self._idle = False  # parked on an empty queue: nothing is ahead of a new call
        # Until then some provider may be ejected: routes check the panic threshold.
        self.ejections_until = float("-inf")
        self.quota = quota
        self._fail_fast = fail_fast
        self._quota_wait: Wait | None = None  # set by _step when the head call must wait
        if quota is not None:
            quota.store.subscribe(self.notify_capacity)

    def set_rotation(self, actors: list[ProviderActor]) -> None:
        """The supervisor's current providers in rotation, in config order."""
        self.rotation = actors
        self.notify_capacity()

    def notify_capacity(self) -> None:
        if self._waiting:
            self._capacity.set()

    def route_now(self, call: Call) -> bool:
        """Route ``call`` now, in the caller's task, if the dispatcher is idle.

        With nothing queued ahead and nothing waiting for room, running the
        dispatch step here decides exactly what the dispatcher task would (same
        code, same single thread, same order) and saves a hand-off through the
        queue and a scheduler pass. False means the call must go through the
        queue (`route_queued`).
        """
        if not self._idle:
            return False
        if self._step(call):
            return True
        self._idle = False  # saturated: the call queues, and later ones queue behind it
        return False

    async def route_queued(self, call: Call, *, wait: bool) -> None:
        """Through the queue: the dispatcher is busy, or every mailbox is full.

        Not a checkpoint when it does not wait: the caller parks on its call next.
        """
        self._idle = False  # later callers must queue behind this one
        try:
            if wait:
                await self._send.send(call)
                return
            try:
                self._send.send_nowait(call)
            except trio.WouldBlock:
                raise OverloadedError(
                    "Overloaded: the dispatcher queue is full (on_overload='fail')"
                ) from None
        except trio.ClosedResourceError:
            # Shutdown closed the queue, maybe while this caller waited for room in it.
            raise BalancerClosedError("the balancer is closed") from None

    def close(self) -> None:
        """Shutdown: the queue takes no more calls; callers blocked on it are woken."""
        self._send.close()

    @property
    def queue_length(self) -> int:
        """Calls waiting in the dispatcher's queue."""
        return self._send.statistics().current_buffer_used

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        recv = self._recv
        task_status.started()
        while True:
            try:
                try:
                    call = recv.receive_nowait()
                except trio.WouldBlock:
                    self._idle = True
                    try:
                        call = await recv.receive()
                    finally:
                        self._idle = False
            except trio.EndOfChannel:
                return  # shutdown closed the queue; the balancer resolved what it held
            await self._dispatch(call)

    async def _dispatch(self, call: Call) -> None:
        while not call.abandoned and not self._step(call):
            self._waiting = True
            self._capacity = trio.Event()
            wait, self._quota_wait = self._quota_wait, None
            if wait is None:
                await self._capacity.wait()
            else:
                await self._wait_for_budget(call, wait.at)
            self._waiting = False
        if call.waiting_since is not None:  # its caller gave up while it waited
            self._end_wait(call, trio.current_time())

    async def _wait_for_budget(self, call: Call, until: float) -> None:
        """Until a budget may admit ``call`` (``until``, or a change), or its caller gives up.

        The call's scope is the wait's: the caller abandoning the call cancels it.
        """
        with trio.CancelScope(deadline=until) as scope:
            call.scope = scope
            try:
                await self._capacity.wait()
            finally:
                call.scope = None

    def _step(self, call: Call) -> bool:
        """Route ``call`` once; False if it must wait (mailboxes full, or no budget admits it)."""
        now = trio.current_time()
        try:
            choice = self.route(call, now)
        except StrategyError as exc:
            call.resolve(call.attempt, exc)
            return True
        if isinstance(choice, _Saturated):
            return False
        if isinstance(choice, _Refused):
            reasons = "; ".join(str(a.refusal) for a in choice.actors)
            call.resolve(call.attempt, LoadBalancerError(f"{ALL_REFUSED}: {reasons}"))
            return True
        if isinstance(choice, Wait):
            return self._must_wait(call, choice)
        if choice is None:
            call.resolve(
                call.attempt,
                LoadBalancerError(
                    "No provider available: every provider is removed, disabled, at its "
                    "attempt limit or misconfigured for this request"
                    + (" or cannot stream" if call.stream else "")
                    + (
                        " or cannot take its tools or images"
                        if call.needs & _TOOLS_OR_IMAGES
                        else ""
                    )
                ),
            )
            return True
        quota = self.quota
        if quota is not None and (quota.limited_names or call.waiting_since is not None):
            self._admit(choice, call, now)
        choice.enqueue(call, now)
        return True

    def _must_wait(self, call: Call, wait: Wait) -> bool:
        """No budget admits ``call`` now: fail it at once, or leave it waiting (False)."""
        quota = self.quota
        assert quota is not None
        now = trio.current_time()
        why = None
        if not wait.fits:
            why = "too large"
        elif self._fail_fast:
            why = "on_overload='fail'"
        elif call.deadline < wait.at < math.inf:
            # (A wait for an answer, ``inf``, may end before the deadline: it waits.)
            why = "the request's deadline comes before any refill"
        if why is not None:
            if wait.fits:
                quota.refused += 1
            self._end_wait(call, now)
            call.resolve(call.attempt, quota.refusal(wait, now, why=why))
            return True
        if call.waiting_since is None:
            call.waiting_since = now
        self._quota_wait = wait
        return False

    def _admit(self, choice: ProviderActor, call: Call, now: float) -> None:
        """Reserve the pick's budget; count a wait that ends here."""
        assert self.quota is not None
        self.quota.reserve(choice, call, now)
        if call.waiting_since is not None:
            choice.stats.throttled += 1
            self._end_wait(call, now)

    def _end_wait(self, call: Call, now: float) -> None:
        since = call.waiting_since
        if since is not None and self.quota is not None:
            call.waiting_since = None
            self.quota.waits += 1
            self.quota.wait_seconds += now - since

    def route(self, call: Call, now: float) -> ProviderActor | _Saturated | _Refused | Wait | None:
        """The provider for this attempt; `None` if there is none at all."""
        quota = self.quota
        if (
            call.assigned == 0
            and now >= self.ejections_until
            and (quota is None or not quota.limited_names)
        ):
            # A first attempt, no ejection in force, no budget to check: every provider is
            # eligible and untried (for a stream, tools or images, every one that can take
            # them; an attempt cap is at least 1).
            needs = call.needs
            if needs:
                ready = [
                    a
                    for a in self.rotation
                    if not needs & ~a.accepts and a.queued < a.mailbox_size and a.available(now)
                ]
            else:
                ready = [a for a in self.rotation if a.queued < a.mailbox_size and a.available(now)]
            if ready:
                return self.strategy.select(ready)  # type: ignore[return-value]
        return self._route_carefully(call, now)

    def _route_carefully(
        self, call: Call, now: float
    ) -> ProviderActor | _Saturated | _Refused | Wait | None:
        """`route` for retries, while an ejection is in force, with budgets to check, and
        when none is ready."""
        panic = now < self.ejections_until and self._in_panic(now)
        eligible: list[ProviderActor] = []
        admissible: list[ProviderActor] = []
        untried: list[ProviderActor] = []
        refused: list[ProviderActor] = []
        for actor in self.rotation:  # one pass: streams and retries all come this way
            if actor.refusal is not None and call.attempts_at(actor.name):
                refused.append(actor)  # it refused this very request: never again
                continue
            if not _can_take(actor, call):
                continue
            eligible.append(actor)
            if actor.available_in_panic(now) if panic else actor.available(now):
                admissible.append(actor)
                if not call.attempts_at(actor.name):
                    untried.append(actor)
        if not eligible:
            return _Refused(refused) if refused else None
        if admissible:
            pool = untried or admissible
        else:
            # None is admissible: the least recently failed one (untried first) may be back,
            # unless it refused requests (then retrying there cannot help).
            pool = [a for a in eligible if not call.attempts_at(a.name)] or eligible
            standing = [a for a in pool if a.refusal is None]
            if not standing:
                return _Refused(refused + pool)
            pool = [min(standing, key=lambda a: (a.circuit.last_failure_time, a.index))]
        quota = self.quota
        if quota is not None and quota.limited_names:
            admitted = self._within_budget(pool, call, now)
            if admitted is None or isinstance(admitted, Wait):
                return _SATURATED if admitted is None else admitted
            pool = admitted
        with_room = [a for a in pool if a.queued < a.mailbox_size]
        if not with_room:
            return _SATURATED
        return self.strategy.select(with_room)  # type: ignore[return-value]

    def _within_budget(
        self, pool: list[ProviderActor], call: Call, now: float
    ) -> list[ProviderActor] | Wait | None:
        """Those of ``pool`` whose budgets admit ``call`` now (a `Wait` if none does; None
        if every one that does is budgeted and has no free worker)."""
        quota = self.quota
        assert quota is not None
        admitted = quota.admissible(pool, call, now)
        if isinstance(admitted, Wait):
            return admitted
        # A budgeted attempt goes to a free worker at once, never into a mailbox: a
        # queue would delay its send and bunch it with later ones, past the window.
        free = [
            a
            for a in admitted
            if a.in_flight < a.provider_config.max_concurrency or not quota.limited(a.name)
        ]
        return free or None

    def _in_panic(self, now: float) -> bool:
        admissible = sum(1 for a in self.rotation if a.available(now))
        return in_panic(admissible, len(self.rotation))

    def admissible_count(self, now: float) -> int:
        """Providers in rotation that may take an attempt now (ejections count)."""
        return sum(1 for a in self.rotation if a.available(now))

    def note_ejection(self, until: float) -> None:
        """A provider was ejected until ``until``: routes check the panic threshold till then."""
        self.ejections_until = max(self.ejections_until, until)

    def route_hedge(
        self, call: Call, exclude: Collection[str], pay: Callable[[], bool]
    ) -> ProviderActor | None:
        """Send a hedge of a request now, in the caller's task, if some provider can take it.

        Only an admissible provider with mailbox room that is not in ``exclude``
        (those running the request) qualifies; a saturated fleet is not hedged.
        ``pay`` (the hedge budget) is asked only once there is somewhere to go;
        None if there was not, or it said no.
        """
        now = trio.current_time()
        panic = now < self.ejections_until and self._in_panic(now)
        ready = [
            a
            for a in self.rotation
            if a.name not in exclude
            and _can_take(a, call)
            and a.queued < a.mailbox_size
            and (a.available_in_panic(now) if panic else a.available(now))
        ]
        quota = self.quota
        if ready and quota is not None and quota.limited_names:
            admitted = self._within_budget(ready, call, now)
            ready = [] if admitted is None or isinstance(admitted, Wait) else admitted
        if not ready:
            return None  # a hedge never waits for a budget: the request's own attempt runs
        untried = [a for a in ready if not call.attempts_at(a.name)]
        try:
            choice: ProviderActor = self.strategy.select(untried or ready)  # type: ignore[assignment]
        except StrategyError:
            return None  # the request's own attempt goes on; a hedge is optional
        if not pay():
            return None
        if quota is not None and quota.limited_names:
            quota.reserve(choice, call, now)
        choice.enqueue(call, now)
        return choice

    def earliest_retry_wait(self, call: Call, now: float) -> float:
        """Seconds until some eligible provider's Retry-After has passed (0 if one is ready)."""
        best = float("inf")
        for actor in self.rotation:
            if not _can_take(actor, call):
                continue
            best = min(best, max(0.0, actor.retry_after_until - now))
            if best == 0.0:
                return 0.0
        return 0.0 if best == float("inf") else best


def _can_take(actor: ProviderActor, call: Call) -> bool:
    """May ``actor`` get an attempt of ``call`` at all (streaming, tools, images, its
    attempt cap, and no failure there that another attempt would only repeat)?"""
    if call.needs & ~actor.accepts:
        return False  # a stream, tools or images this provider cannot take
    cap = actor.max_attempts
    if cap is not None and call.attempts_at(actor.name) >= cap:
        return False
    errors = call.errors
    return not errors or not any(_repeats_at(error, actor.name) for error in errors)


def _repeats_at(error: LLMError, provider: str) -> bool:
    """A failure at ``provider`` that no retry there can fix: a misconfiguration found
    without any HTTP answer (a certificate that does not verify, a proxy refusing us,
    a content coding we cannot decode). Such a request fails over, never retries there."""
    return (
        error.provider == provider
        and error.disables_provider
        and not error.retryable
        and error.status is None
    )
