"""Errors that say what broke, in words a person knows, the same from both transports."""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

import pytest
import trio

import llmlb_actors as llmlb
from llmlb_actors._transport import (
    ConnectError,
    ConnectTimeout,
    HTTPRequest,
    PoolTimeout,
    ReadError,
    ReadTimeout,
)
from llmlb_actors.transports import TransportLimits
from tests.network.conftest import REQUEST, config, provider

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trio.testing import MockClock

    from tests.network.conftest import MakeTransport, Serve
    from tests.transport.servers import ServerConn

NOISE = ("ExceptionGroup", "sub-exception", "all attempts", "ConnectError:", "OSError")


def quiet(message: str) -> bool:
    return message.strip() != "" and not any(noise in message for noise in NOISE)


async def test_refused_port_says_connection_refused(transport_name: str, unused_port: int) -> None:
    cfg = config(transport_name, provider(f"http://127.0.0.1:{unused_port}/v1"), max_retries=0)
    async with llmlb.open_balancer(cfg) as lb:
        with pytest.raises(llmlb.LoadBalancerError) as info:
            await lb.request(REQUEST)
    [error] = info.value.errors
    assert error.kind == "connection"
    assert error.retryable
    assert error.message == f"connection refused (http://127.0.0.1:{unused_port})"


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port whose connects hang: a listener that never accepts, its backlog already full.

    Linux drops the SYN of a connect to a listener whose accept queue is full, so the
    connect waits (retransmitting on loopback) until the client gives up.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # a backlog of 0 still queues one or two handshakes
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_black_holed_connect_times_out_with_the_connect_timeout(
    make_transport: MakeTransport, black_hole: int, autojump_clock: MockClock
) -> None:
    transport = make_transport(TransportLimits(connect_timeout=7.0))
    start = trio.current_time()
    with pytest.raises(ConnectTimeout) as info:
        await transport.request(HTTPRequest("GET", f"http://127.0.0.1:{black_hole}/", []))
    assert trio.current_time() - start == pytest.approx(7.0)
    assert str(info.value) == f"timed out after 7 s connecting (http://127.0.0.1:{black_hole})"


async def test_stalled_response_names_the_read_timeout(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.wait_eof()

    origin = await serve(handler)
    transport = make_transport(TransportLimits(read_timeout=30.0))
    with pytest.raises(ReadTimeout) as info:
        await transport.request(HTTPRequest("GET", origin.url(), []))
    assert str(info.value) == (
        f"timed out after 30 s reading the response (http://127.0.0.1:{origin.port})"
    )


async def test_reset_says_connection_reset(make_transport: MakeTransport, serve: Serve) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await trio.sleep(0.05)
            conn.reset()

    origin = await serve(handler)
    with pytest.raises(ReadError) as info:
        await make_transport().request(HTTPRequest("GET", origin.url(), []))
    assert str(info.value) == (
        f"connection reset by peer while reading the response (http://127.0.0.1:{origin.port})"
    )


async def test_closed_without_response_says_so(make_transport: MakeTransport, serve: Serve) -> None:
    async def handler(conn: ServerConn) -> None:
        await conn.read_request()

    origin = await serve(handler)
    with pytest.raises(ReadError) as info:
        await make_transport().request(HTTPRequest("POST", origin.url(), [], b"{}"))
    assert str(info.value) == (
        f"server closed the connection without a response (http://127.0.0.1:{origin.port})"
    )


class _NoSuchName(trio.abc.HostnameResolver):
    """Answers every name with "not found" (so no DNS query leaves the machine)."""

    async def getaddrinfo(self, host: bytes | None, port: object, *args: object) -> list[object]:
        if host in (b"127.0.0.1", "127.0.0.1"):
            return await trio.to_thread.run_sync(socket.getaddrinfo, "127.0.0.1", port, *args)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, sockaddr: object, flags: int) -> tuple[str, str]:
        raise NotImplementedError


async def test_unknown_name_says_dns_name_not_found(make_transport: MakeTransport) -> None:
    previous = trio.socket.set_custom_hostname_resolver(_NoSuchName())
    try:
        with pytest.raises(ConnectError) as info:
            await make_transport().request(HTTPRequest("GET", "https://api.nowhere.invalid/v1", []))
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    assert str(info.value) == "DNS: name not found: api.nowhere.invalid"


async def test_messages_carry_no_exception_group_noise(
    transport_name: str, unused_port: int
) -> None:
    cfg = config(transport_name, provider(f"http://127.0.0.1:{unused_port}/v1"), max_retries=1)
    async with llmlb.open_balancer(cfg) as lb:
        with pytest.raises(llmlb.LoadBalancerError) as info:
            await lb.request(REQUEST)
    assert all(quiet(error.message) for error in info.value.errors)
    assert quiet(str(info.value))


async def test_full_pool_names_the_pool_timeout(
    make_transport: MakeTransport, serve: Serve, autojump_clock: MockClock
) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.wait_eof()  # holds the only connection

    origin = await serve(handler)
    transport = make_transport(TransportLimits(max_connections=1, pool_timeout=2.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.request, HTTPRequest("GET", origin.url("/hold"), []))
        await trio.sleep(1)
        with pytest.raises(PoolTimeout) as info:
            await transport.request(HTTPRequest("GET", origin.url(), []))
        nursery.cancel_scope.cancel()
    assert str(info.value) == (
        f"timed out after 2 s waiting for a free connection (http://127.0.0.1:{origin.port})"
    )
