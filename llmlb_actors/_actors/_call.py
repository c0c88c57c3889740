"""The envelope a request travels in, its one-shot reply slot, and the stream it may become.

A `Call` goes caller → dispatcher mailbox → provider mailbox → a worker. The
worker (or the supervisor, if the worker's actor crashed or was removed)
resolves the current attempt exactly once; a late resolution of an older
attempt is ignored.

The reply slot is the call itself: the caller parks its own task with
`trio.lowlevel.wait_task_rescheduled` and the resolver reschedules it. That is
cheaper than a memory-channel pair per request, and than a ``trio.Event``
(an Event, its task set and an abort closure per wait). Every object a call
allocates lives as long as the request, so at thousands in flight each one is
walked by the garbage collector several times: a call allocates as few as it can.

A streamed call resolves to a `StreamHandle`, the caller's end of the chunks
the worker pumps; the handle closes its call when the caller leaves. They name
each other, so they live in one module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import msgspec
import trio

from .._chat import ImagePart
from .._errors import LLMError, LoadBalancerError
from .._models import LLMRequest, LLMResponse, StreamChunk

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "NEEDS_IMAGES",
    "NEEDS_STREAM",
    "NEEDS_TOOLS",
    "Call",
    "Outcome",
    "Reroute",
    "StreamHandle",
    "call_for",
    "needs_of",
]

NEEDS_TOOLS = 1
"""The request offers tools or carries tool turns."""
NEEDS_IMAGES = 2
"""The request carries an image part."""
NEEDS_STREAM = 4
"""The caller streams the answer."""


def needs_of(request: LLMRequest) -> int:
    """What a provider must handle to take ``request`` (0 for text-only requests)."""
    needs = NEEDS_TOOLS if request.tools else 0
    for message in request.messages or ():
        if message.tool_calls or message.role == "tool":
            needs |= NEEDS_TOOLS
        if type(message.content) is not str and any(type(p) is ImagePart for p in message.content):
            needs |= NEEDS_IMAGES
    return needs


class Reroute:
    """The attempt never started (its provider left before running it): route again."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


Outcome = Union[LLMResponse, LLMError, LoadBalancerError, Reroute, "StreamHandle"]


class Call:
    """One request in flight. Strictly private."""

    __slots__ = (
        "_counts",
        "_first",
        "abandoned",
        "assigned",
        "attempt",
        "errors",
        "needs",
        "outcome",
        "provider",
        "request",
        "scope",
        "stream",
        "waiter",
    )

    def __init__(self, request: LLMRequest, *, stream: bool = False) -> None:
        self.request = request
        self.stream = stream
        # What a provider must offer to take this call (NEEDS_* bits): the dispatcher's
        # one check for streaming, tools and images (0: any provider will do).
        self.needs = NEEDS_STREAM if stream else 0
        self.attempt = 0
        self.outcome: Outcome | None = None
        self.assigned = 0  # attempts dispatched so far, re-routes included
        self.provider: str | None = None
        self.scope: trio.CancelScope | None = None
        self.abandoned = False
        self._first: str | None = None
        self._counts: dict[str, int] | None = None  # from the second attempt on
        self.errors: list[LLMError] | None = None  # each failed attempt's, once one failed
        self.waiter: trio.lowlevel.Task | None = None

    def next_attempt(self) -> None:
        """Arm a fresh reply slot; earlier attempts can no longer resolve."""
        self.attempt += 1
        self.outcome = None
        self.provider = None
        self.scope = None

    async def wait_outcome(self) -> Outcome:
        """The current attempt's outcome, once it is resolved (a checkpoint)."""
        if self.outcome is None:
            self.waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self)
        else:
            await trio.lowlevel.checkpoint()
        assert self.outcome is not None
        return self.outcome

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        """The abort function of a waiting caller (``wait_task_rescheduled(call)``):
        it was cancelled, so a later resolution wakes nobody. The call is its own
        abort function so that waiting allocates no bound method."""
        self.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def assign(self, provider: str) -> None:
        """The dispatcher sent this attempt to ``provider``."""
        self.provider = provider
        self.assigned += 1
        if self._first is None:
            self._first = provider
            return
        counts = self._counts
        if counts is None:
            counts = self._counts = {self._first: 1}
        counts[provider] = counts.get(provider, 0) + 1

    def attempts_at(self, provider: str) -> int:
        """How many attempts of this request went to ``provider``."""
        if self._counts is not None:
            return self._counts.get(provider, 0)
        return 1 if provider == self._first else 0

    def resolve(self, attempt: int, outcome: Outcome) -> bool:
        """Deliver ``outcome`` for ``attempt``; False if it was already resolved or is stale."""
        if attempt != self.attempt or self.outcome is not None:
            return False
        self.outcome = outcome
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter)
        return True

    def abandon(self) -> None:
        """The caller gave up: stop the running attempt at once."""
        self.abandoned = True
        if self.scope is not None:
            self.scope.cancel()


class StreamHandle:
    """Chunks of one committed stream, as the caller iterates them.

    The worker that owns the upstream response sends chunks over a small
    memory channel; the first chunk was already read (that is the commit
    point: failover is only possible before it). An error after the commit is
    re-raised as an `LLMError` with ``partial=True`` and the text so far.
    Strictly private; users see it as an async iterator of `StreamChunk`.
    """

    __slots__ = ("_call", "_error", "_first", "_parts", "_recv", "finished", "provider")

    def __init__(
        self,
        first: StreamChunk,
        recv: trio.MemoryReceiveChannel[StreamChunk],
        provider: str,
        call: Call,
    ) -> None:
        self._first: StreamChunk | None = first
        self._recv = recv
        self._call = call
        self._error: LLMError | None = None
        self.provider = provider
        self._parts: list[str] = []  # joined on demand: `text +=` per chunk is quadratic
        self.finished = False
        """Set by the worker when the stream ended completely."""

    def fail(self, error: LLMError) -> None:
        """Set by the worker when the stream broke after the commit."""
        self._error = error

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self

    async def __anext__(self) -> StreamChunk:
        chunk = self._first
        if chunk is not None:
            self._first = None
        else:
            try:
                item = await self._recv.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if self._error is not None:
                    raise self._partial(self._error) from None
                if self.finished:
                    raise StopAsyncIteration from None
                raise self._partial(
                    LLMError(
                        "stream broken: the provider actor stopped before the stream ended",
                        provider=self.provider,
                        retryable=True,
                        kind="crash",
                    )
                ) from None
            chunk = item
        if chunk.delta:
            self._parts.append(chunk.delta)
        return msgspec.structs.replace(chunk, provider=self.provider)

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def _partial(self, error: LLMError) -> LLMError:
        error.partial = True
        error.partial_text = self.text
        if not error.provider:
            error.provider = self.provider
        return error

    def close(self) -> None:
        """Stop the stream: the worker closes the upstream response at once."""
        self._recv.close()
        self._call.abandon()


def call_for(request: LLMRequest, stream: bool) -> Call:
    """The call for ``request``: one that only some providers may take if it has tools or images."""
    call = Call(request, stream=stream)
    call.needs |= needs_of(request)
    return call
