"""The dispatcher actor: the only owner of strategy state; it decides where each attempt goes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .._errors import BalancerClosedError, LoadBalancerError, OverloadedError, StrategyError
from ._call import NEEDS_IMAGES, NEEDS_TOOLS, Call

if TYPE_CHECKING:
    from ..strategies import Strategy
    from .provider import ProviderActor

__all__ = ["Dispatcher"]

_TOOLS_OR_IMAGES = NEEDS_TOOLS | NEEDS_IMAGES


class _Saturated:
    """Every candidate's mailbox is full: wait for room."""


_SATURATED = _Saturated()


class Dispatcher:
    """Receives calls from callers and forwards each to one provider's mailbox.

    Candidates for an attempt are the providers in rotation that can take it
    (streaming-capable for streams, under their per-provider attempt cap),
    preferring ones this request has not tried yet; among those, the healthy
    ones (circuit available, no Retry-After pending) with mailbox room. When
    none is healthy, the least recently failed one is tried rather than failing
    without trying. When all have full mailboxes, the dispatcher stops
    receiving until a worker frees room: callers then wait on the bounded
    dispatcher mailbox (backpressure). While it is idle, a new call is routed
    in the caller's task instead (`route_now`). The request loop reaches it
    through the `Routing` interface only. Strictly private.
    """

    def __init__(self, strategy: Strategy, queue_size: int) -> None:
        self.strategy = strategy
        self._send, self._recv = trio.open_memory_channel[Call](queue_size)
        self.rotation: list[ProviderActor] = []
        self._capacity = trio.Event()
        self._waiting = False
        self._idle = False  # parked on an empty queue: nothing is ahead of a new call

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
            await self._capacity.wait()
            self._waiting = False

    def _step(self, call: Call) -> bool:
        """Route ``call`` once; False if every candidate's mailbox is full (it must wait)."""
        try:
            choice = self.route(call)
        except StrategyError as exc:
            call.resolve(call.attempt, exc)
            return True
        if isinstance(choice, _Saturated):
            return False
        if choice is None:
            call.resolve(
                call.attempt,
                LoadBalancerError(
                    "No provider available: every provider is removed, disabled, at its "
                    "attempt limit for this request"
                    + (" or cannot stream" if call.stream else "")
                    + (
                        " or cannot take its tools or images"
                        if call.needs & _TOOLS_OR_IMAGES
                        else ""
                    )
                ),
            )
            return True
        choice.enqueue(call, trio.current_time())
        return True

    def route(self, call: Call) -> ProviderActor | _Saturated | None:
        """The provider for this attempt; `None` if there is none at all."""
        now = trio.current_time()
        if call.assigned == 0 and not call.needs:
            pool = self.rotation  # a first attempt: every provider is eligible and untried
        else:
            eligible: list[ProviderActor] = []
            untried: list[ProviderActor] = []
            for actor in self.rotation:
                if not _can_take(actor, call):
                    continue
                eligible.append(actor)
                if not call.attempts_at(actor.name):
                    untried.append(actor)
            pool = untried or eligible
        if not pool:
            return None
        ready = [a for a in pool if a.queued < a.mailbox_size and a.available(now)]
        if ready:
            return self.strategy.select(ready)  # type: ignore[return-value]
        healthy = [a for a in pool if a.available(now)]
        if not healthy:
            healthy = [min(pool, key=lambda a: (a.circuit.last_failure_time, a.index))]
        with_room = [a for a in healthy if a.queued < a.mailbox_size]
        if not with_room:
            return _SATURATED
        return self.strategy.select(with_room)  # type: ignore[return-value]

    def earliest_retry_wait(self, call: Call, now: float) -> float:
        """Seconds until some eligible provider's Retry-After has passed (0 if one is ready)."""
        best = float("inf")
        for actor in self.rotation:
            if not _can_take(actor, call):
                continue
            best = min(best, max(0.0, actor.not_before - now))
            if best == 0.0:
                return 0.0
        return 0.0 if best == float("inf") else best


def _can_take(actor: ProviderActor, call: Call) -> bool:
    """May ``actor`` get an attempt of ``call`` at all (streaming, tools, images, its cap)?"""
    if call.needs & ~actor.accepts:
        return False  # a stream, tools or images this provider cannot take
    cap = actor.max_attempts
    return cap is None or call.attempts_at(actor.name) < cap
