"""Read-only provider snapshots handed to custom strategies."""

from __future__ import annotations

import msgspec

from ._circuit import CircuitState
from ._config import ProviderConfig

__all__ = ["ProviderState"]


class ProviderState(msgspec.Struct, frozen=True, kw_only=True):
    """What a custom strategy may look at when it picks a provider.

    A snapshot: changing it changes nothing. Return one of the snapshots you
    were given.
    """

    name: str
    config: ProviderConfig
    index: int
    """Position in configuration order (added providers come last)."""
    weight: float
    is_healthy: bool
    circuit_state: CircuitState
    in_flight: int
    """Requests assigned and not finished (queued in its mailbox or running)."""
    average_latency_ms: float
    """Smoothed latency of recent successes (0 before the first)."""
    consecutive_failures: int
    total_requests: int
