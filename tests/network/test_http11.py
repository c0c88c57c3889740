"""HTTP/1.1 framing details both transports must get right."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from llmlb_actors._transport import HTTPRequest, RemoteProtocolError
from tests.network.conftest import fetch
from tests.transport.servers import ServerConn, chunk

if TYPE_CHECKING:
    from tests.network.conftest import MakeTransport, Serve
    from tests.transport.servers import Handler

TRAILED = (
    b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n"
    b"Trailer: Retry-After, X-Checksum\r\n\r\n"
    + chunk(b"slow down")
    + b"0\r\nRetry-After: 3600\r\nX-Checksum: abc\r\n\r\n"
)


def trailed(conn_log: list[int]) -> Handler:
    async def handler(conn: ServerConn) -> None:
        conn_log.append(conn.index)
        while await conn.read_request() is not None:
            await conn.send(TRAILED)

    return handler


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_trailer_fields_are_not_headers(
    make_transport: MakeTransport, serve: Serve, stream: bool
) -> None:
    connections: list[int] = []
    origin = await serve(trailed(connections))
    transport = make_transport()
    for _ in range(2):
        if stream:
            async with transport.stream(HTTPRequest("GET", origin.url(), [])) as resp:
                headers, body = resp.headers, await resp.aread()
        else:
            whole = await transport.request(HTTPRequest("GET", origin.url(), []))
            headers, body = whole.headers, whole.body
        assert body == b"slow down"
        assert "retry-after" not in headers  # a trailer must not steer backoff
        assert "x-checksum" not in headers
        assert headers["trailer"] == "Retry-After, X-Checksum"
    assert connections == [0]  # and the connection stays usable


CL_AND_TE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    + chunk(b"hello")
    + b"0\r\n\r\n"
)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    make_transport: MakeTransport, serve: Serve, stream: bool
) -> None:
    async def handler(conn: ServerConn) -> None:
        while (request := await conn.read_request()) is not None:
            if request.target == "/both":
                await conn.send(CL_AND_TE)
            else:
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    origin = await serve(handler)
    transport = make_transport()
    with pytest.raises(RemoteProtocolError, match=r"(?i)content-length"):
        await fetch(transport, origin.url("/both"), stream=stream)
    with trio.fail_after(5):
        await origin.connections[0].closed.wait()  # the client closed it: never reused
    after = await transport.request(HTTPRequest("GET", origin.url("/fine"), []))
    assert after.body == b"ok"
    assert len(origin.connections) == 2
