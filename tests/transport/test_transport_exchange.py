"""Whole exchanges that go right: methods, headers, body framings, 1xx, HEAD/204, redirects."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from llmlb_actors._transport import HTTPRequest, Transport, TransportLimits, make_transport
from llmlb_actors._transport._httpx import HttpxTransport
from llmlb_actors._transport._trio import TrioTransport
from tests.transport.servers import ServerConn, chunked, fixed, response

if TYPE_CHECKING:
    from tests.transport.helpers import MakeTransport, Serve


async def test_get_round_trip(make_transport: MakeTransport, serve: Serve) -> None:
    server = await serve(fixed(response(200, b"hello", [("Content-Type", "text/plain")])))
    transport = make_transport()
    resp = await transport.request(HTTPRequest("GET", server.url("/v1/models?page=2"), []))
    assert resp.status == 200
    assert resp.body == b"hello"
    assert resp.headers["content-type"] == "text/plain"
    (request,) = server.requests
    assert (request.method, request.target, request.body) == ("GET", "/v1/models?page=2", b"")
    assert request.headers["host"] == f"127.0.0.1:{server.port}"


async def test_post_round_trip(make_transport: MakeTransport, serve: Serve) -> None:
    server = await serve(fixed(response(201, b'{"ok":true}')))
    transport = make_transport()
    body = b'{"model":"m","messages":[]}'
    headers = [("content-type", "application/json"), ("authorization", "Bearer sk-x")]
    resp = await transport.request(HTTPRequest("POST", server.url("/v1/chat"), headers, body))
    assert (resp.status, resp.body) == (201, b'{"ok":true}')
    (request,) = server.requests
    assert request.method == "POST"
    assert request.body == body
    assert request.headers["content-length"] == str(len(body))
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer sk-x"


async def test_never_advertises_compression(make_transport: MakeTransport, serve: Serve) -> None:
    """Bodies are handed over raw, so the transport must ask for identity coding."""
    server = await serve(fixed(response(200, b"plain")))
    transport = make_transport()
    await transport.request(HTTPRequest("GET", server.url(), []))
    await transport.request(HTTPRequest("GET", server.url(), [("Accept-Encoding", "gzip, br")]))
    assert [r.headers["accept-encoding"] for r in server.requests] == ["identity", "identity"]
    assert [r.head.lower().count(b"accept-encoding") for r in server.requests] == [1, 1]


async def test_large_request_body(make_transport: MakeTransport, serve: Serve) -> None:
    """Bodies above the one-send size go out as head then body."""
    server = await serve(fixed(response(200, b"ok")))
    transport = make_transport()
    body = bytes(range(256)) * 1024  # 256 KiB
    resp = await transport.request(HTTPRequest("POST", server.url(), [], body))
    assert resp.body == b"ok"
    assert server.requests[0].body == body


async def test_response_headers_lower_case_and_repeats_joined(
    make_transport: MakeTransport, serve: Serve
) -> None:
    headers = [("X-Multi", "1"), ("Set-Cookie", "a=1"), ("x-multi", "2"), ("X-MULTI", "3")]
    server = await serve(fixed(response(200, b"", headers)))
    resp = await make_transport().request(HTTPRequest("GET", server.url(), []))
    assert resp.headers["x-multi"] == "1, 2, 3"
    assert resp.headers["set-cookie"] == "a=1"
    assert all(key == key.lower() for key in resp.headers)


async def test_content_length_body(make_transport: MakeTransport, serve: Serve) -> None:
    body = b"x" * 200_000  # spans many reads
    server = await serve(fixed(response(200, body)))
    resp = await make_transport().request(HTTPRequest("GET", server.url(), []))
    assert resp.body == body


async def test_chunked_body_is_dechunked(make_transport: MakeTransport, serve: Serve) -> None:
    server = await serve(fixed(chunked(200, [b"hello ", b"chunked ", b"x" * 70_000, b" world"])))
    resp = await make_transport().request(HTTPRequest("GET", server.url(), []))
    assert resp.body == b"hello chunked " + b"x" * 70_000 + b" world"
    assert resp.headers["transfer-encoding"] == "chunked"


async def test_eof_delimited_body(make_transport: MakeTransport, serve: Serve) -> None:
    """No Content-Length, not chunked: the body ends when the server closes.

    The connection cannot be reused afterwards, so the next request opens a
    second one.
    """

    async def handler(conn: ServerConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(response(200, b"until the end", length=False))

    server = await serve(handler)
    transport = make_transport()
    for _ in range(2):
        resp = await transport.request(HTTPRequest("GET", server.url(), []))
        assert resp.body == b"until the end"
    assert len(server.connections) == 2


async def test_interim_1xx_responses_are_skipped(
    make_transport: MakeTransport, serve: Serve
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    server = await serve(fixed(interim + response(200, b"final", [("X-Final", "yes")])))
    transport = make_transport()
    resp = await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    assert (resp.status, resp.body) == (200, b"final")
    assert resp.headers["x-final"] == "yes"
    assert "link" not in resp.headers  # the interim response's headers are not the final ones
    # The connection stays usable after the interim responses.
    resp = await transport.request(HTTPRequest("POST", server.url(), [], b"{}"))
    assert resp.body == b"final"
    assert len(server.connections) == 1


async def test_head_has_no_body_and_keeps_the_connection(
    make_transport: MakeTransport, serve: Serve
) -> None:
    """A HEAD response advertises a Content-Length but carries no body."""

    async def handler(conn: ServerConn) -> None:
        while (request := await conn.read_request()) is not None:
            if request.method == "HEAD":
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                await conn.send(response(200, b"after head"))

    server = await serve(handler)
    transport = make_transport()
    # Before and after the HEAD: the connection's reused parser must not expect its body.
    before = await transport.request(HTTPRequest("GET", server.url(), []))
    assert before.body == b"after head"
    head = await transport.request(HTTPRequest("HEAD", server.url(), []))
    assert (head.status, head.body) == (200, b"")
    assert head.headers["content-length"] == "1000"
    for _ in range(2):
        after = await transport.request(HTTPRequest("GET", server.url(), []))
        assert after.body == b"after head"
        assert after.headers["content-length"] == "10"
    assert len(server.connections) == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(make_transport: MakeTransport, serve: Serve, status: int) -> None:
    server = await serve(fixed(f"HTTP/1.1 {status} X\r\nX-A: b\r\n\r\n".encode()))
    transport = make_transport()
    for _ in range(2):
        resp = await transport.request(HTTPRequest("GET", server.url(), []))
        assert (resp.status, resp.body, resp.headers["x-a"]) == (status, b"", "b")
    assert len(server.connections) == 1


async def test_redirect_is_returned_not_followed(
    make_transport: MakeTransport, serve: Serve
) -> None:
    server = await serve(fixed(response(307, b"moved", [("Location", "/elsewhere")])))
    resp = await make_transport().request(HTTPRequest("POST", server.url("/v1/chat"), [], b"{}"))
    assert resp.status == 307
    assert resp.headers["location"] == "/elsewhere"
    assert [r.target for r in server.requests] == ["/v1/chat"]


async def test_error_statuses_are_responses(make_transport: MakeTransport, serve: Serve) -> None:
    server = await serve(fixed(response(429, b'{"error":"slow down"}', [("Retry-After", "2")])))
    resp = await make_transport().request(HTTPRequest("POST", server.url(), [], b"{}"))
    assert (resp.status, resp.headers["retry-after"]) == (429, "2")


async def test_header_injection_is_rejected_before_sending(
    make_transport: MakeTransport, serve: Serve
) -> None:
    server = await serve(fixed(response(200, b"")))
    transport = make_transport()
    bad = HTTPRequest("GET", server.url(), [("x-api-key", "sk-secret\r\nx-evil: 1")])
    with pytest.raises(ValueError, match="x-api-key") as info:
        await transport.request(bad)
    assert "sk-secret" not in str(info.value)
    assert server.requests == []


async def test_make_transport() -> None:
    limits = TransportLimits(max_connections=3)
    made: list[Transport] = []
    kinds = [("default", TrioTransport), ("trio", TrioTransport), ("httpx", HttpxTransport)]
    for kind, cls in kinds:
        transport = make_transport(kind, limits)
        made.append(transport)
        assert type(transport) is cls
        assert isinstance(transport, Transport)
        assert getattr(transport, "limits", None) is limits
    for transport in made:
        await transport.aclose()
    with pytest.raises(ValueError, match="unknown transport 'h2'"):
        make_transport("h2", limits)


async def test_nothing_of_a_response_leaks_into_the_next_on_its_connection(
    make_transport: MakeTransport, serve: Serve
) -> None:
    async def handler(conn: ServerConn) -> None:
        while (request := await conn.read_request()) is not None:
            if request.target == "/a":
                await conn.send(response(503, b"first", [("X-Only-A", "1")]))
            else:
                await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    server = await serve(handler)
    transport = make_transport()
    first = await transport.request(HTTPRequest("POST", server.url("/a"), [], b"{}"))
    second = await transport.request(HTTPRequest("POST", server.url("/b"), [], b"{}"))
    assert (first.status, first.body, first.headers["x-only-a"]) == (503, b"first", "1")
    assert (second.status, second.body) == (200, b"")
    assert "x-only-a" not in second.headers
    assert len(server.connections) == 1
