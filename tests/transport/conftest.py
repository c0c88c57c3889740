"""Fixtures for the shared transport suite: every test runs against both transports."""

from __future__ import annotations

import gc
import re
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import pytest
import trio
import trio.lowlevel
import trustme

from llmlb_actors._transport import HttpxTransport, Transport, TransportLimits, TrioTransport
from tests.transport.servers import Handler, Server, start_server


class MakeTransport(Protocol):
    def __call__(
        self, limits: TransportLimits | None = None, *, ssl_context: ssl.SSLContext | None = None
    ) -> Transport: ...


Serve = Callable[..., Awaitable[Server]]


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


@asynccontextmanager
async def httpx_abandons_generators(kind: str) -> AsyncIterator[None]:
    """Tolerate httpx's abandoned async generators, for httpx only.

    When an exchange is cut short (a write timeout, a capped body, a stream
    left early), httpcore leaves a chain of body generators suspended; trio's
    async-generator hooks flag each one with a ResourceWarning when it is
    garbage collected, then close it in a system task (which frees the next
    one in the chain). That is httpx's doing and harmless outside tests; here
    it would be an error, so for httpx exactly that warning is ignored while
    the chain is collected and finalized inside the block.
    """
    if kind != "httpx":
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()  # the first generator sits in a traceback cycle
        quiet = 0
        while quiet < 3:  # then each one freed frees the next by refcount
            seen = len(caught)
            await trio.lowlevel.checkpoint()
            quiet = quiet + 1 if len(caught) == seen else 0
    for warning in caught:
        if not _ABANDONED.match(str(warning.message)) or warning.category is not ResourceWarning:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


_ABANDONED = re.compile(r"Async generator 'http(x|core)\.")
