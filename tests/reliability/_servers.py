"""Tiny raw HTTP/1.1 servers on trio sockets (127.0.0.1, ephemeral port) that misbehave.

A test gives a handler ``async (stream, request) -> None`` that writes
whatever bytes it wants; the server reads one request head and body per call
(enough for the balancer, which sends ``content-length`` bodies) and records
what it received, so tests can also check that nothing arrived.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import NamedTuple

import trio


class Request(NamedTuple):
    head: bytes
    body: bytes

    @property
    def raw(self) -> bytes:
        return self.head + self.body


Handler = Callable[[trio.abc.Stream, Request], Awaitable[None]]


class RawServer:
    """Counts connections and requests; one handler call per request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.connections = 0
        self.requests: list[Request] = []
        self.closed_by_client = 0

    def url(self, path: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def serve(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        buffer = bytearray()
        try:
            while True:
                request = await _read_request(stream, buffer)
                if request is None:
                    return
                self.requests.append(request)
                await self.handler(stream, request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed_by_client += 1
        finally:
            await trio.aclose_forcefully(stream)


async def _read_request(stream: trio.abc.Stream, buffer: bytearray) -> Request | None:
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buffer) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    body = bytes(buffer[:length])
    del buffer[:length]
    return Request(head, body)


async def start(nursery: trio.Nursery, handler: Handler) -> RawServer:
    server = RawServer(handler)
    listeners = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    return server


def head(status: int = 200, *headers: tuple[str, str], length: int | None = None) -> bytes:
    """A response head; ``length=None`` means chunked transfer-encoding."""
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{k}: {v}" for k, v in headers]
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def whole(status: int, body: bytes, *headers: tuple[str, str]) -> bytes:
    return head(status, ("Content-Type", "application/json"), *headers, length=len(body)) + body


def completion(content: str = "fine", model: str = "m") -> bytes:
    """A minimal OpenAI chat completion body."""
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def delta_event(text: str) -> bytes:
    """One OpenAI streaming chunk as an SSE event."""
    payload = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
