"""Exchanges that go wrong: broken connections, timeouts, oversized responses, bad HTTP."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest
import trio
import trio.lowlevel

from llmlb_actors._transport import (
    ConnectError,
    HTTPRequest,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    TransportLimits,
    TrioTransport,
    WriteTimeout,
)
from tests.transport.helpers import httpx_abandons_generators
from tests.transport.servers import ServerConn, chunk, fixed, response

if TYPE_CHECKING:
    from trio.testing import MockClock

    from tests.transport.helpers import MakeTransport, Serve


async def test_reset_mid_body_is_a_read_error(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
            await trio.sleep(0.1)
            conn.reset()

    server = await serve(handler)
    with pytest.raises(ReadError):
        await make_transport().request(HTTPRequest("POST", server.url(), [], b"{}"))
    assert len(server.requests) == 1  # never replayed


async def test_close_after_headers(make_transport: MakeTransport, serve: Serve, kind: str) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")

    server = await serve(handler)
    # The connection broke mid-body: a ReadError on both transports (h11 calls it a
    # protocol error; the httpx transport maps it), with the same words.
    with pytest.raises(ReadError, match="server closed the connection mid-response"):
        await make_transport().request(HTTPRequest("GET", server.url(), []))
    assert len(server.requests) == 1


async def test_truncated_chunked_body(
    make_transport: MakeTransport, serve: Serve, kind: str
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            await conn.send(head + chunk(b"first part"))

    server = await serve(handler)
    with pytest.raises(ReadError, match="server closed the connection mid-response"):
        await make_transport().request(HTTPRequest("GET", server.url(), []))


async def test_malformed_status_line(make_transport: MakeTransport, serve: Serve) -> None:
    server = await serve(fixed(b"HTTP/1.1 twohundred OK\r\n\r\n"))
    with pytest.raises(RemoteProtocolError):
        await make_transport().request(HTTPRequest("GET", server.url(), []))


async def test_stalled_body_is_a_read_timeout(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    """The body stops arriving: ReadTimeout once read_timeout passes without a byte."""

    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await trio.sleep(0.2)
            await conn.send(b"de")
            await conn.wait_eof()

    server = await serve(handler)
    transport = make_transport(TransportLimits(read_timeout=1.0))
    start = trio.current_time()
    with pytest.raises(ReadTimeout):
        await transport.request(HTTPRequest("GET", server.url(), []))
    # The timeout counts from the last bytes received, not from the start.
    assert trio.current_time() - start == pytest.approx(1.2)
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()  # and the connection was closed


async def test_slowloris_body_is_cut_by_the_outer_deadline(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    """A byte every 0.5 s never trips a 1 s read timeout; the attempt deadline ends it."""

    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while True:
                await conn.send(b"x")
                await trio.sleep(0.5)

    server = await serve(handler)
    transport = make_transport(TransportLimits(read_timeout=1.0))
    with trio.move_on_after(5.0) as attempt:
        await transport.request(HTTPRequest("GET", server.url(), []))
    assert attempt.cancelled_caught
    assert trio.current_time() == pytest.approx(5.0, abs=0.01)
    with trio.fail_after(1.0):
        await server.connections[0].closed.wait()  # the server saw the client leave


async def test_unread_request_is_a_write_timeout(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock, kind: str
) -> None:
    """The server never reads: sending a body bigger than the socket buffers stalls."""
    stop = trio.Event()

    async def handler(conn: ServerConn) -> None:
        await stop.wait()

    server = await serve(handler)
    transport = make_transport(TransportLimits(write_timeout=1.0))
    body = b"x" * (32 * 1024 * 1024)  # more than loopback socket buffers hold
    async with httpx_abandons_generators(kind):
        with pytest.raises(WriteTimeout):
            await transport.request(HTTPRequest("POST", server.url(), [], body))
    stop.set()


async def test_oversized_head_is_a_protocol_error(
    make_transport: MakeTransport, serve: Serve
) -> None:
    """A 200 KiB response head is refused by both (trio at max_header_bytes=64 KiB,
    httpx at h11's own fixed 100 KiB limit)."""
    headers = [(f"X-Filler-{i}", "v" * 1000) for i in range(200)]
    server = await serve(fixed(response(200, b"ok", headers)))
    with pytest.raises(RemoteProtocolError):
        await make_transport().request(HTTPRequest("GET", server.url(), []))


async def test_trio_enforces_max_header_bytes(serve: Serve) -> None:
    """Trio transport: the configured head cap applies, whether the head arrives
    whole or in pieces. (httpx has no such setting: h11's 100 KiB is fixed.)"""
    big_head = response(200, b"ok", [("X-Filler", "v" * 2000)])

    async def trickle(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            for i in range(0, len(big_head), 100):
                await conn.send(big_head[i : i + 100])
                await trio.lowlevel.checkpoint()  # separate reads on the client
            await conn.wait_eof()

    for handler in (fixed(big_head), trickle):
        server = await serve(handler)
        transport = TrioTransport(TransportLimits(max_header_bytes=1024))
        with pytest.raises(RemoteProtocolError, match="head over 1024 bytes"):
            await transport.request(HTTPRequest("GET", server.url(), []))
        ok = TrioTransport(TransportLimits(max_header_bytes=4096))
        assert (await ok.request(HTTPRequest("GET", server.url(), []))).body == b"ok"
        await transport.aclose()
        await ok.aclose()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_oversized_body_is_refused_and_the_connection_closed(
    make_transport: MakeTransport,
    serve: Serve,
    autojump_clock: MockClock,
    framing: str,
    kind: str,
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is None:
            return
        if framing == "content-length":
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"y" * 5000)
        else:
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            await conn.send(head + chunk(b"y" * 800) + chunk(b"y" * 800))
        await conn.wait_eof()

    server = await serve(handler)
    transport = make_transport(TransportLimits(max_response_bytes=1000))
    async with httpx_abandons_generators(kind):
        with pytest.raises(ResponseTooLarge):
            await transport.request(HTTPRequest("GET", server.url(), []))
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()


async def test_body_at_the_cap_is_accepted(make_transport: MakeTransport, serve: Serve) -> None:
    server = await serve(fixed(response(200, b"z" * 1000)))
    transport = make_transport(TransportLimits(max_response_bytes=1000))
    assert (await transport.request(HTTPRequest("GET", server.url(), []))).body == b"z" * 1000


async def test_connect_refused(make_transport: MakeTransport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now.
    with pytest.raises(ConnectError):
        await make_transport().request(HTTPRequest("GET", f"http://127.0.0.1:{port}/", []))


async def test_errors_never_quote_the_url(serve: Serve) -> None:
    """Trio transport: URLs may carry keys (Gemini's ``?key=``); errors name the origin only."""

    async def handler(conn: ServerConn) -> None:
        await conn.read_request()

    server = await serve(handler)
    transport = TrioTransport()
    with pytest.raises(ReadError) as info:
        await transport.request(HTTPRequest("GET", server.url("/v1/models?key=sk-secret"), []))
    assert "sk-secret" not in str(info.value)
    assert f"http://127.0.0.1:{server.port}" in str(info.value)
    await transport.aclose()
