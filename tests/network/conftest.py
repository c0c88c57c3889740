"""The network suite: every test runs over both transports, with the same assertions.

Everything listens on 127.0.0.1: origins (``tests.transport.servers``), a
TLS origin whose certificate comes from a private CA (trustme), and a
CONNECT proxy written for these tests (``tests.network.proxy``).
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import trustme

import llmlb_actors as llmlb
from llmlb_actors.transports import HttpxTransport, Transport, TransportLimits, TrioTransport
from tests.network.proxy import TestProxy, start_proxy
from tests.transport.servers import Handler, Server, ServerConn, response, start_server

if TYPE_CHECKING:
    from pathlib import Path

    import trio

KEY = "sk-network-test-key-7d1e0c"


class MakeTransport(Protocol):
    def __call__(self, limits: TransportLimits | None = None, **options: Any) -> Transport: ...


Serve = Callable[..., Awaitable[Server]]
MakeProxy = Callable[..., Awaitable[TestProxy]]


@pytest.fixture(params=["default", "httpx"])
def transport_name(request: pytest.FixtureRequest) -> str:
    """The balancer's ``transport=`` for this run of the test."""
    return str(request.param)


@pytest.fixture
async def make_transport(transport_name: str) -> AsyncIterator[MakeTransport]:
    """Public transport constructors, same options for both; closed after the test."""
    made: list[Transport] = []

    def make(limits: TransportLimits | None = None, **options: Any) -> Transport:
        cls = TrioTransport if transport_name == "default" else HttpxTransport
        transport: Transport = cls(limits, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.aclose()


@pytest.fixture
def serve(nursery: trio.Nursery) -> Serve:
    async def start(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> Server:
        return await start_server(nursery, handler, ssl_context=ssl_context)

    return start


@pytest.fixture
def make_proxy(nursery: trio.Nursery) -> MakeProxy:
    async def start(auth: tuple[str, str] | None = None) -> TestProxy:
        return await start_proxy(nursery, TestProxy(auth))

    return start


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def chat_body(text: str) -> bytes:
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def sse_body(*deltas: str) -> bytes:
    events = [
        "data: "
        + json.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}],
            }
        )
        + "\n\n"
        for d in deltas
    ]
    return ("".join(events) + "data: [DONE]\n\n").encode()


def answers(text: str, headers: tuple[tuple[str, str], ...] = ()) -> Handler:
    """Every request on a connection gets a chat completion with ``text``."""

    async def handler(conn: ServerConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(
                response(200, chat_body(text), [("Content-Type", "application/json"), *headers])
            )

    return handler


def provider(url: str, name: str = "p", **fields: Any) -> llmlb.ProviderConfig:
    """An openai-compatible provider at ``url`` (the API root)."""
    return llmlb.ProviderConfig(
        name=name, provider="openai-compatible", base_url=url, api_key=KEY, model="m", **fields
    )


def config(transport_name: str, *providers: llmlb.ProviderConfig, **fields: Any) -> Any:
    fields.setdefault("health_check_interval", None)
    fields.setdefault("retry_delay", 0.0)
    return llmlb.BalancerConfig(providers=list(providers), transport=transport_name, **fields)


REQUEST = llmlb.LLMRequest(prompt="ping")


async def fetch(transport: Transport, url: str, *, stream: bool) -> bytes:
    """The body of a GET to ``url``, read whole or as a stream."""
    from llmlb_actors._transport import HTTPRequest

    if not stream:
        return (await transport.request(HTTPRequest("GET", url, []))).body
    async with transport.stream(HTTPRequest("GET", url, [])) as resp:
        return b"".join([chunk async for chunk in resp.aiter_bytes()])


async def ask(lb: llmlb.Balancer, *, stream: bool) -> str:
    """The answer's text, from a whole request or a stream."""
    if not stream:
        return (await lb.request(REQUEST)).content
    async with lb.stream(REQUEST) as chunks:
        return "".join([chunk.delta async for chunk in chunks])
