"""Streaming exchanges: incremental chunks, leaving early, cancellation, size caps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from llmlb_actors._transport import (
    HTTPRequest,
    ReadTimeout,
    ResponseTooLarge,
    TransportLimits,
    TrioTransport,
)
from tests.transport.helpers import httpx_abandons_generators
from tests.transport.servers import ServerConn, chunk, chunked, fixed, response

if TYPE_CHECKING:
    from trio.testing import MockClock

    from tests.transport.helpers import MakeTransport, Serve

CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


async def test_chunks_arrive_incrementally(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    release = trio.Event()
    sent: list[bytes] = []

    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(CHUNKED_HEAD + chunk(b"data: one\n\n"))
            await release.wait()
            sent.append(b"two")
            await conn.send(chunk(b"data: two\n\n") + b"0\r\n\r\n")

    server = await serve(handler)
    transport = make_transport()
    async with transport.stream(HTTPRequest("POST", server.url(), [], b"{}")) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"] == "text/event-stream"
        chunks = resp.aiter_bytes()
        assert await anext(chunks) == b"data: one\n\n"
        assert sent == []  # the first chunk came before the server sent the second
        release.set()
        assert [c async for c in chunks] == [b"data: two\n\n"]
    # Fully read: the connection went back to the pool.
    resp2 = await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    assert resp2.body == b"data: one\n\ndata: two\n\n"
    assert len(server.connections) == 1


async def test_leaving_early_closes_the_connection(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock, kind: str
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(CHUNKED_HEAD + chunk(b"first"))
            await conn.wait_eof()

    server = await serve(handler)
    transport = make_transport()
    async with (
        httpx_abandons_generators(kind),
        transport.stream(HTTPRequest("GET", server.url(), [])) as resp,
    ):
        async for data in resp.aiter_bytes():
            assert data == b"first"
            break
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()


async def test_cancelled_stream_closes_the_connection(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock, kind: str
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(CHUNKED_HEAD + chunk(b"first"))
            await conn.wait_eof()

    server = await serve(handler)
    transport = make_transport(TransportLimits(max_connections=1))
    got: list[bytes] = []
    async with httpx_abandons_generators(kind):
        with trio.move_on_after(2.0) as scope:
            async with transport.stream(HTTPRequest("GET", server.url(), [])) as resp:
                async for data in resp.aiter_bytes():
                    got.append(data)
    assert scope.cancelled_caught
    assert got == [b"first"]
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()


async def test_aread_reads_the_rest(make_transport: MakeTransport, serve: Serve) -> None:
    server = await serve(fixed(chunked(200, [b"a" * 10, b"b" * 70_000, b"c"])))
    transport = make_transport()
    async with transport.stream(HTTPRequest("GET", server.url(), [])) as resp:
        first = await anext(resp.aiter_bytes())
        rest = await resp.aread()
    assert first + rest == b"a" * 10 + b"b" * 70_000 + b"c"


async def test_error_status_body_via_aread(make_transport: MakeTransport, serve: Serve) -> None:
    server = await serve(fixed(response(400, b'{"error":{"message":"bad"}}')))
    transport = make_transport()
    async with transport.stream(HTTPRequest("POST", server.url(), [], b"{}")) as resp:
        assert resp.status == 400
        assert await resp.aread() == b'{"error":{"message":"bad"}}'


async def test_aread_is_capped(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock, kind: str
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(CHUNKED_HEAD + chunk(b"x" * 600) + chunk(b"x" * 600))
            await conn.wait_eof()

    server = await serve(handler)
    transport = make_transport(TransportLimits(max_response_bytes=1000))
    async with (
        httpx_abandons_generators(kind),
        transport.stream(HTTPRequest("GET", server.url(), [])) as resp,
    ):
        with pytest.raises(ResponseTooLarge):
            await resp.aread()
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()


async def test_stream_without_body(make_transport: MakeTransport, serve: Serve) -> None:
    server = await serve(fixed(b"HTTP/1.1 204 No Content\r\n\r\n"))
    transport = make_transport()
    for _ in range(2):
        async with transport.stream(HTTPRequest("GET", server.url(), [])) as resp:
            assert resp.status == 204
            assert [c async for c in resp.aiter_bytes()] == []
    assert len(server.connections) == 1


async def test_stalled_stream_is_a_read_timeout(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock, kind: str
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(CHUNKED_HEAD + chunk(b"first"))
            await trio.sleep(0.5)
            await conn.send(chunk(b"second"))
            await conn.wait_eof()

    server = await serve(handler)
    transport = make_transport(TransportLimits(read_timeout=1.0))
    got: list[bytes] = []
    async with (
        httpx_abandons_generators(kind),
        transport.stream(HTTPRequest("GET", server.url(), [])) as resp,
    ):
        with pytest.raises(ReadTimeout):  # noqa: PT012 - the timeout hits mid-iteration
            async for data in resp.aiter_bytes():
                got.append(data)
    assert got == [b"first", b"second"]
    assert trio.current_time() == pytest.approx(1.5)
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()


async def test_trio_stream_complete_but_unread_is_pooled(serve: Serve) -> None:
    """Trio transport: a body that fully arrived with the head is clean to reuse
    even if nobody iterated it. (httpx closes such a connection: h11 never saw
    the body's end, so it cannot tell.)"""
    server = await serve(fixed(response(200, b"small")))
    transport = TrioTransport()
    for _ in range(2):
        async with transport.stream(HTTPRequest("GET", server.url(), [])) as resp:
            assert resp.status == 200
    async with transport.stream(HTTPRequest("GET", server.url(), [])) as resp:
        assert await resp.aread() == b"small"
    await transport.aclose()
    assert len(server.connections) == 1


async def test_trio_stream_after_exit_is_closed(serve: Serve, autojump_clock: MockClock) -> None:
    """Trio transport: iterating a stream after its context ended raises, never hangs."""
    from llmlb_actors._transport import ReadError

    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(CHUNKED_HEAD + chunk(b"first"))
            await conn.wait_eof()

    server = await serve(handler)
    transport = TrioTransport()
    async with transport.stream(HTTPRequest("GET", server.url(), [])) as resp:
        chunks = resp.aiter_bytes()
        assert await anext(chunks) == b"first"
    with pytest.raises(ReadError, match="closed"):
        await anext(chunks)
    await transport.aclose()


async def test_stream_head_read_timeout(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.wait_eof()  # never answers

    server = await serve(handler)
    transport = make_transport(TransportLimits(read_timeout=2.0))
    with pytest.raises(ReadTimeout):
        async with transport.stream(HTTPRequest("POST", server.url(), [], b"{}")):
            pass  # pragma: no cover - the head never arrives
    assert trio.current_time() == pytest.approx(2.0)
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()
