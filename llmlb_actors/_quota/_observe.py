"""Carrying what a response said about quota from the HTTP layer back to its attempt.

A provider actor's worker runs one attempt at a time in its own task, and the
HTTP provider runs inside that task. So a context variable holding the
worker's slot links a response's headers to the attempt that got them, with
no change to the provider interface and no cost when quotas are off (no slot
is set: `current` is None, and no headers are parsed).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._types import Observation

__all__ = ["ObservationSlot", "current", "install"]


class ObservationSlot:
    """What the running attempt's response said; the worker empties it per attempt."""

    __slots__ = ("observation",)

    def __init__(self) -> None:
        self.observation: Observation | None = None

    def take(self) -> Observation | None:
        observation, self.observation = self.observation, None
        return observation


_SLOT: ContextVar[ObservationSlot | None] = ContextVar("llmlb_quota_slot", default=None)


def install() -> ObservationSlot:
    """Give the current task (a worker) its slot; returns it."""
    slot = ObservationSlot()
    _SLOT.set(slot)
    return slot


#: The current task's slot (a worker's, quotas on), or None: parse headers only then.
#: The context variable's own method, so asking costs no Python call per response.
current: Callable[[], ObservationSlot | None] = _SLOT.get
