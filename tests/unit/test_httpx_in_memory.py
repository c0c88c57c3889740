"""HttpxTransport must read responses that httpx already holds in memory (MockTransport)."""

from __future__ import annotations

import httpx

from llmlb_actors._transport import HttpxTransport
from llmlb_actors._transport._base import HTTPRequest


def handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"echo": request.url.path})


async def test_whole_and_streamed_in_memory_bodies() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        transport = HttpxTransport(client=client)
        whole = await transport.request(HTTPRequest("GET", "http://x/a", []))
        assert whole.status == 200
        assert whole.body == b'{"echo":"/a"}'
        async with transport.stream(HTTPRequest("GET", "http://x/b", [])) as streamed:
            assert await streamed.aread() == b'{"echo":"/b"}'
