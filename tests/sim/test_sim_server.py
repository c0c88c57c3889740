"""The HTTP server itself: framing, keep-alive, limits, lifetime, stats and the public handle."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import msgspec
import pytest
import trio

from llmlb_actors._config import ProviderConfig
from llmlb_actors.sim import Behaviour, SimProvider, Simulator, open_simulator, serve_simulator
from tests.sim.helpers import KEYS, chat_request, providers
from tests.sim.helpers import client as make_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio.testing import MockClock

OPENAI_BODY = msgspec.json.encode(
    {"model": "gpt-sim", "messages": [{"role": "user", "content": "hello raw world"}]}
)


def raw_request(
    body: bytes = OPENAI_BODY, *, extra: bytes = b"", path: bytes = b"/v1/chat/completions"
) -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nhost: sim\r\n"
        b"authorization: Bearer " + KEYS["openai"].encode() + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: %d\r\n" % len(body) + extra + b"\r\n" + body
    )


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def read_responses(stream: trio.SocketStream, count: int) -> list[tuple[bytes, bytes]]:
    """Read ``count`` Content-Length framed responses: ``(head, body)`` each."""
    buffer = b""
    out: list[tuple[bytes, bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = await stream.receive_some(65536)
            assert chunk, "connection closed early"
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(rest) < length:
            chunk = await stream.receive_some(65536)
            assert chunk, "connection closed early"
            rest += chunk
        out.append((head, rest[:length]))
        buffer = rest[length:]
    return out


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(providers()) as simulator:
        yield simulator


async def connect(sim: Simulator, name: str = "openai") -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", sim.port(name))


# -- framing ------------------------------------------------------------------------


async def test_keep_alive_serves_many_requests_on_one_connection(sim: Simulator) -> None:
    sim.script("openai", ["ok", "503", "ok"])
    async with make_client() as client:
        for stream in (False, True, False, True, False):
            url, headers, body = chat_request(sim, "openai", stream=stream)
            await client.post(url, headers=headers, json=body)
        await client.get(sim.url("openai") + "/v1/models", headers=headers)
    stats = sim.stats("openai")
    assert (stats.connections, stats.requests, stats.streams) == (1, 5, 2)
    assert stats.health_probes == 1


async def test_chunked_request_body_is_accepted(sim: Simulator) -> None:
    half = len(OPENAI_BODY) // 2
    body = b"%x\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n" % (
        half,
        OPENAI_BODY[:half],
        len(OPENAI_BODY) - half,
        OPENAI_BODY[half:],
    )
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\n"
        b"authorization: Bearer key-openai\r\ntransfer-encoding: chunked\r\n\r\n" + body
    )
    async with await connect(sim) as stream:
        await stream.send_all(request)
        [(head, answer)] = await read_responses(stream, 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert msgspec.json.decode(answer)["usage"]["prompt_tokens"] == 3
    assert sim.stats("openai").last_body == OPENAI_BODY


async def test_requests_split_across_many_writes_and_pipelined(sim: Simulator) -> None:
    request = raw_request()
    async with await connect(sim) as stream:
        for i in range(0, len(request), 7):
            await stream.send_all(request[i : i + 7])
        await stream.send_all(request + request)  # two at once
        answers = await read_responses(stream, 3)
    assert [head.split(b"\r\n")[0] for head, _ in answers] == [b"HTTP/1.1 200 OK"] * 3
    assert sim.stats("openai").connections == 1


async def test_connection_close_is_honoured(sim: Simulator) -> None:
    async with await connect(sim) as stream:
        await stream.send_all(raw_request(extra=b"connection: close\r\n"))
        data = await read_until_closed(stream)
    assert b"\r\nconnection: close\r\n" in data
    assert data.startswith(b"HTTP/1.1 200")


async def test_http10_stream_is_unchunked_and_closes(sim: Simulator) -> None:
    body = msgspec.json.encode(
        {"model": "gpt-sim", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    request = raw_request(body).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    async with await connect(sim) as stream:
        await stream.send_all(request)
        data = await read_until_closed(stream)
    head, _, events = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head
    assert b"text/event-stream" in head
    assert events.startswith(b"data: {")
    assert events.endswith(b"data: [DONE]\n\n")


async def test_expect_100_continue(sim: Simulator) -> None:
    request = raw_request(extra=b"expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    async with await connect(sim) as stream:
        await stream.send_all(head + b"\r\n\r\n")
        interim = await stream.receive_some(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await stream.send_all(body)
        [(final, _)] = await read_responses(stream, 1)
    assert final.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (raw_request(b"x" * 10, extra=b"x-pad: " + b"a" * 70_000 + b"\r\n"), b"431"),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\ncontent-length: 9000000\r\n\r\n",
            b"413",
        ),
    ],
)
async def test_bad_or_oversized_requests_are_refused_and_closed(
    sim: Simulator, request_bytes: bytes, status: bytes
) -> None:
    async with await connect(sim) as stream:
        await stream.send_all(request_bytes)
        await stream.send_eof()
        data = await read_until_closed(stream)
    assert data.startswith(b"HTTP/1.1 " + status)
    assert b"connection: close" in data
    assert msgspec.json.decode(data.partition(b"\r\n\r\n")[2])["error"]["message"]


async def test_oversized_chunked_body_is_refused(sim: Simulator) -> None:
    piece = b"x" * 1_000_000
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    async with await connect(sim) as stream:
        await stream.send_all(request)
        for _ in range(9):
            await stream.send_all(b"%x\r\n%b\r\n" % (len(piece), piece))
        await stream.send_eof()
        data = await read_until_closed(stream)
    assert data.startswith(b"HTTP/1.1 413")


# -- disconnects and lifetime ---------------------------------------------------------


async def test_client_leaving_mid_stream_does_not_hurt_the_server(
    sim: Simulator, autojump_clock: MockClock
) -> None:
    sim.set_behaviour("openai", Behaviour(token_delay=1.0, chunks=8))
    body = msgspec.json.encode(
        {"model": "gpt-sim", "stream": True, "messages": [{"role": "user", "content": "x y"}]}
    )
    for _ in range(3):
        stream = await connect(sim)
        await stream.send_all(raw_request(body))
        assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")
        await stream.aclose()
    await trio.sleep(20)  # the server tries to write the rest into closed sockets
    async with make_client() as client:
        url, headers, body_json = chat_request(sim, "openai")
        assert (await client.post(url, headers=headers, json=body_json)).status_code == 200


async def test_stop_refuses_connections_and_closes_open_ones(sim: Simulator) -> None:
    idle = await connect(sim, "cohere")
    port = sim.port("cohere")
    await sim.stop_provider("cohere")
    assert not sim.is_running("cohere")
    assert await idle.receive_some(100) == b""  # the server closed our keep-alive connection
    await idle.aclose()
    with pytest.raises(OSError, match="attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", port)
    async with make_client() as client:
        url, headers, body = chat_request(sim, "openai")
        assert (await client.post(url, headers=headers, json=body)).status_code == 200
        await sim.restart_provider("cohere")
        assert sim.port("cohere") == port
        url, headers, body = chat_request(sim, "cohere")
        assert (await client.post(url, headers=headers, json=body)).status_code == 200
    assert sim.stats("cohere").requests == 1


async def test_add_at_runtime_and_name_reuse(sim: Simulator) -> None:
    url = await sim.add(SimProvider(name="extra", protocol="mistral", model="m"))
    assert url == sim.url("extra")
    assert "extra" in sim.names
    async with make_client() as client:
        response = await client.post(
            sim.base_url("extra") + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.json()["choices"][0]["message"]["content"].startswith(
            "Simulated reply from extra"
        )
    with pytest.raises(ValueError, match="already running"):
        await sim.add(SimProvider(name="extra", protocol="openai"))
    await sim.stop_provider("extra")
    await sim.add(SimProvider(name="extra", protocol="openai"))
    assert sim.provider("extra").protocol == "openai"
    assert sim.stats("extra").requests == 0


async def test_exit_closes_listeners_and_hanging_connections() -> None:
    async with open_simulator(providers()) as sim:
        sim.script("gemini", ["hang"])
        port = sim.port("gemini")
        hanging = await connect(sim, "gemini")
        url, _headers, body = chat_request(sim, "gemini")
        target = url.split(str(port), 1)[1].encode()
        await hanging.send_all(
            b"POST " + target + b" HTTP/1.1\r\nhost: s\r\nx-goog-api-key: key-gemini\r\n"
            b"content-length: %d\r\n\r\n%b"
            % (len(msgspec.json.encode(body)), msgspec.json.encode(body))
        )
        await trio.testing.wait_all_tasks_blocked()
        assert sim.stats("gemini").outcomes == {"hang": 1}
    assert await hanging.receive_some(100) == b""
    await hanging.aclose()
    with pytest.raises(OSError, match="attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_fixed_ports_and_serve_simulator() -> None:
    async with open_simulator([SimProvider(name="a")]) as first:
        port = first.port("a")
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(
            partial(serve_simulator, [SimProvider(name="a")], ports={"a": port})
        )
        assert isinstance(sim, Simulator)
        assert sim.url("a") == f"http://127.0.0.1:{port}"
        async with make_client() as client:
            assert (await client.get(sim.url("a") + "/v1/models")).status_code == 200
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("host", ["0.0.0.0", "::1", "10.0.0.1", "example.com", ""])
async def test_only_loopback_hosts_are_accepted(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        async with open_simulator([SimProvider(name="a")], host=host):
            pass  # pragma: no cover


async def test_localhost_binds_ipv4_loopback() -> None:
    async with open_simulator([SimProvider(name="a")], host="localhost") as sim:
        assert sim.url("a").startswith("http://127.0.0.1:")


async def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        async with open_simulator([SimProvider(name="a"), SimProvider(name="a")]):
            pass  # pragma: no cover


async def test_errors_in_the_block_come_out_unwrapped() -> None:
    with pytest.raises(KeyError, match="boom"):
        async with open_simulator([SimProvider(name="a")]):
            raise KeyError("boom")


# -- stats and the public handle ---------------------------------------------------------


async def test_stats_record_the_last_chat_request_with_secrets_hidden(sim: Simulator) -> None:
    async with make_client() as client:
        url, headers, body = chat_request(sim, "anthropic")
        headers["x-stainless-retry-count"] = "2"
        await client.post(url, headers=headers, json=body)
        url, headers, body = chat_request(sim, "openai", stream=True)
        await client.post(url, headers=headers, json=body)
    anthropic = sim.stats("anthropic")
    assert anthropic.last_headers["x-api-key"] == "***"
    assert anthropic.last_headers["x-stainless-retry-count"] == "2"
    assert anthropic.last_headers["anthropic-version"] == "2023-06-01"
    assert msgspec.json.decode(anthropic.last_body or b"")["max_tokens"] == 1024
    assert anthropic.last_path == "/v1/messages"
    openai = sim.stats("openai")
    assert openai.last_headers["authorization"] == "Bearer ***"
    assert (openai.requests, openai.streams, openai.outcomes) == (1, 1, {"ok": 1})
    for stats in (anthropic, openai):
        assert all(key not in repr(stats) for key in KEYS.values())
    sim.reset_stats("openai")
    assert sim.stats("openai").requests == 0


async def test_provider_config_points_at_the_simulated_provider(sim: Simulator) -> None:
    config = sim.provider_config("anthropic", weight=3, timeout=2.5)
    assert isinstance(config, ProviderConfig)
    assert config.protocol == "anthropic"
    assert config.model == "claude-sim"
    assert config.api_key == KEYS["anthropic"]
    assert config.weight == 3
    assert config.base_url == sim.url("anthropic")
    assert sim.base_url("gemini") == sim.url("gemini")
    assert sim.base_url("cohere") == sim.url("cohere")
    assert sim.base_url("openai") == sim.url("openai") + "/v1"
    assert sim.base_url("mistral") == sim.url("mistral") + "/v1"
    with pytest.raises(KeyError, match="nope"):
        sim.url("nope")


def test_simprovider_and_behaviour_validation() -> None:
    provider = SimProvider(name="a", protocol="gemini", api_key="very-secret")
    assert "very-secret" not in repr(provider)
    assert provider.model_id == "gemini-sim"
    with pytest.raises(ValueError, match="protocol"):
        SimProvider(name="a", protocol="grpc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port"):
        SimProvider(name="a", port=70000)
    with pytest.raises(ValueError, match="latency"):
        Behaviour(latency=-1)
    with pytest.raises(ValueError, match="chunks"):
        Behaviour(chunks=0)
    with pytest.raises(ValueError, match="probabilit"):
        Behaviour(faults={"500": 0.6, "429": 0.6})
