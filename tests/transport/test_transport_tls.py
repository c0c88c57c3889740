"""HTTPS: verified by default, custom CAs, verification failures, handshake timeouts."""

from __future__ import annotations

import gc
import logging
import ssl
import warnings
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
import trustme

from llmlb_actors._transport import (
    ConnectError,
    ConnectTimeout,
    HTTPRequest,
    TransportLimits,
    TrioTransport,
)
from tests.transport.servers import ServerConn, fixed, response, start_server

if TYPE_CHECKING:
    from trio.testing import MockClock

    from tests.transport.helpers import MakeTransport, Serve


async def test_tls_round_trip_with_a_private_ca(
    make_transport: MakeTransport,
    serve: Serve,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    server = await serve(fixed(response(200, b"secure")), ssl_context=server_ssl_context)
    transport = make_transport(ssl_context=client_ssl_context)
    for _ in range(3):
        resp = await transport.request(HTTPRequest("POST", server.url("/v1/chat"), [], b"{}"))
        assert (resp.status, resp.body) == (200, b"secure")
    assert len(server.connections) == 1  # keep-alive over TLS too
    assert server.requests[0].headers["host"] == f"127.0.0.1:{server.port}"


async def test_tls_streaming(
    make_transport: MakeTransport,
    serve: Serve,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    server = await serve(fixed(response(200, b"data: x\n\n")), ssl_context=server_ssl_context)
    transport = make_transport(ssl_context=client_ssl_context)
    async with transport.stream(HTTPRequest("GET", server.url(), [])) as resp:
        assert await resp.aread() == b"data: x\n\n"


async def test_untrusted_certificate_is_a_connect_error(
    make_transport: MakeTransport, serve: Serve, server_ssl_context: ssl.SSLContext
) -> None:
    """The default (system) trust store does not know the test CA."""
    server = await serve(fixed(response(200, b"no")), ssl_context=server_ssl_context)
    with pytest.raises(ConnectError):
        await make_transport().request(HTTPRequest("GET", server.url(), []))
    assert server.requests == []


async def test_wrong_host_name_is_a_connect_error(
    make_transport: MakeTransport,
    nursery: trio.Nursery,
    ca: trustme.CA,
    client_ssl_context: ssl.SSLContext,
) -> None:
    """A certificate from a trusted CA, but for another name."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(context)
    server = await start_server(nursery, fixed(response(200, b"no")), ssl_context=context)
    transport = make_transport(ssl_context=client_ssl_context)
    with pytest.raises(ConnectError):
        await transport.request(HTTPRequest("GET", server.url(), []))
    assert server.requests == []


async def test_verify_tls_false_warns_and_connects(
    make_transport: MakeTransport,
    serve: Serve,
    server_ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await serve(fixed(response(200, b"unverified")), ssl_context=server_ssl_context)
    with caplog.at_level(logging.WARNING, logger="llmlb_actors.transport"):
        transport = make_transport(TransportLimits(verify_tls=False))
        for _ in range(2):
            assert (
                await transport.request(HTTPRequest("GET", server.url(), []))
            ).body == b"unverified"
    warnings = [r for r in caplog.records if r.name == "llmlb_actors.transport"]
    assert len(warnings) == 1  # once per transport, not per request
    assert warnings[0].levelno == logging.WARNING
    assert "verification is OFF" in warnings[0].getMessage()


async def test_tls_handshake_that_never_finishes_is_a_connect_timeout(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    """The server accepts TCP but never speaks TLS: connect_timeout covers the handshake."""

    async def silent(conn: ServerConn) -> None:
        await conn.wait_eof()

    server = await serve(silent)  # plain TCP: no TLS on the server side
    url = f"https://127.0.0.1:{server.port}/"
    transport = make_transport(TransportLimits(connect_timeout=2.0))
    with pytest.raises(ConnectTimeout):
        await transport.request(HTTPRequest("GET", url, []))
    assert trio.current_time() == pytest.approx(2.0)
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()


async def test_trio_offers_alpn_http11(
    nursery: trio.Nursery, server_ssl_context: ssl.SSLContext
) -> None:
    """Trio transport: its default context offers ALPN http/1.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    selected: list[str | None] = []

    async def handler(conn: ServerConn) -> None:
        request = await conn.read_request()
        assert isinstance(conn.stream, trio.SSLStream)
        selected.append(conn.stream.selected_alpn_protocol())
        if request is not None:
            await conn.send(response(200, b"ok"))

    server = await start_server(nursery, handler, ssl_context=context)
    transport = TrioTransport(TransportLimits(verify_tls=False))
    await transport.request(HTTPRequest("GET", server.url(), []))
    await transport.aclose()
    assert selected == ["http/1.1"]


def test_trio_rejects_ssl_context_with_verify_off(client_ssl_context: ssl.SSLContext) -> None:
    with pytest.raises(ValueError, match="either ssl_context or verify_tls=False"):
        TrioTransport(TransportLimits(verify_tls=False), ssl_context=client_ssl_context)


async def test_cancel_during_handshake_closes_the_socket(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock, kind: str
) -> None:
    """The caller's deadline (shorter than connect_timeout) ends a stuck handshake.

    httpx differs: httpcore's ``start_tls`` closes the socket on ``Exception``
    only, so a cancellation (a ``BaseException``) leaks it until garbage
    collection. That is asserted as such, so a fixed httpcore shows up here.
    """

    async def silent(conn: ServerConn) -> None:
        await conn.wait_eof()

    server = await serve(silent)
    transport = make_transport(TransportLimits(connect_timeout=10.0))
    with trio.move_on_after(1.0) as attempt:
        await transport.request(HTTPRequest("GET", f"https://127.0.0.1:{server.port}/", []))
    assert attempt.cancelled_caught
    if kind == "httpx":
        await trio.testing.wait_all_tasks_blocked()
        assert not server.connections[0].saw_eof.is_set()  # leaked, still open
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "unclosed <socket", ResourceWarning)
            gc.collect()
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()
