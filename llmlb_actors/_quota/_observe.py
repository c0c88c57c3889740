"""Carrying what a response said about quota from the HTTP layer back to its attempt.

A provider actor's worker runs one attempt at a time in its own task, and the
HTTP provider runs inside that task. So a context variable holding the
worker's slot links a response's headers to the attempt that got them, with
no change to the provider interface and no cost when quotas are off (no slot
is set, and `wanted` is false).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._types import Observation

__all__ = ["ObservationSlot", "deposit", "install", "wanted"]


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


def wanted() -> bool:
    """Whether the current task records observations (parse headers only then)."""
    return _SLOT.get() is not None


def deposit(observation: Observation | None) -> None:
    """Record ``observation`` for the current task's attempt (no-op outside a worker)."""
    if observation is None:
        return
    slot = _SLOT.get()
    if slot is not None:
        slot.observation = observation
