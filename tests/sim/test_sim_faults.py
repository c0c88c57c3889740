"""Every scripted outcome, as a client observes it on the wire."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
import trio

from llmlb_actors.sim import Behaviour, Simulator, open_simulator
from tests.sim.helpers import PROTOCOLS, chat_request, decode, parse_sse, providers
from tests.sim.helpers import client as make_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio.testing import MockClock

HTTP_ERRORS = (
    "400",
    "401",
    "403",
    "404",
    "408",
    "409",
    "422",
    "429",
    "500",
    "502",
    "503",
    "504",
    "529",
)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(providers()) as simulator:
        yield simulator


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(timeout=30) as c:
        yield c


async def post(
    client: httpx.AsyncClient, sim: Simulator, protocol: str, *, stream: bool = False
) -> httpx.Response:
    url, headers, body = chat_request(sim, protocol, stream=stream)
    return await client.post(url, headers=headers, json=body)


ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def check_error_shape(protocol: str, status: int, body: Any) -> None:
    if protocol == "openai":
        assert set(body["error"]) == {"message", "type", "param", "code"}
        if status == 429:
            assert body["error"]["code"] == "rate_limit_exceeded"
        if status >= 500:
            assert body["error"]["type"] == "server_error"
    elif protocol == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["message"]
        assert body["error"]["type"] == ANTHROPIC_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
    elif protocol == "gemini":
        assert body["error"]["code"] == status
        if status in GEMINI_STATUSES:
            assert body["error"]["status"] == GEMINI_STATUSES[status]
    elif protocol == "cohere":
        assert set(body) == {"message"}
    elif status == 401:
        assert body == {"detail": "Unauthorized"}
    elif status == 422:
        assert isinstance(body["detail"], list)
        assert body["detail"][0]["loc"][0] == "body"
    else:
        assert body["object"] == "error"
        assert body["message"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_every_http_error_in_the_protocols_shape(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    sim.script(protocol, HTTP_ERRORS)
    for outcome in HTTP_ERRORS:
        response = await post(client, sim, protocol, stream=outcome == "503")
        assert response.status_code == int(outcome)
        assert response.headers["content-type"].startswith("application/json")
        check_error_shape(protocol, int(outcome), response.json())
    stats = sim.stats(protocol)
    assert stats.outcomes == {outcome: 1 for outcome in HTTP_ERRORS}
    assert stats.requests == len(HTTP_ERRORS)
    assert stats.connections == 1  # errors keep the connection alive


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_429_carries_the_protocols_retry_hint(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    sim.set_behaviour(protocol, Behaviour(retry_after=2.5))
    sim.script(protocol, ["429"])
    response = await post(client, sim, protocol)
    assert response.status_code == 429
    if protocol == "gemini":
        details = response.json()["error"]["details"]
        retry = [d for d in details if d["@type"].endswith("google.rpc.RetryInfo")]
        assert retry == [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.500s"}
        ]
        assert "retry-after" not in response.headers
    else:
        assert response.headers["retry-after"] == "2.5"
    if protocol == "openai":
        assert response.headers["retry-after-ms"] == "2500"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_529_is_anthropics_overloaded_error(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.script("anthropic", ["529"])
    response = await post(client, sim, "anthropic")
    assert response.status_code == 529
    assert response.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert response.headers["request-id"]


@pytest.mark.parametrize("stream", [False, True])
async def test_reset_closes_with_rst_and_no_answer(
    sim: Simulator, client: httpx.AsyncClient, stream: bool
) -> None:
    sim.script("openai", ["reset"])
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await post(client, sim, "openai", stream=stream)
    assert (await post(client, sim, "openai")).status_code == 200
    assert sim.stats("openai").outcomes == {"reset": 1, "ok": 1}


@pytest.mark.parametrize("stream", [False, True])
async def test_hang_never_answers_until_the_client_gives_up(
    sim: Simulator, autojump_clock: MockClock, stream: bool
) -> None:
    sim.script("anthropic", ["hang"])
    start = trio.current_time()
    async with make_client(timeout=httpx.Timeout(None, read=42)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await post(client, sim, "anthropic", stream=stream)
        assert trio.current_time() - start == pytest.approx(42)
        # the simulator is still fine for the next request
        assert (await post(client, sim, "anthropic")).status_code == 200


async def test_cut_whole_answer_is_shorter_than_its_content_length(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.script("cohere", ["cut"])
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        await post(client, sim, "cohere")


async def read_stream_until_error(
    client: httpx.AsyncClient, sim: Simulator, protocol: str
) -> tuple[str, BaseException | None]:
    url, headers, body = chat_request(sim, protocol, stream=True)
    received = ""
    error: BaseException | None = None
    async with client.stream("POST", url, headers=headers, json=body) as response:
        assert response.status_code == 200
        try:
            async for text in response.aiter_text():
                received += text
        except (httpx.RemoteProtocolError, httpx.ReadTimeout) as exc:
            error = exc
    return received, error


TERMINAL = {
    "openai": "[DONE]",
    "mistral": "[DONE]",
    "cohere": "[DONE]",
    "anthropic": "message_stop",
    "gemini": "finishReason",
}


def delta_count(protocol: str, events: list[tuple[str | None, str]]) -> int:
    """How many text deltas a list of SSE events holds."""
    if protocol == "anthropic":
        return sum(1 for event, _ in events if event == "content_block_delta")
    if protocol == "cohere":
        return sum(1 for event, _ in events if event == "content-delta")
    if protocol == "gemini":
        return len(events)
    return sum(1 for _, data in events if decode(data)["choices"][0]["delta"].get("content"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cut_stream_sends_half_the_deltas_then_closes(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    sim.script(protocol, ["cut"])
    received, error = await read_stream_until_error(client, sim, protocol)
    assert isinstance(error, httpx.RemoteProtocolError)  # chunked body never terminated
    assert TERMINAL[protocol] not in received
    assert delta_count(protocol, parse_sse(received)) == 4


@pytest.mark.parametrize("protocol", ["openai", "gemini"])
async def test_stall_stream_stops_sending_but_keeps_the_connection(
    sim: Simulator, autojump_clock: MockClock, protocol: str
) -> None:
    sim.script(protocol, ["stall"])
    start = trio.current_time()
    async with make_client(timeout=httpx.Timeout(None, read=7)) as client:
        received, error = await read_stream_until_error(client, sim, protocol)
    assert isinstance(error, httpx.ReadTimeout)
    assert trio.current_time() - start == pytest.approx(7)
    assert delta_count(protocol, parse_sse(received)) == 4
    assert TERMINAL[protocol] not in received


async def test_stall_whole_answer_times_out(sim: Simulator, autojump_clock: MockClock) -> None:
    sim.script("openai", ["stall"])
    async with make_client(timeout=httpx.Timeout(None, read=3)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await post(client, sim, "openai")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_error_ends_with_the_protocols_error_event(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    sim.script(protocol, ["stream_error"])
    response = await post(client, sim, protocol, stream=True)
    assert response.status_code == 200
    events = parse_sse(response.text)
    if protocol == "cohere":
        assert events[-1] == (None, "[DONE]")
        events.pop()
    *before, (last_event, last_data) = events
    assert delta_count(protocol, before) == 4
    payload = decode(last_data)
    if protocol == "anthropic":
        assert last_event == "error"
        assert payload["error"]["type"] == "overloaded_error"
        assert "message_stop" not in response.text
    elif protocol == "cohere":
        assert last_event == "message-end"
        assert payload["delta"]["finish_reason"] == "ERROR"
        assert payload["delta"]["error"]
    elif protocol == "mistral":
        assert payload["object"] == "error"
        assert "[DONE]" not in response.text
    else:
        assert payload["error"]["message"]
        assert "finishReason" not in response.text


async def test_stream_error_on_a_whole_request_is_a_500(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.script("gemini", ["stream_error"])
    response = await post(client, sim, "gemini")
    assert response.status_code == 500
    assert response.json()["error"]["status"] == "INTERNAL"


async def test_redirect_points_at_a_port_where_nothing_answers(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.script("openai", ["redirect"])
    response = await post(client, sim, "openai")
    assert response.status_code == 307
    location = httpx.URL(response.headers["location"])
    assert location.host == "127.0.0.1"
    assert location.port == sim.redirect_port
    assert location.path == "/v1/chat/completions"
    assert location.port not in {sim.port(name) for name in sim.names}
    with pytest.raises(httpx.ConnectError):
        await client.post(str(location), json={})
    assert sim.stats("openai").requests == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_malformed_is_200_with_a_body_that_is_not_json(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    sim.script(protocol, ["malformed", "malformed"])
    response = await post(client, sim, protocol)
    assert response.status_code == 200
    with pytest.raises(msgspec.DecodeError):
        decode(response.content)
    streamed = await post(client, sim, protocol, stream=True)
    bad = []
    for _, data in parse_sse(streamed.text):
        if data == "[DONE]":
            continue
        try:
            decode(data)
        except msgspec.DecodeError:
            bad.append(data)
    assert len(bad) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_wrong_shape_is_valid_json_without_the_expected_fields(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    sim.script(protocol, ["wrong_shape", "wrong_shape"])
    body = (await post(client, sim, protocol)).json()
    if protocol in ("openai", "mistral"):
        assert "message" not in body["choices"][0]
    elif protocol == "anthropic":
        assert not isinstance(body["content"], list)
    elif protocol == "gemini":
        assert not isinstance(body["candidates"][0]["content"], dict)
    else:
        assert not isinstance(body["message"], dict)
    streamed = await post(client, sim, protocol, stream=True)
    events = [data for _, data in parse_sse(streamed.text)]
    assert all(data == "[DONE]" or isinstance(decode(data), dict) for data in events)
    assert "Simulated reply" not in streamed.text


async def test_latency_and_token_delay_in_virtual_time(autojump_clock: MockClock) -> None:
    behaviour = Behaviour(latency=1.5, token_delay=0.25, chunks=5)
    async with open_simulator(providers()) as sim:
        sim.set_behaviour("anthropic", behaviour)
        async with make_client(timeout=60) as client:
            start = trio.current_time()
            assert (await post(client, sim, "anthropic")).status_code == 200
            assert trio.current_time() - start == pytest.approx(1.5)
            start = trio.current_time()
            first_at = None
            url, headers, body = chat_request(sim, "anthropic", stream=True)
            async with client.stream("POST", url, headers=headers, json=body) as response:
                async for line in response.aiter_lines():
                    if first_at is None and line == "event: content_block_delta":
                        first_at = trio.current_time() - start
            assert first_at == pytest.approx(1.5)
            assert trio.current_time() - start == pytest.approx(1.5 + 4 * 0.25)
            sim.script("anthropic", ["slow"])
            start = trio.current_time()
            assert (await post(client, sim, "anthropic", stream=True)).status_code == 200
            assert trio.current_time() - start == pytest.approx(1.5 + 4 * 2.5)
            sim.script("anthropic", ["slow"])
            start = trio.current_time()
            assert (await post(client, sim, "anthropic")).status_code == 200
            assert trio.current_time() - start == pytest.approx(15.0)


async def test_jitter_is_seeded_and_bounded(autojump_clock: MockClock) -> None:
    async def run() -> list[float]:
        behaviour = Behaviour(latency=1.0, latency_jitter=2.0, seed=7)
        async with open_simulator(providers()) as sim:
            sim.set_behaviour("openai", behaviour)
            async with make_client(timeout=60) as client:
                waits = []
                for _ in range(5):
                    start = trio.current_time()
                    await post(client, sim, "openai")
                    waits.append(trio.current_time() - start)
                return waits

    first, second = await run(), await run()
    assert first == pytest.approx(second)
    assert all(1.0 <= w <= 3.0 for w in first)
    assert len({round(w, 6) for w in first}) == 5


async def test_script_is_fifo_then_faults_apply(sim: Simulator, client: httpx.AsyncClient) -> None:
    sim.set_behaviour("mistral", Behaviour(faults={"502": 1.0}))
    sim.script("mistral", ["503", "429"])
    sim.script("mistral", ["ok"])
    statuses = [(await post(client, sim, "mistral")).status_code for _ in range(5)]
    assert statuses == [503, 429, 200, 502, 502]
    assert sim.stats("mistral").outcomes == {"503": 1, "429": 1, "ok": 1, "502": 2}


async def test_unknown_outcomes_are_refused_whole(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="unknown simulator outcome 'teapot'"):
        sim.script("openai", ["503", "teapot"])
    assert sim.pending_script("openai") == []
    with pytest.raises(ValueError, match="teapot"):
        Behaviour(faults={"teapot": 0.1})
    with pytest.raises(ValueError, match="sum"):
        Behaviour(faults={"500": 0.7, "503": 0.7})


async def test_random_faults_are_deterministic_per_seed(client: httpx.AsyncClient) -> None:
    async def run(seed: int) -> list[int]:
        behaviour = Behaviour(faults={"500": 0.3, "429": 0.2}, seed=seed)
        async with open_simulator(providers()) as sim:
            sim.set_behaviour("cohere", behaviour)
            return [(await post(client, sim, "cohere")).status_code for _ in range(30)]

    first = await run(1)
    assert first == await run(1)
    assert first != await run(2)
    assert {200, 500, 429} == set(first)
