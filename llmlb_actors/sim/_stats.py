"""What a simulated provider has seen: counters and the last chat request."""

from __future__ import annotations

import msgspec

from .._secrets import REDACTED, is_credential_header

__all__ = ["SimStats", "StatsRecorder", "redact_path"]


class SimStats(msgspec.Struct, frozen=True, kw_only=True):
    """An immutable snapshot of one simulated provider's counters.

    Attributes:
        requests: chat/generation requests received (streams included, and
            requests rejected for a bad key or body).
        streams: those that asked for a stream.
        health_probes: requests to the health endpoints (model listings).
        connections: TCP connections accepted (keep-alive reuse keeps it low).
        open_connections: of those, the ones open now (a client that closes
            its end, or cancels a request, brings it down).
        outcomes: how many chat requests ended in each outcome (``"ok"``,
            ``"429"``, ``"reset"``...; auth failures count as ``"401"`` or
            Gemini's ``"400"``, bad bodies as ``"400"``/``"422"``).
        rate_limited: chat requests refused because they were over a quota
            (``Behaviour.rpm``/``tpm``/``rpd``); also counted as ``"429"`` outcomes.
        last_headers: headers of the last chat request, names lower-cased,
            credential headers (``authorization``, ``x-api-key``, ...: the
            library's one rule, `llmlb_actors._secrets`) replaced by ``***``.
        last_body: raw body of the last chat request.
        last_path: request target of the last chat request (``key=`` redacted).
    """

    requests: int = 0
    streams: int = 0
    health_probes: int = 0
    connections: int = 0
    open_connections: int = 0
    outcomes: dict[str, int] = msgspec.field(default_factory=dict)
    rate_limited: int = 0
    last_headers: dict[str, str] = msgspec.field(default_factory=dict)
    last_body: bytes | None = None
    last_path: str | None = None


def redact_path(target: bytes) -> str:
    """The request target as text, with a ``key=`` query value hidden."""
    text = target.decode("latin-1")
    path, sep, query = text.partition("?")
    if not sep:
        return path
    parts = [f"key={REDACTED}" if part.startswith("key=") else part for part in query.split("&")]
    return f"{path}?{'&'.join(parts)}"


def _redact_header(name: bytes, value: bytes) -> str:
    if not is_credential_header(name.decode("latin-1")):
        return value.decode("latin-1")
    scheme, sep, _ = value.partition(b" ")
    if sep and name == b"authorization":
        return f"{scheme.decode('latin-1')} {REDACTED}"
    return REDACTED


class StatsRecorder:
    """Mutable counters behind `SimStats`. Strictly private to the simulator.

    The last request is kept raw and only decoded (and redacted) when a
    snapshot is asked for, so the hot path pays for two references.
    """

    __slots__ = (
        "connections",
        "health_probes",
        "last_body",
        "last_headers",
        "last_target",
        "open_connections",
        "outcomes",
        "rate_limited",
        "requests",
        "streams",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.streams = 0
        self.health_probes = 0
        self.connections = 0
        self.open_connections = 0
        self.outcomes: dict[str, int] = {}
        self.rate_limited = 0
        self.last_headers: dict[bytes, bytes] | None = None
        self.last_body: bytes | None = None
        self.last_target: bytes | None = None

    def count_outcome(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def snapshot(self) -> SimStats:
        headers = self.last_headers or {}
        return SimStats(
            requests=self.requests,
            streams=self.streams,
            health_probes=self.health_probes,
            connections=self.connections,
            open_connections=self.open_connections,
            outcomes=dict(self.outcomes),
            rate_limited=self.rate_limited,
            last_headers={
                name.decode("latin-1"): _redact_header(name, value)
                for name, value in headers.items()
            },
            last_body=self.last_body,
            last_path=None if self.last_target is None else redact_path(self.last_target),
        )
