"""HTTP transports: the seam between sans-I/O adapters and the network.

``make_transport("default" | "trio" | "httpx", limits, network)`` builds one;
see `_base` for the protocol and the error tree, `_settings` for how a
balancer's config becomes transports. The public names are re-exported by
``llmlb_actors.transports``.
"""

from __future__ import annotations

from ._base import (
    ConnectError,
    ConnectTimeout,
    ContentEncodingError,
    HTTPRequest,
    HTTPResponse,
    NetworkSettings,
    PoolTimeout,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    StreamingHTTPResponse,
    TLSError,
    Transport,
    TransportError,
    TransportLimits,
    TransportTimeout,
    WriteError,
    WriteTimeout,
)
from ._httpx import HttpxTransport
from ._settings import make_transport
from ._trio import TrioTransport

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "ContentEncodingError",
    "HTTPRequest",
    "HTTPResponse",
    "HttpxTransport",
    "NetworkSettings",
    "PoolTimeout",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "ResponseTooLarge",
    "StreamingHTTPResponse",
    "TLSError",
    "Transport",
    "TransportError",
    "TransportLimits",
    "TransportTimeout",
    "TrioTransport",
    "WriteError",
    "WriteTimeout",
    "make_transport",
]
