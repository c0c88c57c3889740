"""Fifty origins: each gets its own keep-alive pool, capped per origin, reused across rounds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

import llmlb_actors as llmlb
from llmlb_actors._transport import HTTPRequest
from llmlb_actors.transports import TransportLimits
from tests.network.conftest import REQUEST, answers, config, provider
from tests.transport.servers import ServerConn, response

if TYPE_CHECKING:
    from tests.network.conftest import MakeTransport, Serve
    from tests.transport.servers import Server

ORIGINS = 50


async def slow_ok(conn: ServerConn) -> None:
    while await conn.read_request() is not None:
        await trio.sleep(0.01)  # long enough that a round's requests overlap
        await conn.send(response(200, b"ok"))


async def test_fifty_origins_pool_per_origin_and_reuse(
    make_transport: MakeTransport, serve: Serve
) -> None:
    servers: list[Server] = [await serve(slow_ok) for _ in range(ORIGINS)]
    transport = make_transport(TransportLimits(max_connections=4))

    async def one(server: Server) -> None:
        resp = await transport.request(HTTPRequest("GET", server.url(), []))
        assert resp.body == b"ok"

    async def round_of(per_origin: int) -> None:
        async with trio.open_nursery() as nursery:
            for server in servers:
                for _ in range(per_origin):
                    nursery.start_soon(one, server)

    await round_of(4)  # 200 requests at once
    opened = [len(s.connections) for s in servers]
    assert all(1 <= n <= 4 for n in opened)  # the cap is per origin, not for all 50
    assert max(s.max_open for s in servers) <= 4
    await round_of(4)
    assert [len(s.connections) for s in servers] == opened  # every one kept alive and reused


async def test_fifty_providers_through_the_balancer(transport_name: str, serve: Serve) -> None:
    servers: list[Server] = [await serve(answers(f"origin {i}")) for i in range(ORIGINS)]
    providers = [
        provider(server.url("/v1"), f"p{i}", max_concurrency=2) for i, server in enumerate(servers)
    ]
    async with llmlb.open_balancer(config(transport_name, *providers)) as lb:
        answers_seen: list[str] = []

        async def one() -> None:
            answers_seen.append((await lb.request(REQUEST)).content)

        for _ in range(2):
            async with trio.open_nursery() as nursery:
                for _ in range(4 * ORIGINS):
                    nursery.start_soon(one)
    assert len(answers_seen) == 8 * ORIGINS
    assert len(set(answers_seen)) == ORIGINS  # round-robin reached every origin
    assert all(len(s.connections) <= 2 for s in servers)  # each provider's max_concurrency
