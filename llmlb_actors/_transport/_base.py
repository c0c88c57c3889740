"""The transport seam: how provider actors send one HTTP exchange.

Adapters are sans-I/O: they produce an `HTTPRequest` and parse status, headers
and body bytes. A `Transport` sends the request. Two implementations exist:

* ``TrioTransport`` (the default): HTTP/1.1 over trio sockets with the
  httptools parser and an O(1) keep-alive pool per origin.
* ``HttpxTransport``: wraps an ``httpx.AsyncClient`` (proxies, HTTP/2, custom
  SSL contexts, a user's own client, ``httpx.MockTransport`` in tests).

Timeouts: the provider actor bounds every attempt with one cancel scope
(the attempt deadline). `TransportLimits` adds per-phase limits on top;
transports raise the `TransportError` subclasses below, which the provider
layer maps to `LLMError` in one place. Redirects are never followed.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Callable, Sequence
    from contextlib import AbstractAsyncContextManager

__all__ = [
    "ON_SEND",
    "ConnectError",
    "ConnectTimeout",
    "ContentEncodingError",
    "HTTPRequest",
    "HTTPResponse",
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
    "WriteError",
    "WriteTimeout",
]


#: A callback a transport calls, in the sending task, right before a request's bytes go
#: out (after any connection set-up). The quota layer stamps its request window with it:
#: a fresh connection (a TLS handshake) can take longer than the window's margin.
#: ``None``: nobody listens. Transports that cannot tell (httpx) do not call it.
ON_SEND: ContextVar[Callable[[], None] | None] = ContextVar("llmlb_on_send", default=None)


class HTTPRequest(NamedTuple):
    """One request, as an adapter builds it. Header names are lower-case."""

    method: str
    url: str
    headers: Sequence[tuple[str, str]]
    body: bytes | None = None


class HTTPResponse(NamedTuple):
    """A whole response. ``headers`` keys are lower-case; repeated headers are joined by ", "."""

    status: int
    headers: dict[str, str]
    body: bytes


class StreamingHTTPResponse(Protocol):
    """A response whose body is read incrementally (server-sent events)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> dict[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive (chunked transfer-encoding already removed)."""
        ...

    async def aread(self) -> bytes:
        """The rest of the body, up to the transport's response size cap."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Sends HTTP exchanges. Shared by every provider actor of a balancer."""

    async def request(self, request: HTTPRequest) -> HTTPResponse:
        """Send ``request`` and read the whole response (bounded by the size cap)."""
        ...

    def stream(self, request: HTTPRequest) -> AbstractAsyncContextManager[StreamingHTTPResponse]:
        """Send ``request``; return once headers arrived. Leaving the context closes the body."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...


class TransportLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Per-phase limits every transport applies.

    =======================  =========  =============================================
    field                    default    meaning
    =======================  =========  =============================================
    connect_timeout          10.0 s     TCP connect plus TLS handshake
    read_timeout             None       longest wait for the next bytes (None: only
                                        the attempt deadline applies)
    write_timeout            None       longest wait to send the request
    pool_timeout             None       longest wait for a free pooled connection
    max_connections          100        per origin (scheme, host, port)
    max_response_bytes       16 MiB     whole-response body cap
    max_header_bytes         64 KiB     cap on the response head
    verify_tls               True       verify server certificates
    =======================  =========  =============================================
    """

    connect_timeout: float = 10.0
    read_timeout: float | None = None
    write_timeout: float | None = None
    pool_timeout: float | None = None
    max_connections: int = 100
    max_response_bytes: int = 16 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    verify_tls: bool = True


class NetworkSettings(NamedTuple):
    """What both transports take besides `TransportLimits`: proxy and trust (`_proxy`, `_tls`)."""

    proxy: str | None = None
    trust_env: bool = True
    ca_bundle: str | None = None
    ssl_context: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        # The proxy URL may carry a password: never shown, only whether one is set.
        proxy = None if self.proxy is None else "<set>"
        return (
            f"NetworkSettings(proxy={proxy}, trust_env={self.trust_env}, "
            f"ca_bundle={self.ca_bundle!r}, ssl_context={self.ssl_context!r})"
        )


class TransportError(Exception):
    """Base of transport failures; never reaches users (mapped to LLMError)."""


class ConnectError(TransportError):
    """Could not connect (refused, unreachable, TLS handshake failed)."""


class TLSError(ConnectError):
    """The server's certificate or host name did not verify: a misconfiguration, not a blip."""


class ProxyError(ConnectError):
    """The proxy could not be reached, or refused the request or tunnel (407, 403, 502...).

    The message names the proxy by ``http://host:port``, never with its credentials.
    ``status`` is the proxy's HTTP status when it answered.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ReadError(TransportError):
    """The connection broke while reading (reset, closed mid-body)."""


class WriteError(TransportError):
    """The connection broke while sending the request."""


class RemoteProtocolError(TransportError):
    """The server broke HTTP/1.1 (bad status line, bad chunking, oversized headers)."""


class ContentEncodingError(RemoteProtocolError):
    """A compressed body that cannot be decoded: an unsupported coding, or corrupt data."""


class ResponseTooLarge(TransportError):
    """The body exceeded ``max_response_bytes``."""


class TransportTimeout(TransportError):
    """A per-phase timeout expired."""


class ConnectTimeout(TransportTimeout):
    pass


class ReadTimeout(TransportTimeout):
    pass


class WriteTimeout(TransportTimeout):
    pass


class PoolTimeout(TransportTimeout):
    pass
