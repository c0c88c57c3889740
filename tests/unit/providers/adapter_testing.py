"""Helpers for the adapter tests (imported by the test modules in this directory)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from llmlb_actors.providers._http import HTTPProvider

if TYPE_CHECKING:
    from llmlb_actors._models import LLMRequest, StreamChunk

Handler = Callable[[httpx.Request], httpx.Response]
MakeProvider = Callable[..., HTTPProvider]

KEY = "sk-test-SECRET-0123456789"


def sse_body(text: str) -> bytes:
    """A doc example (one event per blank-line-separated block) as wire bytes."""
    return text.strip("\n").encode() + b"\n\n"


def chunked(body: bytes, size: int) -> Sequence[bytes]:
    """Split ``body`` into pieces of ``size`` bytes (exercises SSE reassembly)."""
    return [body[i : i + size] for i in range(0, len(body), size)]


def _streamed(pieces: Sequence[bytes]) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    return gen()


def raw_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None, *, size: int = 0
) -> httpx.Response:
    """A response whose body arrives as a stream (``size``-byte pieces; 0: one piece).

    Always streamed, as from a network: an ``httpx.Response(content=bytes)`` is
    pre-read, which ``aiter_raw`` (used by HttpxTransport) refuses.
    """
    pieces = chunked(body, size) if size else [body]
    return httpx.Response(status, headers=headers, content=_streamed(pieces))


def sse_response(body: bytes, *, size: int = 0, status: int = 200) -> httpx.Response:
    """A streamed event-stream response, delivered in ``size``-byte pieces (0: whole)."""
    return raw_response(body, status, {"content-type": "text/event-stream"}, size=size)


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return raw_response(
        msgspec.json.encode(obj), status, {"content-type": "application/json", **(headers or {})}
    )


def body_of(request: httpx.Request) -> Any:
    return msgspec.json.decode(request.content)


async def collect(
    provider: HTTPProvider, request: LLMRequest, into: list[StreamChunk] | None = None
) -> list[StreamChunk]:
    """Every chunk of a stream; ``into`` keeps those received before an error."""
    got: list[StreamChunk] = [] if into is None else into
    async with provider.stream(request) as chunks:
        async for chunk in chunks:
            got.append(chunk)
    return got
