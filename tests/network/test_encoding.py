"""A server that compresses although we asked for identity: gzip/deflate decoded, the rest refused.

Compressed bytes are never parsed as text and wrong text is never a success;
the size cap applies to the decoded bytes (a bomb is an error).
"""

from __future__ import annotations

import gzip
import zlib
from typing import TYPE_CHECKING

import pytest

import llmlb_actors as llmlb
from llmlb_actors._transport import HTTPRequest, ResponseTooLarge
from tests.network.conftest import REQUEST, ask, chat_body, config, fetch, provider, sse_body
from tests.transport.servers import ServerConn, chunked, response

if TYPE_CHECKING:
    from tests.network.conftest import MakeTransport, Serve
    from tests.transport.servers import Handler


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "deflate-raw": raw_deflate,
}


def compressed(
    body: bytes, coding: str, *, status: int = 200, content_type: str = "application/json"
) -> Handler:
    """Answers with ``body`` compressed as ``coding``, whatever the request asked for."""
    encoded = ENCODERS[coding](body)
    name = "deflate" if coding == "deflate-raw" else coding

    async def handler(conn: ServerConn) -> None:
        while (request := await conn.read_request()) is not None:
            assert request.headers["accept-encoding"] == "identity"
            await conn.send(
                response(
                    status, encoded, [("Content-Type", content_type), ("Content-Encoding", name)]
                )
            )

    return handler


@pytest.mark.parametrize("coding", sorted(ENCODERS))
async def test_compressed_completion_is_decoded(
    transport_name: str, serve: Serve, coding: str
) -> None:
    origin = await serve(compressed(chat_body("pong"), coding))
    async with llmlb.open_balancer(config(transport_name, provider(origin.url("/v1")))) as lb:
        assert (await lb.request(REQUEST)).content == "pong"


async def test_compressed_stream_is_decoded(transport_name: str, serve: Serve) -> None:
    body = gzip.compress(sse_body("po", "ng"))
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]

    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(
                chunked(
                    200,
                    pieces,
                    [("Content-Type", "text/event-stream"), ("Content-Encoding", "gzip")],
                )
            )

    origin = await serve(handler)
    async with llmlb.open_balancer(config(transport_name, provider(origin.url("/v1")))) as lb:
        assert await ask(lb, stream=True) == "pong"


async def test_compressed_error_body_is_decoded_in_the_message(
    transport_name: str, serve: Serve
) -> None:
    error = b'{"error": {"message": "model not found", "type": "invalid_request_error"}}'
    origin = await serve(compressed(error, "gzip", status=400))
    async with llmlb.open_balancer(config(transport_name, provider(origin.url("/v1")))) as lb:
        with pytest.raises(llmlb.LoadBalancerError) as info:
            await lb.request(REQUEST)
    [attempt] = info.value.errors
    assert attempt.status == 400
    assert "model not found" in attempt.message


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "snappy"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_other_codings_are_refused_naming_the_coding_never_success(
    transport_name: str, serve: Serve, coding: str, stream: bool
) -> None:
    # A brotli stream whose meta-block is stored uncompressed carries the text in the clear:
    # read as identity it parses as an SSE event with the wrong text.
    body = sse_body("pong") if stream else chat_body("pong")
    crafted = b"\x1b\x03" + body

    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            kind = "text/event-stream" if stream else "application/json"
            headers = [("Content-Type", kind), ("Content-Encoding", coding)]
            await conn.send(response(200, crafted, headers))

    origin = await serve(handler)
    cfg = config(transport_name, provider(origin.url("/v1")), max_retries=2)
    async with llmlb.open_balancer(cfg) as lb:
        with pytest.raises(llmlb.LoadBalancerError) as info:
            await ask(lb, stream=stream)
    [error] = info.value.errors  # the same server will do it again: not retried there
    assert error.kind == "protocol"
    assert f"Content-Encoding: {coding}" in error.message
    assert "\\x" not in error.message
    assert "\x1b" not in error.message


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_decompression_bomb_is_an_error_not_an_out_of_memory(
    make_transport: MakeTransport, serve: Serve, stream: bool
) -> None:
    from llmlb_actors.transports import TransportLimits

    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB in ~64 KiB
    assert len(bomb) < 100_000

    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(response(200, bomb, [("Content-Encoding", "gzip")]))

    origin = await serve(handler)
    transport = make_transport(TransportLimits(max_response_bytes=1024 * 1024))
    with pytest.raises(ResponseTooLarge, match="decoded body over 1048576 bytes"):
        await fetch(transport, origin.url(), stream=stream)


async def test_corrupt_gzip_is_a_protocol_error(transport_name: str, serve: Serve) -> None:
    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            garbage = b"\x1f\x8b\x08\x00garbage-not-deflate"
            await conn.send(response(200, garbage, [("Content-Encoding", "gzip")]))

    origin = await serve(handler)
    cfg = config(transport_name, provider(origin.url("/v1")), max_retries=0)
    async with llmlb.open_balancer(cfg) as lb:
        with pytest.raises(llmlb.LoadBalancerError) as info:
            await lb.request(REQUEST)
    [error] = info.value.errors
    assert error.kind == "protocol"
    assert "corrupt gzip body" in error.message


async def test_identity_and_empty_bodies_pass_through(
    make_transport: MakeTransport, serve: Serve
) -> None:
    async def handler(conn: ServerConn) -> None:
        while (request := await conn.read_request()) is not None:
            if request.target == "/empty":
                await conn.send(response(204, b"", [("Content-Encoding", "gzip")], length=False))
            else:
                await conn.send(response(200, b"plain", [("Content-Encoding", "identity")]))

    origin = await serve(handler)
    transport = make_transport()
    assert (await transport.request(HTTPRequest("GET", origin.url(), []))).body == b"plain"
    empty = await transport.request(HTTPRequest("GET", origin.url("/empty"), []))
    assert (empty.status, empty.body) == (204, b"")
