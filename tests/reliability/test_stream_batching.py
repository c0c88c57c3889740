"""Streams read in batches: whatever one socket read completes reaches the caller whole.

However the upstream's bytes are cut into reads (every byte offset, one byte
at a time, thousands of events in one read), the caller sees the same chunks
in the same order with the same ending, and the SSE size caps still hold.
A raw loopback server (``_servers.py``) writes each piece, then waits until
every task is blocked, so each piece is exactly one read on the client side.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import llmlb_actors as llmlb
from llmlb_actors.providers._http import MAX_SSE_LINE_BYTES
from tests.reliability import _servers as srv

if TYPE_CHECKING:
    from collections.abc import Sequence

REQ = llmlb.LLMRequest(prompt="stream please")


def openai_body(deltas: Sequence[str]) -> bytes:
    events = [srv.delta_event(d) for d in deltas]
    finish = {"id": "c1", "object": "chat.completion.chunk", "model": "m"}
    events.append(
        b"data: "
        + json.dumps(
            {**finish, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        ).encode()
        + b"\n\n"
    )
    usage = {"prompt_tokens": 2, "completion_tokens": len(deltas), "total_tokens": 2 + len(deltas)}
    events.append(b"data: " + json.dumps({**finish, "choices": [], "usage": usage}).encode())
    events.append(b"\n\ndata: [DONE]\n\n")
    return b"".join(events)


def anthropic_body(deltas: Sequence[str]) -> bytes:
    def event(kind: str, data: dict[str, Any]) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"

    start = {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 2}}}
    out = [event("message_start", start), event("ping", {"type": "ping"})]
    for d in deltas:
        delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": d}}
        out.append(event("content_block_delta", delta))
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    out.append(event("message_delta", {**end, "usage": {"output_tokens": len(deltas)}}))
    out.append(event("message_stop", {"type": "message_stop"}))
    return b"".join(out)


BODIES = {
    "openai-compatible": openai_body(["Hel", "lo", " wörld ✓"]),
    "anthropic": anthropic_body(["Hel", "lo", " wörld ✓"]),
}


class Pieces:
    """What the server sends for the next request: the body cut into reads."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []


async def _send_pieces(sock: trio.abc.Stream, pieces: list[bytes]) -> None:
    await sock.send_all(
        srv.head(200, ("Content-Type", "text/event-stream"), length=sum(map(len, pieces)))
    )
    for piece in pieces:
        await trio.testing.wait_all_tasks_blocked()  # the client read everything so far
        await sock.send_all(piece)


async def _collect(lb: llmlb.Balancer) -> tuple[list[llmlb.StreamChunk], str]:
    async with lb.stream(REQ) as chunks:
        got = [c async for c in chunks]
        return got, chunks.text  # type: ignore[attr-defined]


def _config(provider: str, server: srv.RawServer) -> llmlb.ProviderConfig:
    base = server.url("/v1" if provider == "openai-compatible" else "")
    return llmlb.ProviderConfig(
        name="p", provider=provider, base_url=base, model="m", api_key="sk-stream-test"
    )


@pytest.mark.parametrize("provider", sorted(BODIES))
async def test_events_split_across_reads_at_every_byte_offset(provider: str) -> None:
    body = BODIES[provider]
    plan = Pieces()

    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        await _send_pieces(sock, plan.pieces)

    async with trio.open_nursery() as nursery:
        server = await srv.start(nursery, handler)
        async with llmlb.open_balancer(
            providers=[_config(provider, server)], health_check_interval=None
        ) as lb:
            plan.pieces = [body]
            whole, text = await _collect(lb)
            assert [c.delta for c in whole if c.delta] == ["Hel", "lo", " wörld ✓"]
            assert text == "Hello wörld ✓"
            assert whole[-1].finish_reason == "stop"
            assert whole[-1].usage is not None
            assert whole[-1].usage.completion_tokens == 3
            assert {c.provider for c in whole} == {"p"}
            splits = [[body[:k], body[k:]] for k in range(1, len(body))]
            splits.append([body[i : i + 1] for i in range(len(body))])
            for pieces in splits:
                plan.pieces = pieces
                assert await _collect(lb) == (whole, text), pieces
            stats = lb.get_stats()["p"]
        nursery.cancel_scope.cancel()
    assert stats.streams_completed == len(splits) + 1
    assert stats.failed_requests == 0


async def test_thousands_of_events_in_one_read() -> None:
    deltas = [f"w{i} " for i in range(3000)]
    body = openai_body(deltas)

    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        await _send_pieces(sock, [body])

    async with trio.open_nursery() as nursery:
        server = await srv.start(nursery, handler)
        async with llmlb.open_balancer(
            providers=[_config("openai-compatible", server)], health_check_interval=None
        ) as lb:
            chunks, text = await _collect(lb)
        nursery.cancel_scope.cancel()
    assert [c.delta for c in chunks[:-1]] == deltas
    assert text == "".join(deltas)
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("transport", ["default", "httpx"])
async def test_a_stream_of_ten_thousand_tiny_chunks(transport: str) -> None:
    deltas = [chr(ord("a") + i % 26) for i in range(10_000)]
    body = openai_body(deltas)
    # Reads of every size: one event, a few, a ragged 7 bytes, thousands.
    cuts = [0]
    size = 1
    while cuts[-1] < len(body):
        cuts.append(min(len(body), cuts[-1] + size))
        size = {1: 7, 7: 300, 300: 9000, 9000: 1}[size]
    pieces = [body[a:b] for a, b in itertools.pairwise(cuts)]

    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        await _send_pieces(sock, pieces)

    async with trio.open_nursery() as nursery:
        server = await srv.start(nursery, handler)
        async with llmlb.open_balancer(
            providers=[_config("openai-compatible", server)],
            health_check_interval=None,
            transport=transport,
        ) as lb:
            chunks, text = await _collect(lb)
            stats = lb.get_stats()["p"]
        nursery.cancel_scope.cancel()
    assert len(chunks) == 10_001
    assert text == "".join(deltas)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 10_000
    assert stats.streams_completed == 1


@pytest.mark.parametrize("over", [0, 1], ids=["at-the-cap", "one-byte-past"])
async def test_a_one_mebibyte_event_past_the_line_cap_is_an_error(over: int) -> None:
    first = srv.delta_event("Hel") + srv.delta_event("lo")
    prefix = b'data: {"choices":[{"index":0,"delta":{"content":"'
    suffix = b'"}}]}'
    fill = MAX_SSE_LINE_BYTES + over - len(prefix) - len(suffix)
    huge = prefix + b"x" * fill + suffix  # one line of exactly the cap (+ over) bytes
    body = first + huge + b"\n\n" + b"data: [DONE]\n\n"

    async def handler(sock: trio.abc.Stream, request: srv.Request) -> None:
        await _send_pieces(
            sock, [first, huge[:300_000], huge[300_000:] + body[len(first + huge) :]]
        )

    async with trio.open_nursery() as nursery:
        server = await srv.start(nursery, handler)
        async with llmlb.open_balancer(
            providers=[_config("openai-compatible", server)], health_check_interval=None
        ) as lb:
            if over:
                with pytest.raises(llmlb.LLMError) as info:
                    await _collect(lb)
                error = info.value
                assert error.partial
                assert error.partial_text == "Hello"
                assert error.kind == "protocol"
                assert f"line longer than {MAX_SSE_LINE_BYTES} bytes" in error.message
            else:
                _chunks, text = await _collect(lb)
                assert text == "Hello" + "x" * fill
            stats = lb.get_stats()["p"]
        nursery.cancel_scope.cancel()
    assert stats.streams_failed == over
    assert stats.streams_completed == 1 - over
