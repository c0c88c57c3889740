"""The envelope a request travels in, with its one-shot reply slot per attempt.

A `Call` goes caller → dispatcher mailbox → provider mailbox → a worker. The
worker (or the supervisor, if the worker's actor crashed or was removed)
resolves the current attempt exactly once; a late resolution of an older
attempt is ignored. This is cheaper than a memory-channel pair per request:
one ``trio.Event`` per attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import trio

from .._errors import LLMError, LoadBalancerError
from .._models import LLMRequest, LLMResponse

if TYPE_CHECKING:
    from ._stream import StreamHandle

__all__ = ["Call", "Outcome", "Reroute"]


class Reroute:
    """The attempt never started (its provider left before running it): route again."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


Outcome = Union[LLMResponse, LLMError, LoadBalancerError, Reroute, "StreamHandle"]


class Call:
    """One request in flight. Strictly private."""

    __slots__ = (
        "abandoned",
        "attempt",
        "done",
        "outcome",
        "per_provider",
        "provider",
        "request",
        "scope",
        "stream",
        "tried",
    )

    def __init__(self, request: LLMRequest, *, stream: bool = False) -> None:
        self.request = request
        self.stream = stream
        self.attempt = 0
        self.done = trio.Event()
        self.outcome: Outcome | None = None
        self.tried: list[str] = []
        self.per_provider: dict[str, int] = {}
        self.provider: str | None = None
        self.scope: trio.CancelScope | None = None
        self.abandoned = False

    def next_attempt(self) -> None:
        """Arm a fresh reply slot; earlier attempts can no longer resolve."""
        self.attempt += 1
        self.done = trio.Event()
        self.outcome = None
        self.provider = None
        self.scope = None

    def assign(self, provider: str) -> None:
        """The dispatcher sent this attempt to ``provider``."""
        self.provider = provider
        self.tried.append(provider)
        self.per_provider[provider] = self.per_provider.get(provider, 0) + 1

    def resolve(self, attempt: int, outcome: Outcome) -> bool:
        """Deliver ``outcome`` for ``attempt``; False if it was already resolved or is stale."""
        if attempt != self.attempt or self.outcome is not None:
            return False
        self.outcome = outcome
        self.done.set()
        return True

    def abandon(self) -> None:
        """The caller gave up: stop the running attempt at once."""
        self.abandoned = True
        if self.scope is not None:
            self.scope.cancel()
