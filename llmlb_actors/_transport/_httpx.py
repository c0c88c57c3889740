"""The httpx-based transport: the same behaviour as the default one, over httpx.

Everything that decides behaviour is shared with `TrioTransport`: proxy
selection (`_proxy`), trust (`_tls`), content decoding (`_decode`) and error
words (`_describe`). httpx only moves the bytes: one ``AsyncClient`` per
origin (so the connection cap is per origin, as `TransportLimits` says),
each with that origin's proxy, or the one client you pass.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn

import httpx

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
    TLSError,
    TransportError,
    TransportLimits,
    WriteError,
    WriteTimeout,
)
from ._decode import ContentDecoder, decoder_for
from ._describe import describe, is_certificate_failure, timed_out
from ._http11 import Target, parse_url
from ._proxy import Proxy, ProxyRoutes
from ._tls import check_trust_options, client_context

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator

__all__ = ["HttpxTransport"]

log = logging.getLogger("llmlb_actors.transport")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS = re.compile(r"^(\d{3})\b")


def _is_token(name: str) -> bool:
    return _TOKEN.fullmatch(name) is not None


def _headers(response: httpx.Response) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in response.headers.multi_items():
        k = key.lower()
        out[k] = f"{out[k]}, {value}" if k in out else value
    return out


class _Exchange:
    """Where one request goes, for error messages: the origin and its proxy (if any)."""

    __slots__ = ("limits", "proxy", "target")

    def __init__(self, target: Target, proxy: Proxy | None, limits: TransportLimits) -> None:
        self.target = target
        self.proxy = proxy
        self.limits = limits

    def error(self, exc: httpx.HTTPError) -> TransportError:
        """The `TransportError` for ``exc``: the same types and words as `TrioTransport`'s."""
        target, proxy, limits = self.target, self.proxy, self.limits
        label = target.label
        if isinstance(exc, httpx.ConnectTimeout):
            where = label if proxy is None else f"proxy {proxy.label}"
            return ConnectTimeout(timed_out(limits.connect_timeout, "connecting", where))
        if isinstance(exc, httpx.ReadTimeout):
            return ReadTimeout(timed_out(limits.read_timeout, "reading the response", label))
        if isinstance(exc, httpx.WriteTimeout):
            return WriteTimeout(timed_out(limits.write_timeout, "sending the request", label))
        if isinstance(exc, httpx.PoolTimeout):
            return PoolTimeout(
                timed_out(limits.pool_timeout, "waiting for a free connection", label)
            )
        if isinstance(exc, httpx.ProxyError) and proxy is not None:
            match = _STATUS.match(str(exc))
            status = int(match.group(1)) if match else None
            authority = f"{target.host}:{target.port}"
            return ProxyError(
                f"proxy {proxy.label} refused the tunnel to {authority}: {exc}".rstrip(),
                status=status,
            )
        words = describe(exc, target.host)
        if isinstance(exc, httpx.ConnectError):
            if is_certificate_failure(exc):
                return TLSError(words)
            if proxy is not None and not words.startswith("TLS:"):
                # Through a proxy the only TCP connect is to the proxy.
                return ProxyError(f"proxy {proxy.label}: {describe(exc, proxy.host)}")
            return ConnectError(words if words.startswith("DNS:") else f"{words} ({label})")
        if isinstance(exc, httpx.RemoteProtocolError):
            # h11 calls an early close a protocol error; the default transport (and a
            # person) calls it what it is, a connection closed too soon.
            text = str(exc)
            if text.startswith("Server disconnected without sending a response"):
                return ReadError(f"server closed the connection without a response ({label})")
            if text.startswith("peer closed connection without sending complete message body"):
                return ReadError(f"server closed the connection mid-response ({label})")
        if isinstance(exc, httpx.WriteError):
            return WriteError(f"{words} while sending the request ({label})")
        if isinstance(exc, httpx.ReadError | httpx.NetworkError):
            return ReadError(f"{words} while reading the response ({label})")
        if isinstance(exc, httpx.ProtocolError | httpx.DecodingError):
            return RemoteProtocolError(f"malformed response: {words} ({label})")
        if isinstance(exc, httpx.TimeoutException):
            return ReadTimeout(f"timed out ({label})")
        return ReadError(f"{words} ({label})")

    def check_head(self, response: httpx.Response, headers: dict[str, str]) -> None:
        """What the default transport refuses at the head, refused here too.

        Raises:
            RemoteProtocolError: both Content-Length and Transfer-Encoding (RFC 9112
                6.3: the framing is ambiguous, the connection must be closed).
            ProxyError: a 407 from the proxy an http origin is forwarded through.
        """
        if "content-length" in headers and "transfer-encoding" in headers:
            raise RemoteProtocolError(
                "malformed response: Transfer-Encoding can't be present with Content-Length "
                f"({self.target.label})"
            )
        if self.proxy is not None and response.status_code == 407:
            raise ProxyError(
                f"proxy {self.proxy.label} refused the request to {self.target.label}: 407 "
                "Proxy Authentication Required",
                status=407,
            )


class _Body:
    """Reads a response body raw (as transferred) and decodes it with `_decode`.

    httpx's own decoders are bypassed so that both transports decode (and
    refuse) exactly the same codings, with the cap on the decoded size. A
    response httpx already holds in memory (``httpx.MockTransport``, a user's
    transport) has no raw stream left: its content is used as httpx decoded it.
    """

    __slots__ = ("_decoder", "_exchange", "_raw", "_response")

    def __init__(
        self, response: httpx.Response, decoder: ContentDecoder | None, exchange: _Exchange
    ) -> None:
        self._response = response
        self._decoder = decoder
        self._exchange = exchange
        self._raw: AsyncIterator[bytes] | None = None

    async def next(self) -> bytes | None:
        """The next non-empty decoded chunk, or None at the end."""
        raw = self._raw
        if raw is None:
            if self._response.is_stream_consumed:
                raw = self._raw = _one(self._response.content)
                self._decoder = None
            else:
                raw = self._raw = self._response.aiter_raw()
        while True:
            try:
                data = await anext(raw, None)
            except httpx.HTTPError as exc:
                raise self._exchange.error(exc) from exc
            decoder = self._decoder
            if data is None:
                if decoder is not None:
                    self._decode(decoder, None)
                return None
            if decoder is not None:
                data = self._decode(decoder, data)
            if data:
                return data

    def _decode(self, decoder: ContentDecoder, data: bytes | None) -> bytes:
        try:
            if data is None:
                decoder.finish()
                return b""
            return decoder.decode(data)
        except (ContentEncodingError, ResponseTooLarge) as exc:
            raise type(exc)(f"{exc} ({self._exchange.target.label})") from None

    async def aclose(self) -> None:
        if isinstance(self._raw, AsyncGenerator):
            await self._raw.aclose()
        await self._response.aclose()


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content


class _StreamingResponse:
    """One body iterator for the whole response, so ``aread`` after partial
    iteration returns the rest, and a plain iterator rather than an async
    generator, so one abandoned by the caller leaves nothing half-run for the
    garbage collector."""

    def __init__(self, response: httpx.Response, headers: dict[str, str], body: _Body, limit: int):
        self._body = body
        self._limit = limit
        self.status = response.status_code
        self.headers = headers

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self

    def __aiter__(self) -> _StreamingResponse:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._body.next()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aread(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > self._limit:
                raise ResponseTooLarge(f"body over {self._limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


class HttpxTransport:
    """Sends through httpx, with the same behaviour as `TrioTransport`.

    One ``httpx.AsyncClient`` per origin, each capped at
    ``limits.max_connections`` (per origin, as for the default transport) and
    configured with that origin's proxy (`_proxy`) and the shared trust
    (`_tls`): the same proxies, ``NO_PROXY`` rules, CA trust, content
    decoding, framing checks and error messages as the default transport.
    Redirects are never followed.

    Pass ``client=`` to use your own ``httpx.AsyncClient`` for every origin
    (``httpx.MockTransport`` in tests, HTTP/2, an auth flow): the client then
    decides its own proxy and TLS trust, while the limits' timeouts (set on
    every request) and size cap still apply. You own that client: `aclose`
    leaves it open.

    Args: as `TrioTransport`, plus ``client``.

    Raises:
        ValueError: as `TrioTransport`; or ``client`` together with ``proxy``,
            ``ca_bundle``, ``ssl_context``, ``trust_env=False`` or
            ``verify_tls=False`` (configure those on your client).
    """

    def __init__(
        self,
        limits: TransportLimits | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        ca_bundle: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits = limits or TransportLimits()
        if limits.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        check_trust_options(
            verify_tls=limits.verify_tls, ca_bundle=ca_bundle, ssl_context=ssl_context
        )
        if client is not None and (
            proxy is not None
            or ca_bundle is not None
            or ssl_context is not None
            or not trust_env
            or not limits.verify_tls
        ):
            raise ValueError(
                "the httpx.AsyncClient you pass decides its own proxy and TLS trust: configure "
                "them on the client, not on HttpxTransport"
            )
        routes = ProxyRoutes(proxy, trust_env=trust_env) if client is None else None
        if client is None and not limits.verify_tls:
            log.warning("TLS certificate verification is OFF for the httpx transport")
        self._network = NetworkSettings(proxy, trust_env, ca_bundle, ssl_context)
        self._routes = routes if routes is not None and routes.enabled else None
        self._client = client
        self._clients: dict[tuple[str, str, int], tuple[httpx.AsyncClient, Proxy | None]] = {}
        self._ssl_context = ssl_context
        self._closed = False
        self._timeout = httpx.Timeout(
            None,
            connect=limits.connect_timeout,
            read=limits.read_timeout,
            write=limits.write_timeout,
            pool=limits.pool_timeout,
        )

    def __repr__(self) -> str:
        owner = "your client" if self._client is not None else f"origins={len(self._clients)}"
        return f"<HttpxTransport {owner} closed={self._closed}>"

    @property
    def owns_client(self) -> bool:
        """False when you passed the ``httpx.AsyncClient`` (it then decides proxy and trust)."""
        return self._client is None

    def _route(self, target: Target) -> tuple[httpx.AsyncClient, Proxy | None]:
        if self._closed or (self._client is not None and self._client.is_closed):
            # httpx raises RuntimeError here, which no caller maps.
            raise TransportError("transport is closed")
        if self._client is not None:
            return self._client, None
        route = self._clients.get(target.origin)
        if route is None:
            proxy = None if self._routes is None else self._routes.for_origin(*target.origin)
            cap = self.limits.max_connections
            client = httpx.AsyncClient(
                follow_redirects=False,
                verify=self._tls_context(),
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=cap, max_keepalive_connections=cap),
                proxy=None if proxy is None else httpx.Proxy(proxy.url),
                trust_env=False,  # proxies and trust were resolved by `_proxy` and `_tls`
            )
            route = self._clients[target.origin] = (client, proxy)
        return route

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = client_context(
                verify_tls=self.limits.verify_tls,
                ca_bundle=self._network.ca_bundle,
                trust_env=self._network.trust_env,
            )
        return self._ssl_context

    def _build(self, request: HTTPRequest) -> tuple[httpx.AsyncClient, httpx.Request, _Exchange]:
        target = parse_url(request.url)
        client, proxy = self._route(target)
        headers = [(n, v) for n, v in request.headers if n.lower() != "accept-encoding"]
        for name, value in headers:
            # h11 would refuse these too, but only while sending, as a
            # (retryable) protocol error whose message quotes the value: an
            # API key must never reach an error message.
            if "\r" in value or "\n" in value or "\0" in value or not _is_token(name):
                raise ValueError(f"header {name[:40]!r} contains CR, LF or NUL or a bad name")
        headers.append(("accept-encoding", "identity"))
        built = client.build_request(
            request.method,
            request.url,
            headers=headers,
            content=request.body,
            timeout=self._timeout,
        )
        return client, built, _Exchange(target, proxy, self.limits)

    async def _open(self, request: HTTPRequest) -> tuple[httpx.Response, dict[str, str], _Body]:
        """Send ``request``; the response head checked and its body reader ready."""
        client, built, exchange = self._build(request)
        try:
            response = await client.send(built, stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise exchange.error(exc) from exc
        try:
            headers = _headers(response)
            exchange.check_head(response, headers)
            decoder = decoder_for(headers, self.limits.max_response_bytes)
        except TransportError as exc:
            await response.aclose()  # before the body is read: httpcore closes the connection
            if isinstance(exc, ContentEncodingError):
                _raise_labelled(exc, exchange)
            raise
        return response, headers, _Body(response, decoder, exchange)

    async def request(self, request: HTTPRequest) -> HTTPResponse:
        limit = self.limits.max_response_bytes
        response, headers, body = await self._open(request)
        try:
            parts: list[bytes] = []
            size = 0
            while (chunk := await body.next()) is not None:
                size += len(chunk)
                if size > limit:
                    raise ResponseTooLarge(f"body over {limit} bytes")
                parts.append(chunk)
        finally:
            await body.aclose()
        return HTTPResponse(response.status_code, headers, b"".join(parts))

    @asynccontextmanager
    async def stream(self, request: HTTPRequest) -> AsyncIterator[_StreamingResponse]:
        response, headers, body = await self._open(request)
        streaming = _StreamingResponse(response, headers, body, self.limits.max_response_bytes)
        try:
            yield streaming
        finally:
            try:
                await body.aclose()
            except httpx.HTTPError as exc:
                raise TransportError(f"closing the response: {exc}") from exc

    async def aclose(self) -> None:
        """Close the clients this transport made (never one you passed)."""
        self._closed = True
        clients, self._clients = self._clients, {}
        for client, _ in clients.values():
            await client.aclose()


def _raise_labelled(exc: ContentEncodingError, exchange: _Exchange) -> NoReturn:
    raise ContentEncodingError(f"{exc} ({exchange.target.label})") from None
