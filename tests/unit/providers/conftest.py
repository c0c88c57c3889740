"""The `make_provider` fixture: an `HTTPProvider` over ``httpx.MockTransport``."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from llmlb_actors._config import ProviderConfig
from llmlb_actors._transport._httpx import HttpxTransport
from llmlb_actors.providers._http import HTTPProvider
from tests.unit.providers.adapter_testing import KEY, Handler, MakeProvider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmlb_actors._transport._base import HTTPRequest, HTTPResponse, StreamingHTTPResponse
    from llmlb_actors.providers._adapter import ProtocolAdapter


class _ReadToEndBody:
    """A body iterator whose ``aclose`` reads the (finite) mock body to its end."""

    def __init__(self, inner: AsyncIterator[bytes]) -> None:
        self._inner = inner

    def __aiter__(self) -> _ReadToEndBody:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._inner)

    async def aclose(self) -> None:
        async for _ in self._inner:
            pass


class _ReadToEnd:
    """A streaming response whose body is read to its end before it is closed."""

    def __init__(self, response: StreamingHTTPResponse) -> None:
        self._response = response
        self._body: _ReadToEndBody | None = None
        self.status = response.status
        self.headers = response.headers

    def aiter_bytes(self) -> _ReadToEndBody:
        self._body = _ReadToEndBody(self._response.aiter_bytes())
        return self._body

    async def aread(self) -> bytes:
        return await self._response.aread()

    async def drain(self) -> None:
        if self._body is not None:
            await self._body.aclose()


class DrainingTransport:
    """`HttpxTransport`, except that closing a stream's body reads it to its end first.

    Why: `HTTPProvider` stops reading at a protocol's terminal event (and on
    errors). Closing the outermost httpx iterator leaves httpx's inner async
    generators unfinished; when the garbage collector reaches them inside the
    trio run, trio emits a ResourceWarning (an error under
    ``filterwarnings=error``), so without this the outcome depends on GC
    timing. Reading the finite mock body to its end lets every generator
    finish, which keeps these adapter tests deterministic.
    """

    def __init__(self, inner: HttpxTransport) -> None:
        self._inner = inner

    async def request(self, call: HTTPRequest) -> HTTPResponse:
        return await self._inner.request(call)

    @asynccontextmanager
    async def stream(self, call: HTTPRequest) -> AsyncIterator[_ReadToEnd]:
        async with self._inner.stream(call) as response:
            wrapped = _ReadToEnd(response)
            try:
                yield wrapped
            finally:
                await wrapped.drain()

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
async def make_provider() -> AsyncIterator[MakeProvider]:
    """``make_provider(AdapterClass, handler, **ProviderConfig fields)`` -> HTTPProvider."""
    clients: list[httpx.AsyncClient] = []

    def factory(adapter: type[ProtocolAdapter], handler: Handler, **fields: Any) -> HTTPProvider:
        fields.setdefault("name", "p")
        fields.setdefault("provider", adapter.protocol)
        fields.setdefault("model", "m")
        fields.setdefault("api_key", KEY)
        config = ProviderConfig(**fields)
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        clients.append(client)
        transport = DrainingTransport(HttpxTransport(client=client))
        return HTTPProvider(config, adapter(config), transport)

    yield factory
    for client in clients:
        await client.aclose()
