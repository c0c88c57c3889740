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
the worker hands over a read at a time; the handle closes its call when the
caller leaves. They name each other, so they live in one module.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Union

import msgspec
import trio

from .._chat import ImagePart
from .._errors import LLMError, LoadBalancerError
from .._models import LLMRequest, LLMResponse, StreamChunk

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .._quota._types import Cost, Reservation

__all__ = [
    "NEEDS_IMAGES",
    "NEEDS_STREAM",
    "NEEDS_TOOLS",
    "Call",
    "Outcome",
    "Reroute",
    "StreamHandle",
    "Tries",
    "answered",
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
    """The attempt never started (its provider left before running it, or a shared
    budget refused it): route again.

    ``counted`` re-routes are bounded per request; a shared budget's refusal is not
    (the provider is then held until the budget's refill, so it cannot spin).
    """

    __slots__ = ("counted", "reason")

    def __init__(self, reason: str, *, counted: bool = True) -> None:
        self.reason = reason
        self.counted = counted


Outcome = Union[LLMResponse, LLMError, LoadBalancerError, Reroute, "StreamHandle"]


_NO_DEADLINE = float("inf")


class Call:
    """One request in flight. Strictly private."""

    __slots__ = (
        "_counts",
        "_first",
        "abandoned",
        "assigned",
        "attempt",
        "costs",
        "deadline",
        "errors",
        "needs",
        "outcome",
        "provider",
        "request",
        "reservation",
        "scope",
        "stream",
        "waiter",
        "waiting_since",
    )

    #: Set (on a hedged call, `_hedging.HedgedCall`) when another attempt of the same
    #: request answered first and this one is being cancelled: not a failure.
    hedge_lost = False
    #: ... and that attempt was a copy sent after this one (this one was overtaken).
    overtaken = False

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
        # Quota: when the request must have an answer by (its deadline), what it is
        # expected to cost per model, what the running attempt reserved, and since when
        # it has waited for a budget (None while it has not).
        self.deadline = _NO_DEADLINE
        self.costs: dict[tuple[str | None, int | None], Cost] | None = None
        self.reservation: Reservation | None = None
        self.waiting_since: float | None = None

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


_NEVER = sys.maxsize


class StreamHandle:
    """Chunks of one committed stream, as the caller iterates them.

    The worker that owns the upstream response hands over batches: every
    chunk one read of the body completed, in one wake-up of the caller. The
    handle holds the batch being read and room for one more, so the worker
    reads at most one batch ahead (backpressure). The first batch was already
    read (that is the commit point: failover is only possible before it). An
    error after the commit is re-raised as an `LLMError` with
    ``partial=True`` and the text so far. Strictly private; users see it as
    an async iterator of `StreamChunk`.

    When the body has ended, the worker settles the attempt only once the
    caller has taken all but the last chunk (or left), and the caller sees the
    end only after that: a caller that leaves early cancels the stream, whether
    or not its last bytes had arrived, and one that read it all finds the
    attempt settled.
    """

    __slots__ = (
        "_batch",
        "_call",
        "_closed",
        "_complete",
        "_ended",
        "_error",
        "_index",
        "_next",
        "_parts",
        "_waiter",
        "_wake_at",
        "_worker",
        "finished",
        "provider",
    )

    def __init__(self, first: list[StreamChunk], provider: str, call: Call) -> None:
        self._batch = first
        self._index = 0
        self._next: list[StreamChunk] | None = None  # the batch read ahead, if any
        self._waiter: trio.lowlevel.Task | None = None  # the caller, waiting for a batch
        # The worker, waiting for room for a batch or for the caller to take the last;
        # in the second case, woken once the caller takes the chunk at this index.
        self._worker: trio.lowlevel.Task | None = None
        self._wake_at = _NEVER
        self._complete = False  # the body ended normally: every chunk is here
        self._ended = False  # the worker hands over nothing more
        self._closed = False  # the caller left
        self._call = call
        self._error: LLMError | None = None
        self.provider = provider
        self._parts: list[str] = []  # joined on demand: `text +=` per chunk is quadratic
        self.finished = False
        """Set by the worker when the stream ended completely."""

    # -- the worker's side -------------------------------------------------------------

    async def put(self, batch: list[StreamChunk]) -> None:
        """Hand ``batch`` over; waits while the one batch of room is taken.

        Raises:
            trio.ClosedResourceError: the caller left the stream.
        """
        while self._next is not None and not self._closed:
            await self._park()
        if self._closed:
            raise trio.ClosedResourceError
        self._next = batch
        self._wake_caller()

    async def complete(self) -> None:
        """The body ended normally: wait until the caller took all but the last chunk.

        Raises:
            trio.ClosedResourceError: the caller left the stream first.
        """
        self._complete = True
        while self._left() > 1 and not self._closed:
            if self._next is None:  # else taking the next batch wakes us
                self._wake_at = len(self._batch) - 2
            await self._park()
        if self._closed:
            raise trio.ClosedResourceError

    def end(self) -> None:
        """The worker is done (finished, failed or stopped): nothing more comes."""
        self._ended = True
        self._wake_caller()

    def fail(self, error: LLMError) -> None:
        """Set by the worker when the stream broke after the commit."""
        self._error = error

    async def _park(self) -> None:
        self._worker = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_worker)

    def _abort_worker(self, _: object) -> trio.lowlevel.Abort:
        self._worker = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake_caller(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def _wake_worker(self) -> None:
        worker = self._worker
        if worker is not None:
            self._worker = None
            trio.lowlevel.reschedule(worker)

    def _left(self) -> int:
        """Chunks handed over that the caller has not taken yet."""
        left = len(self._batch) - self._index
        return left if self._next is None else left + len(self._next)

    # -- the caller's side -------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self

    async def __anext__(self) -> StreamChunk:
        batch = self._batch
        index = self._index
        if index >= len(batch):
            batch = await self._refill()
            index = 0
        self._index = index + 1
        if index >= self._wake_at:  # all but the last chunk taken: the stream completed
            self._wake_at = _NEVER
            self._wake_worker()
        chunk = batch[index]
        delta = chunk.delta
        if delta:
            self._parts.append(delta)
        if chunk.provider != self.provider:  # built-in protocols stamp it already
            chunk = msgspec.structs.replace(chunk, provider=self.provider)
        return chunk

    async def _refill(self) -> list[StreamChunk]:
        """The next batch (a cancellation point), or the end of the stream."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            batch = self._next
            if batch:
                self._next = None
                self._batch = batch
                self._wake_at = _NEVER
                self._wake_worker()  # room for the next batch (or the last was taken)
                return batch
            if self._ended or self._closed:
                raise self._ending()
            self._wake_worker()  # it waits for this caller to have taken the chunks
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self)

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        """The abort function of the waiting caller (cancelled: nobody to wake)."""
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _ending(self) -> BaseException:
        if self._error is not None:
            return self._partial(self._error)
        if self.finished:
            return StopAsyncIteration()
        return self._partial(
            LLMError(
                "stream broken: the provider actor stopped before the stream ended",
                provider=self.provider,
                retryable=True,
                kind="crash",
            )
        )

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
        self._closed = True
        self._next = None
        self._wake_worker()
        self._call.abandon()


class Tries:
    """Retries and re-routes one request has used."""

    __slots__ = ("decided_at", "reroutes", "retries")

    def __init__(self) -> None:
        self.retries = 0
        self.reroutes = 0
        # ``call.assigned`` when the last retry was decided, until it is counted
        self.decided_at: int | None = None


def answered(call: Call, response: LLMResponse, start: float, *, attempts: int) -> LLMResponse:
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


def call_for(request: LLMRequest, stream: bool) -> Call:
    """The call for ``request``: one that only some providers may take if it has tools or images."""
    call = Call(request, stream=stream)
    call.needs |= needs_of(request)
    return call
