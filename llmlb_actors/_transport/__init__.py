"""HTTP transports: the seam between sans-I/O adapters and the network.

``make_transport("default" | "trio" | "httpx", limits)`` builds one; see
`_base` for the protocol and the error tree.
"""

from __future__ import annotations

from ._base import (
    ConnectError,
    ConnectTimeout,
    HTTPRequest,
    HTTPResponse,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    StreamingHTTPResponse,
    Transport,
    TransportError,
    TransportLimits,
    TransportTimeout,
    WriteError,
    WriteTimeout,
)
from ._httpx import HttpxTransport
from ._trio import TrioTransport

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "HTTPRequest",
    "HTTPResponse",
    "HttpxTransport",
    "PoolTimeout",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "ResponseTooLarge",
    "StreamingHTTPResponse",
    "Transport",
    "TransportError",
    "TransportLimits",
    "TransportTimeout",
    "TrioTransport",
    "WriteError",
    "WriteTimeout",
    "make_transport",
]


def make_transport(kind: str, limits: TransportLimits) -> Transport:
    """Build the transport named by ``kind``.

    ``"default"`` and ``"trio"`` give `TrioTransport` (HTTP/1.1 on trio
    sockets, the fast path); ``"httpx"`` gives `HttpxTransport` (proxies,
    HTTP/2, custom clients).

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind in ("default", "trio"):
        return TrioTransport(limits)
    if kind == "httpx":
        return HttpxTransport(limits)
    raise ValueError(f"unknown transport {kind!r}; expected 'default', 'trio' or 'httpx'")
