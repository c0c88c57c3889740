"""Keep-alive pooling: reuse, when not to reuse, the connection cap, stale idle connections."""

from __future__ import annotations

import os
import resource
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from llmlb_actors._transport import (
    HTTPRequest,
    PoolTimeout,
    ReadError,
    TransportError,
    TransportLimits,
    TrioTransport,
    _trio,
)
from llmlb_actors._transport._trio import PEER_CLOSE_CHECK_AFTER
from tests.transport.servers import Handler, ServerConn, fixed, response

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trio.testing import MockClock

    from tests.transport.helpers import MakeTransport, Serve


async def test_sequential_requests_share_one_connection(
    make_transport: MakeTransport, serve: Serve
) -> None:
    server = await serve(fixed(response(200, b"ok")))
    transport = make_transport()
    for i in range(5):
        resp = await transport.request(HTTPRequest("POST", server.url(f"/{i}"), [], b"{}"))
        assert resp.body == b"ok"
    assert len(server.connections) == 1
    assert [r.target for r in server.requests] == ["/0", "/1", "/2", "/3", "/4"]


async def test_connection_close_is_honoured(make_transport: MakeTransport, serve: Serve) -> None:
    """The server says ``Connection: close`` but leaves the socket open: no reuse anyway."""

    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(response(200, b"bye", [("Connection", "close")]))
            await conn.wait_eof()  # the client must be the one to close

    server = await serve(handler)
    transport = make_transport()
    for _ in range(3):
        assert (await transport.request(HTTPRequest("GET", server.url(), []))).body == b"bye"
    assert len(server.connections) == 3


async def test_http10_response_is_not_reused(make_transport: MakeTransport, serve: Serve) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            headers = [("Connection", "keep-alive")]
            await conn.send(response(200, b"old", headers, version="1.0"))
            await conn.wait_eof()

    server = await serve(handler)
    transport = make_transport()
    for _ in range(2):
        assert (await transport.request(HTTPRequest("GET", server.url(), []))).body == b"old"
    assert len(server.connections) == 2


def slow(delay: float) -> Handler:
    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await trio.sleep(delay)
            await conn.send(response(200, b"slow"))

    return handler


async def test_pool_cap_is_honoured(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    """max_connections=2 and 5 concurrent slow requests: never more than 2 connections.

    The cap is per origin for both transports (the httpx one keeps a client per
    origin); ``tests/network/test_many_origins.py`` checks it across 50 origins.
    """
    server = await serve(slow(1.0))
    transport = make_transport(TransportLimits(max_connections=2))
    bodies: list[bytes] = []

    async def one() -> None:
        bodies.append((await transport.request(HTTPRequest("GET", server.url(), []))).body)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    assert bodies == [b"slow"] * 5
    assert server.max_open == 2
    assert len(server.connections) == 2
    assert trio.current_time() - start == pytest.approx(3.0)  # three rounds of two


async def test_pool_timeout(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    server = await serve(slow(10.0))
    transport = make_transport(TransportLimits(max_connections=1, pool_timeout=0.5))
    outcome: list[str] = []

    async def first() -> None:
        await transport.request(HTTPRequest("GET", server.url(), []))
        outcome.append("first done")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with pytest.raises(PoolTimeout):
            await transport.request(HTTPRequest("GET", server.url(), []))
        assert trio.current_time() - start == pytest.approx(0.5)
    assert outcome == ["first done"]
    assert len(server.connections) == 1


async def test_waiters_are_served_in_arrival_order(serve: Serve, autojump_clock: MockClock) -> None:
    """Trio transport: a freed connection goes to the task that waited longest.

    (httpx's pool makes no ordering promise, so this is checked on trio only.)
    """
    server = await serve(slow(1.0))
    transport = TrioTransport(TransportLimits(max_connections=1))
    order: list[int] = []

    async def one(i: int) -> None:
        await transport.request(HTTPRequest("GET", server.url(f"/{i}"), []))
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
    await transport.aclose()
    assert order == [0, 1, 2, 3, 4]
    assert [r.target for r in server.requests] == ["/0", "/1", "/2", "/3", "/4"]


async def test_cancelled_request_frees_its_slot(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    """A request cancelled mid-response closes its socket and gives its slot back."""
    calls = 0

    async def handler(conn: ServerConn) -> None:
        nonlocal calls
        while await conn.read_request() is not None:
            calls += 1
            if calls == 1:
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                await conn.wait_eof()
                return
            await conn.send(response(200, b"second"))

    server = await serve(handler)
    transport = make_transport(TransportLimits(max_connections=1))
    with trio.move_on_after(1.0) as scope:
        await transport.request(HTTPRequest("GET", server.url(), []))
    assert scope.cancelled_caught
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()  # the dirty connection was closed
        resp = await transport.request(HTTPRequest("GET", server.url(), []))
    assert resp.body == b"second"
    assert len(server.connections) == 2


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_server_closed_idle_connection_is_retried_once(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock, how: str
) -> None:
    """The server closes (or resets) a keep-alive connection while it sits in the pool.

    The next request finds it dead before any response byte (EOF, or an error
    on send or receive) and goes out again on a fresh connection: the server
    never saw it the first time.
    """

    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(response(200, f"conn {conn.index}".encode()))
        # and hang up, although the response promised keep-alive
        if how == "reset":
            conn.reset()

    server = await serve(handler)
    transport = make_transport()
    assert (await transport.request(HTTPRequest("GET", server.url(), []))).body == b"conn 0"
    with trio.fail_after(1.0):
        await server.connections[0].closed.wait()
    await trio.sleep(0.1)  # let the FIN reach the client's pooled socket
    resp = await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    assert resp.body == b"conn 1"
    assert len(server.connections) == 2
    assert len(server.requests) == 2  # the retried request was not seen twice


async def test_only_a_connection_idle_for_a_while_is_looked_at(
    serve: Serve, mock_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look for a server's hang-up is a system call per request: a connection back
    within PEER_CLOSE_CHECK_AFTER of its last response goes out without it, one idle
    that long gets it (and, alive, is still reused)."""
    looked: list[object] = []
    real = _trio._closed_by_peer

    def counting(conn: _trio._Connection) -> bool:
        looked.append(conn)
        return real(conn)

    monkeypatch.setattr(_trio, "_closed_by_peer", counting)
    server = await serve(fixed(response(200, b"ok")))
    transport = TrioTransport()
    for _ in range(3):
        assert (await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))).body == b"ok"
        mock_clock.jump(PEER_CLOSE_CHECK_AFTER / 2)
    assert looked == []
    mock_clock.jump(PEER_CLOSE_CHECK_AFTER / 2)
    assert (await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))).body == b"ok"
    await transport.aclose()
    assert len(looked) == 1
    assert len(server.connections) == 1


async def test_no_replay_after_response_bytes(
    make_transport: MakeTransport, serve: Serve, kind: str
) -> None:
    """A reused connection that dies after the response started is not replayed."""

    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(response(200, b"first"))
        if await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Le")

    server = await serve(handler)
    transport = make_transport()
    await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    # EOF mid-head is a broken connection (ReadError) on both transports.
    with pytest.raises(ReadError):
        await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    assert len(server.requests) == 2
    assert len(server.connections) == 1


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_fresh_connection_failure_is_not_retried(
    make_transport: MakeTransport, serve: Serve, kind: str, how: str
) -> None:
    """A new connection closed (or reset) after the request was sent: fail, do not resend."""

    async def handler(conn: ServerConn) -> None:
        await conn.read_request()
        if how == "reset":
            conn.reset()

    server = await serve(handler)
    transport = make_transport()
    # An RST and a clean close are both a ReadError, on both transports.
    with pytest.raises(ReadError):
        await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    assert len(server.requests) == 1
    assert len(server.connections) == 1


async def test_trio_idle_connections_expire(serve: Serve, autojump_clock: MockClock) -> None:
    """Trio transport: a connection idle past the expiry is closed, not offered.

    (httpx's expiry runs on the wall clock, which the virtual clock cannot move.)
    """
    server = await serve(fixed(response(200, b"ok")))
    transport = TrioTransport()
    await transport.request(HTTPRequest("GET", server.url(), []))
    await trio.sleep(6.0)
    await transport.request(HTTPRequest("GET", server.url(), []))
    await transport.aclose()
    assert len(server.connections) == 2
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()


async def test_requests_after_aclose_fail(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    server = await serve(fixed(response(200, b"ok")))
    transport = make_transport()
    await transport.request(HTTPRequest("GET", server.url(), []))
    await transport.aclose()
    with trio.fail_after(1.0):
        await server.connections[0].saw_eof.wait()  # the pooled connection was closed
    with pytest.raises(TransportError, match="closed"):
        await transport.request(HTTPRequest("GET", server.url(), []))
    with pytest.raises(TransportError, match="closed"):  # an origin never used before
        await transport.request(HTTPRequest("GET", "http://127.0.0.1:9/", []))


async def test_stale_retry_happens_once(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock, kind: str
) -> None:
    """Stale pooled connection, then the fresh one fails too: an error, no third try."""

    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None and conn.index == 0:
            await conn.send(response(200, b"first"))
        # later connections read the request and hang up without answering

    server = await serve(handler)
    transport = make_transport()
    await transport.request(HTTPRequest("GET", server.url(), []))
    with trio.fail_after(1.0):
        await server.connections[0].closed.wait()
    await trio.sleep(0.1)
    with pytest.raises(ReadError):
        await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    assert len(server.connections) == 2
    assert len(server.requests) == 2


async def test_configured_timeouts_do_not_disturb_keep_alive(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    """With read/write timeouts set (one scope per exchange), responses slower in
    total than the read timeout still succeed while bytes keep coming."""

    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
            await trio.sleep(0.8)
            await conn.send(b"cd")

    server = await serve(handler)
    transport = make_transport(
        TransportLimits(read_timeout=1.0, write_timeout=1.0, connect_timeout=1.0)
    )
    for _ in range(3):
        resp = await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
        assert resp.body == b"abcd"
        await trio.sleep(0.9)
    assert len(server.connections) == 1


async def test_reused_connection_reset_after_a_post_is_not_replayed(
    serve: Serve, autojump_clock: MockClock
) -> None:
    """The server reads a POST on a kept-alive connection, then resets it without answering.

    It may have acted on the request (a completion billed), so the trio transport
    must not send it again: the attempt fails as a retryable ReadError and the
    balancer's policy decides. (httpx/httpcore has its own policy here.)
    """

    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(response(200, b"first"))
        if await conn.read_request() is not None:
            conn.reset()

    server = await serve(handler)
    transport = TrioTransport()
    await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    with pytest.raises(ReadError):
        await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    await transport.aclose()
    assert len(server.requests) == 2  # the second POST reached the server exactly once
    assert len(server.connections) == 1


@pytest.fixture
def high_descriptors() -> Iterator[None]:
    """Occupy descriptors up to 1100, so the next sockets get numbers past FD_SETSIZE (1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200 if hard == resource.RLIM_INFINITY else min(hard, 1200)
    assert wanted > 1100, f"the open-files limit ({hard}) cannot hold this test's descriptors"
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    placeholders: list[int] = []
    try:
        with open(os.devnull, "rb") as devnull:
            while not placeholders or placeholders[-1] < 1100:
                placeholders.append(os.dup(devnull.fileno()))
        yield
    finally:
        for fd in placeholders:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("high_descriptors")
async def test_connection_on_a_descriptor_past_1024_is_reused(
    make_transport: MakeTransport, serve: Serve
) -> None:
    """The idle-connection check once used select(), which refuses descriptors >= 1024:
    every connection past the 1024th looked dead and was replaced on each request."""
    server = await serve(fixed(response(200, b"ok")))
    transport = make_transport()
    for _ in range(4):
        assert (await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))).body == b"ok"
    assert len(server.connections) == 1


async def test_a_cancelled_request_is_never_written(
    make_transport: MakeTransport, serve: Serve
) -> None:
    """Cancelled before its first byte went out (its caller gave up), a POST on a
    pooled connection must not reach the server: it could still be billed."""
    server = await serve(fixed(response(200, b"ok")))
    transport = make_transport()
    await transport.request(HTTPRequest("POST", server.url("/first"), [], b"{}"))
    with trio.CancelScope() as scope:
        scope.cancel()
        await transport.request(HTTPRequest("POST", server.url("/cancelled"), [], b"{}"))
    assert scope.cancelled_caught
    await transport.request(HTTPRequest("POST", server.url("/third"), [], b"{}"))
    await trio.testing.wait_all_tasks_blocked()
    assert [r.target for r in server.requests] == ["/first", "/third"]
