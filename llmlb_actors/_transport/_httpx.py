"""The httpx-based transport: proxies, HTTP/2, custom SSL, a user's own client, MockTransport."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

from ._base import (
    ConnectError,
    ConnectTimeout,
    HTTPCall,
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


def _headers(response: httpx.Response) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in response.headers.multi_items():
        k = key.lower()
        out[k] = f"{out[k]}, {value}" if k in out else value
    return out


class _StreamingResponse:
    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._response = response
        self._limit = limit
        self.status = response.status_code
        self.headers = _headers(response)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async with _mapped():
            async for chunk in self._response.aiter_raw():
                yield chunk

    async def aread(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.aiter_bytes():
            size += len(chunk)
            if size > self._limit:
                raise ResponseTooLarge(f"body over {self._limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


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
                limits=httpx.Limits(
                    max_connections=None,
                    max_keepalive_connections=self.limits.max_connections,
                ),
                trust_env=False,
            )
        self._client = client

    def _build(self, call: HTTPCall) -> httpx.Request:
        return self._client.build_request(
            call.method, call.url, headers=list(call.headers), content=call.body
        )

    async def request(self, call: HTTPCall) -> HTTPResponse:
        limit = self.limits.max_response_bytes
        async with _mapped():
            response = await self._client.send(
                self._build(call), stream=True, follow_redirects=False
            )
            try:
                parts: list[bytes] = []
                size = 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > limit:
                        raise ResponseTooLarge(f"body over {limit} bytes")
                    parts.append(chunk)
            finally:
                await response.aclose()
        return HTTPResponse(response.status_code, _headers(response), b"".join(parts))

    @asynccontextmanager
    async def stream(self, call: HTTPCall) -> AsyncIterator[_StreamingResponse]:
        async with _mapped():
            response = await self._client.send(
                self._build(call), stream=True, follow_redirects=False
            )
        try:
            yield _StreamingResponse(response, self.limits.max_response_bytes)
        finally:
            async with _mapped():
                await response.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
