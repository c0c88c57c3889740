"""The envelope a request travels in, with its one-shot reply slot per attempt.

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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import trio

from .._chat import ImagePart
from .._errors import LLMError, LoadBalancerError
from .._models import LLMRequest, LLMResponse

if TYPE_CHECKING:
    from ._stream import StreamHandle

__all__ = ["NEEDS_IMAGES", "NEEDS_TOOLS", "Call", "NeedfulCall", "Outcome", "Reroute", "needs_of"]

NEEDS_TOOLS = 1
"""The request offers tools or carries tool turns."""
NEEDS_IMAGES = 2
"""The request carries an image part."""


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
        "outcome",
        "provider",
        "request",
        "scope",
        "stream",
        "waiter",
    )

    needs = 0
    """`NEEDS_TOOLS` / `NEEDS_IMAGES` bits; a class default, so a text request pays nothing."""

    def __init__(self, request: LLMRequest, *, stream: bool = False) -> None:
        self.request = request
        self.stream = stream
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

    async def wait(self) -> Outcome:
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


class NeedfulCall(Call):
    """A call whose request only some providers can take (tools, images)."""

    __slots__ = ("needs",)

    def __init__(self, request: LLMRequest, needs: int, *, stream: bool = False) -> None:
        super().__init__(request, stream=stream)
        self.needs = needs
