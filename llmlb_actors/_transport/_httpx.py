"""The httpx-based transport: proxies, HTTP/2, custom SSL, a user's own client, MockTransport."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

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
    TransportError,
    TransportLimits,
    WriteError,
    WriteTimeout,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["HttpxTransport"]

log = logging.getLogger("llmlb_actors.transport")

_MAPPING: tuple[tuple[type[Exception], type[TransportError]], ...] = (
    (httpx.ConnectTimeout, ConnectTimeout),
    (httpx.ReadTimeout, ReadTimeout),
    (httpx.WriteTimeout, WriteTimeout),
    (httpx.PoolTimeout, PoolTimeout),
    (httpx.ConnectError, ConnectError),
    (httpx.ReadError, ReadError),
    (httpx.WriteError, WriteError),
    (httpx.RemoteProtocolError, RemoteProtocolError),
    (httpx.LocalProtocolError, RemoteProtocolError),
    (httpx.ProxyError, ConnectError),
    (httpx.UnsupportedProtocol, ConnectError),
    (httpx.DecodingError, RemoteProtocolError),
    (httpx.TimeoutException, ReadTimeout),
    (httpx.NetworkError, ReadError),
    (httpx.TransportError, ReadError),
)


def _map_httpx_error(exc: httpx.HTTPError) -> TransportError:
    for source, target in _MAPPING:
        if isinstance(exc, source):
            return target(str(exc) or type(exc).__name__)
    return TransportError(str(exc) or type(exc).__name__)


@asynccontextmanager
async def _mapped() -> AsyncIterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        raise _map_httpx_error(exc) from exc


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _is_token(name: str) -> bool:
    return _TOKEN.fullmatch(name) is not None


def _headers(response: httpx.Response) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in response.headers.multi_items():
        k = key.lower()
        out[k] = f"{out[k]}, {value}" if k in out else value
    return out


class _StreamingResponse:
    """One body iterator for the whole response, so ``aread`` after partial
    iteration returns the rest (httpx refuses a second ``aiter_bytes``), and a
    plain iterator rather than an async generator, so one abandoned by the
    caller leaves nothing half-run for the garbage collector."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._response = response
        self._limit = limit
        self._raw: AsyncIterator[bytes] | None = None
        self.status = response.status_code
        self.headers = _headers(response)

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self

    def __aiter__(self) -> _StreamingResponse:
        return self

    async def __anext__(self) -> bytes:
        raw = self._raw
        if raw is None:
            # aiter_bytes, not aiter_raw: a response built in memory (MockTransport,
            # a user's own transport) has no raw stream left to read.
            raw = self._raw = self._response.aiter_bytes()
        try:
            return await anext(raw)
        except httpx.HTTPError as exc:
            raise _map_httpx_error(exc) from exc

    async def aread(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > self._limit:
                raise ResponseTooLarge(f"body over {self._limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _aclose(self) -> None:
        if isinstance(self._raw, AsyncGenerator):
            await self._raw.aclose()
        await self._response.aclose()


class HttpxTransport:
    """Sends through an ``httpx.AsyncClient``.

    Use it for what the default transport does not do: proxies, HTTP/2,
    custom SSL contexts, or to pass your own client (with
    ``httpx.MockTransport`` in tests). Redirects are never followed. When you
    pass a client, you own it: `aclose` leaves it open.
    """

    def __init__(
        self,
        limits: TransportLimits | None = None,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.limits = limits or TransportLimits()
        self._owns_client = client is None
        if client is None:
            if not self.limits.verify_tls:
                log.warning("TLS certificate verification is OFF for the httpx transport")
            client = httpx.AsyncClient(
                follow_redirects=False,
                verify=self.limits.verify_tls,
                timeout=httpx.Timeout(
                    None,
                    connect=self.limits.connect_timeout,
                    read=self.limits.read_timeout,
                    write=self.limits.write_timeout,
                    pool=self.limits.pool_timeout,
                ),
                # httpx can only cap connections for the whole client, not per
                # origin as TransportLimits means; with one origin they agree.
                limits=httpx.Limits(
                    max_connections=self.limits.max_connections,
                    max_keepalive_connections=self.limits.max_connections,
                ),
                trust_env=False,
            )
        self._client = client

    def _build(self, request: HTTPRequest) -> httpx.Request:
        if self._client.is_closed:
            # httpx raises RuntimeError here, which no caller maps.
            raise TransportError("transport is closed")
        headers = [(n, v) for n, v in request.headers if n.lower() != "accept-encoding"]
        for name, value in headers:
            # h11 would refuse these too, but only while sending, as a
            # (retryable) protocol error whose message quotes the value: an
            # API key must never reach an error message.
            if "\r" in value or "\n" in value or "\0" in value or not _is_token(name):
                raise ValueError(f"header {name[:40]!r} contains CR, LF or NUL or a bad name")
        # Bodies are read raw (never decompressed), so never advertise gzip.
        headers.append(("accept-encoding", "identity"))
        return self._client.build_request(
            request.method, request.url, headers=headers, content=request.body
        )

    async def request(self, request: HTTPRequest) -> HTTPResponse:
        limit = self.limits.max_response_bytes
        async with _mapped():
            response = await self._client.send(
                self._build(request), stream=True, follow_redirects=False
            )
            try:
                parts: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ResponseTooLarge(f"body over {limit} bytes")
                    parts.append(chunk)
            finally:
                await response.aclose()
        return HTTPResponse(response.status_code, _headers(response), b"".join(parts))

    @asynccontextmanager
    async def stream(self, request: HTTPRequest) -> AsyncIterator[_StreamingResponse]:
        async with _mapped():
            response = await self._client.send(
                self._build(request), stream=True, follow_redirects=False
            )
        streaming = _StreamingResponse(response, self.limits.max_response_bytes)
        try:
            yield streaming
        finally:
            async with _mapped():
                await streaming._aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
