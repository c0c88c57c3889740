"""Fixtures for the shared transport suite: every test runs against both transports."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest
import trustme

from llmlb_actors._transport import HttpxTransport, Transport, TransportLimits, TrioTransport
from tests.transport.servers import Handler, Server, start_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import trio

    from tests.transport.helpers import MakeTransport, Serve


@pytest.fixture(params=["trio", "httpx"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_transport(kind: str) -> AsyncIterator[MakeTransport]:
    """Builds transports of the parametrized kind and closes them after the test."""
    transports: list[Transport] = []

    def make(
        limits: TransportLimits | None = None, *, ssl_context: ssl.SSLContext | None = None
    ) -> Transport:
        transport: Transport
        if kind == "trio":
            transport = TrioTransport(limits, ssl_context=ssl_context)
        else:
            transport = HttpxTransport(limits, ssl_context=ssl_context)
        transports.append(transport)
        return transport

    yield make
    for transport in transports:
        await transport.aclose()


@pytest.fixture
def serve(nursery: trio.Nursery) -> Serve:
    """``await serve(handler, ssl_context=None)`` starts a server in the test's nursery."""

    async def start(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> Server:
        return await start_server(nursery, handler, ssl_context=ssl_context)

    return start


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
