"""Each protocol's whole and streamed answers, health, auth and bad requests, on the wire."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from llmlb_actors.sim import Behaviour, SimProvider, Simulator, open_simulator
from tests.sim.helpers import (
    KEYS,
    MODELS,
    PROMPT,
    PROTOCOLS,
    chat_request,
    decode,
    parse_sse,
    providers,
)
from tests.sim.helpers import client as make_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import httpx


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(providers()) as simulator:
        yield simulator


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(timeout=5) as c:
        yield c


def expected_text(name: str) -> str:
    return f"Simulated reply from {name} to: {PROMPT}"


PROMPT_TOKENS = 10  # "Be brief" + the eight words of PROMPT
COMPLETION_TOKENS = 13  # "Simulated reply from X to:" + PROMPT


def text_and_usage(protocol: str, body: Any) -> tuple[str, int, int, str]:
    """Reply text, prompt and completion tokens and finish reason from a whole answer."""
    if protocol in ("openai", "mistral"):
        assert body["object"] == "chat.completion"
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant"
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        return (
            choice["message"]["content"],
            usage["prompt_tokens"],
            usage["completion_tokens"],
            choice["finish_reason"],
        )
    if protocol == "anthropic":
        assert body["type"] == "message"
        assert body["role"] == "assistant"
        assert body["stop_sequence"] is None
        text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
        usage = body["usage"]
        return text, usage["input_tokens"], usage["output_tokens"], body["stop_reason"]
    if protocol == "gemini":
        candidate = body["candidates"][0]
        assert candidate["content"]["role"] == "model"
        meta = body["usageMetadata"]
        assert meta["totalTokenCount"] == meta["promptTokenCount"] + meta["candidatesTokenCount"]
        assert body["modelVersion"] == MODELS["gemini"]
        text = "".join(p["text"] for p in candidate["content"]["parts"])
        return (
            text,
            meta["promptTokenCount"],
            meta["candidatesTokenCount"],
            candidate["finishReason"],
        )
    assert protocol == "cohere"
    assert body["message"]["role"] == "assistant"
    text = "".join(b["text"] for b in body["message"]["content"] if b["type"] == "text")
    usage = body["usage"]
    assert usage["tokens"] == usage["billed_units"]
    return (
        text,
        usage["billed_units"]["input_tokens"],
        usage["billed_units"]["output_tokens"],
        body["finish_reason"],
    )


STOP = {
    "openai": "stop",
    "mistral": "stop",
    "anthropic": "end_turn",
    "gemini": "STOP",
    "cohere": "COMPLETE",
}
LENGTH = {
    "openai": "length",
    "mistral": "length",
    "anthropic": "max_tokens",
    "gemini": "MAX_TOKENS",
    "cohere": "MAX_TOKENS",
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_whole_answer_shape_and_exact_usage(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    url, headers, body = chat_request(sim, protocol)
    response = await client.post(url, headers=headers, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["content-length"]) == len(response.content)
    text, prompt, completion, finish = text_and_usage(protocol, response.json())
    assert text == expected_text(protocol)
    assert (prompt, completion, finish) == (PROMPT_TOKENS, COMPLETION_TOKENS, STOP[protocol])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_max_tokens_truncates_with_the_length_reason(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    url, headers, body = chat_request(sim, protocol, max_tokens=3)
    response = await client.post(url, headers=headers, json=body)
    text, _, completion, finish = text_and_usage(protocol, response.json())
    assert (text, completion, finish) == ("Simulated reply from", 3, LENGTH[protocol])


def stream_text_and_usage(protocol: str, text: str) -> tuple[str, int, int, str, int]:
    """Text, usage, finish reason and delta count of a complete SSE stream."""
    events = parse_sse(text)
    deltas: list[str] = []
    prompt = completion = -1
    finish = ""
    if protocol in ("openai", "mistral"):
        assert all(event is None for event, _ in events)
        assert events[-1][1] == "[DONE]"
        for _, data in events[:-1]:
            chunk = decode(data)
            assert chunk["object"] == "chat.completion.chunk"
            if chunk.get("usage"):
                prompt = chunk["usage"]["prompt_tokens"]
                completion = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["delta"].get("content"):
                    deltas.append(choice["delta"]["content"])
                if choice["finish_reason"]:
                    finish = choice["finish_reason"]
    elif protocol == "anthropic":
        names = [event for event, _ in events]
        assert names[:3] == ["message_start", "content_block_start", "ping"]
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        for event, data in events:
            payload = decode(data)
            assert payload["type"] == event
            if event == "message_start":
                prompt = payload["message"]["usage"]["input_tokens"]
            elif event == "content_block_delta":
                assert payload["delta"]["type"] == "text_delta"
                deltas.append(payload["delta"]["text"])
            elif event == "message_delta":
                completion = payload["usage"]["output_tokens"]
                finish = payload["delta"]["stop_reason"]
    elif protocol == "gemini":
        last_count = 0
        for event, data in events:
            assert event is None
            chunk = decode(data)
            candidate = chunk["candidates"][0]
            deltas.append("".join(p["text"] for p in candidate["content"]["parts"]))
            meta = chunk["usageMetadata"]
            assert meta["candidatesTokenCount"] >= last_count  # cumulative
            last_count = meta["candidatesTokenCount"]
            prompt, completion = meta["promptTokenCount"], last_count
            finish = candidate.get("finishReason", finish)
        assert "finishReason" in decode(events[-1][1])["candidates"][0]
    else:
        assert events[-1] == (None, "[DONE]")
        names = [event for event, _ in events[:-1]]
        assert names[:2] == ["message-start", "content-start"]
        assert names[-2:] == ["content-end", "message-end"]
        for event, data in events[:-1]:
            payload = decode(data)
            assert payload["type"] == event
            if event == "content-delta":
                deltas.append(payload["delta"]["message"]["content"]["text"])
            elif event == "message-end":
                usage = payload["delta"]["usage"]["billed_units"]
                prompt, completion = usage["input_tokens"], usage["output_tokens"]
                finish = payload["delta"]["finish_reason"]
    return "".join(deltas), prompt, completion, finish, len(deltas)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_shape_and_exact_usage(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    url, headers, body = chat_request(sim, protocol, stream=True)
    response = await client.post(url, headers=headers, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    assert "data: " in response.text
    assert "data:  " not in response.text
    text, prompt, completion, finish, count = stream_text_and_usage(protocol, response.text)
    assert text == expected_text(protocol)
    assert (prompt, completion, finish, count) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        STOP[protocol],
        8,
    )
    assert sim.stats(protocol).streams == 1


async def test_openai_stream_has_no_usage_without_include_usage(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url, headers, body = chat_request(sim, "openai", stream=True, include_usage=False)
    response = await client.post(url, headers=headers, json=body)
    chunks = [decode(data) for _, data in parse_sse(response.text)[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)


async def test_openai_usage_chunk_has_empty_choices_and_others_null_usage(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url, headers, body = chat_request(sim, "openai", stream=True)
    response = await client.post(url, headers=headers, json=body)
    chunks = [decode(data) for _, data in parse_sse(response.text)[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 23
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


async def test_mistral_usage_rides_on_the_last_content_chunk(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url, headers, body = chat_request(sim, "mistral", stream=True)
    response = await client.post(url, headers=headers, json=body)
    chunks = [decode(data) for _, data in parse_sse(response.text)[:-1]]
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["choices"][0]["delta"]["content"]
    assert last["usage"] == {"prompt_tokens": 10, "total_tokens": 23, "completion_tokens": 13}
    assert all("usage" not in chunk for chunk in chunks[:-1])


@pytest.mark.parametrize("version", ["v1", "v1beta"])
async def test_gemini_serves_both_api_versions(
    sim: Simulator, client: httpx.AsyncClient, version: str
) -> None:
    for stream in (False, True):
        url, headers, body = chat_request(sim, "gemini", stream=stream, version=version)
        response = await client.post(url, headers=headers, json=body)
        assert response.status_code == 200
    assert (
        sim.stats("gemini").last_path
        == f"/{version}/models/gemini-sim:streamGenerateContent?alt=sse"
    )


async def test_gemini_stream_without_sse_is_a_json_array(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url, headers, body = chat_request(sim, "gemini")
    url = url.replace(":generateContent", ":streamGenerateContent")
    response = await client.post(url, headers=headers, json=body)
    chunks = response.json()
    assert isinstance(chunks, list)
    assert len(chunks) == 8
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == (
        expected_text("gemini")
    )


async def test_gemini_key_in_query_works_and_is_redacted_in_stats(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url, _, body = chat_request(sim, "gemini", key=False)
    response = await client.post(url + f"?key={KEYS['gemini']}", json=body)
    assert response.status_code == 200
    assert KEYS["gemini"] not in repr(sim.stats("gemini"))
    assert sim.stats("gemini").last_path == "/v1beta/models/gemini-sim:generateContent?key=***"


async def test_stream_chunks_follow_behaviour_chunks(client: httpx.AsyncClient) -> None:
    provider = SimProvider(
        name="a", protocol="anthropic", behaviour=Behaviour(chunks=3, reply="one two three four")
    )
    async with open_simulator([provider]) as sim:
        url, _, body = chat_request(sim, "anthropic", name="a", stream=True, key=None)
        body["model"] = provider.model_id
        response = await client.post(url, headers={"anthropic-version": "x"}, json=body)
        events = parse_sse(response.text)
        deltas = [decode(d)["delta"]["text"] for e, d in events if e == "content_block_delta"]
        assert deltas == ["one two", " three", " four"]


async def test_short_reply_is_split_inside_words(client: httpx.AsyncClient) -> None:
    provider = SimProvider(name="g", protocol="gemini", behaviour=Behaviour(chunks=4, reply="Hi"))
    async with open_simulator([provider]) as sim:
        url, _, body = chat_request(sim, "gemini", name="g", stream=True, key=None)
        url = url.replace(MODELS["gemini"], provider.model_id)
        response = await client.post(url, json=body)
        chunks = [decode(d) for _, d in parse_sse(response.text)]
        texts = [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks]
        assert texts == ["H", "i"]
        assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 1


# -- keys ------------------------------------------------------------------------

AUTH_STATUS = {"openai": 401, "anthropic": 401, "gemini": 400, "cohere": 401, "mistral": 401}


def check_auth_error(protocol: str, body: Any) -> None:
    if protocol == "openai":
        assert body["error"]["code"] == "invalid_api_key"
        assert body["error"]["type"] == "invalid_request_error"
    elif protocol == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["type"] == "authentication_error"
    elif protocol == "gemini":
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        assert body["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    elif protocol == "cohere":
        assert body == {"message": "invalid api token"}
    else:
        assert body == {"detail": "Unauthorized"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("key", ["wrong-key", None])
async def test_wrong_or_missing_key_is_the_protocols_auth_error(
    sim: Simulator, client: httpx.AsyncClient, protocol: str, key: str | None
) -> None:
    url, headers, body = chat_request(sim, protocol, key=key if key else False)
    response = await client.post(url, headers=headers, json=body)
    assert response.status_code == AUTH_STATUS[protocol]
    check_auth_error(protocol, response.json())
    stats = sim.stats(protocol)
    assert stats.requests == 1
    assert stats.outcomes == {str(AUTH_STATUS[protocol]): 1}
    assert "wrong-key" not in repr(stats)
    assert KEYS[protocol] not in repr(stats)


async def test_provider_without_key_accepts_anything(client: httpx.AsyncClient) -> None:
    async with open_simulator([SimProvider(name="o", protocol="openai")]) as sim:
        response = await client.post(
            sim.base_url("o") + "/chat/completions",
            headers={"authorization": "Bearer whatever"},
            json={"model": "gpt-sim", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200


async def test_anthropic_accepts_any_version_and_bearer_but_needs_the_header(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    url, _, body = chat_request(sim, "anthropic")
    ok = await client.post(
        url,
        headers={"x-api-key": KEYS["anthropic"], "anthropic-version": "2026-10-21"},
        json=body,
    )
    assert ok.status_code == 200
    bearer = await client.post(
        url,
        headers={"authorization": f"Bearer {KEYS['anthropic']}", "anthropic-version": "x"},
        json=body,
    )
    assert bearer.status_code == 200
    missing = await client.post(url, headers={"x-api-key": KEYS["anthropic"]}, json=body)
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in missing.json()["error"]["message"]


# -- bad requests, unknown models and paths ----------------------------------------


def bad_body(protocol: str) -> dict[str, Any]:
    """A body missing a required field (Anthropic: max_tokens; others: the messages)."""
    if protocol == "anthropic":
        return {"model": MODELS[protocol], "messages": [{"role": "user", "content": "hi"}]}
    if protocol == "gemini":
        return {"generationConfig": {"maxOutputTokens": 5}}
    return {"model": MODELS[protocol]}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_missing_required_field_is_the_protocols_400(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    url, headers, _ = chat_request(sim, protocol)
    response = await client.post(url, headers=headers, json=bad_body(protocol))
    body = response.json()
    if protocol == "mistral":
        # FastAPI validation, as the real API answers.
        assert response.status_code == 422
        assert body["detail"][0]["loc"] == ["body", "messages"]
        assert body["detail"][0]["type"] == "missing"
        return
    assert response.status_code == 400
    if protocol == "openai":
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["param"] == "messages"
    elif protocol == "anthropic":
        assert body["error"] == {
            "type": "invalid_request_error",
            "message": "max_tokens: Field required",
        }
    elif protocol == "gemini":
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        assert "contents" in body["error"]["message"]
    else:
        assert "messages" in body["message"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_body_that_is_not_json_is_rejected(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    url, headers, _ = chat_request(sim, protocol)
    response = await client.post(url, headers=headers, content=b"{not json")
    assert response.status_code == (422 if protocol == "mistral" else 400)
    assert sim.stats(protocol).outcomes == {str(response.status_code): 1}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unknown_model_is_the_protocols_answer(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    url, headers, body = chat_request(sim, protocol, model="no-such-model")
    response = await client.post(url, headers=headers, json=body)
    assert "no-such-model" in response.text
    if protocol == "mistral":
        # Mistral's API answers a 400, not a 404 (as seen in the wild: {"object": "error",
        # "message": "Invalid model: X", "type": "invalid_model", "code": "1500"}).
        assert response.status_code == 400
        assert response.json()["type"] == "invalid_model"
        assert response.json()["code"] == "1500"
        return
    assert response.status_code == 404


NOT_FOUND_SHAPE: dict[str, Callable[[Any], bool]] = {
    "openai": lambda b: b["error"]["code"] == "unknown_url",
    "anthropic": lambda b: b["error"]["type"] == "not_found_error",
    "gemini": lambda b: b["error"]["status"] == "NOT_FOUND",
    "cohere": lambda b: "message" in b,
    "mistral": lambda b: b == {"detail": "Not Found"},
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unknown_path_is_the_protocols_404(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    response = await client.post(sim.url(protocol) + "/v9/nothing", json={})
    assert response.status_code == 404
    assert NOT_FOUND_SHAPE[protocol](response.json())
    assert sim.stats(protocol).requests == 0


# -- health ------------------------------------------------------------------------

HEALTH_PATHS = {
    "openai": ["/v1/models", "/v1/models/gpt-sim"],
    "anthropic": ["/v1/models", "/v1/models/claude-sim"],
    "gemini": [
        "/v1beta/models",
        "/v1beta/models/gemini-sim",
        "/v1/models",
        "/v1/models/gemini-sim",
    ],
    "cohere": ["/v1/models", "/v1/models/command-sim"],
    "mistral": ["/v1/models"],
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_health_endpoints_answer_and_are_counted_not_faulted(
    sim: Simulator, client: httpx.AsyncClient, protocol: str
) -> None:
    sim.set_behaviour(protocol, Behaviour(faults={"503": 1.0}))
    sim.script(protocol, ["500"])
    headers = {
        "openai": {"authorization": f"Bearer {KEYS['openai']}"},
        "anthropic": {"x-api-key": KEYS["anthropic"], "anthropic-version": "2023-06-01"},
        "gemini": {"x-goog-api-key": KEYS["gemini"]},
        "cohere": {"authorization": f"Bearer {KEYS['cohere']}"},
        "mistral": {"authorization": f"Bearer {KEYS['mistral']}"},
    }[protocol]
    for path in HEALTH_PATHS[protocol]:
        response = await client.get(sim.url(protocol) + path, headers=headers)
        assert response.status_code == 200, path
        assert MODELS[protocol] in response.text
    bad = await client.get(sim.url(protocol) + HEALTH_PATHS[protocol][0])
    assert bad.status_code == AUTH_STATUS[protocol]
    stats = sim.stats(protocol)
    assert stats.health_probes == len(HEALTH_PATHS[protocol]) + 1
    assert stats.requests == 0
    assert stats.outcomes == {}
    assert sim.pending_script(protocol) == ["500"]


async def test_cohere_check_api_key(sim: Simulator, client: httpx.AsyncClient) -> None:
    response = await client.post(
        sim.url("cohere") + "/v1/check-api-key",
        headers={"authorization": f"Bearer {KEYS['cohere']}"},
    )
    assert response.json()["valid"] is True


async def test_openai_compatible_is_openai_plus_root_health(client: httpx.AsyncClient) -> None:
    provider = SimProvider(name="vllm", protocol="openai-compatible", api_key="k", model="llama")
    async with open_simulator([provider]) as sim:
        assert sim.base_url("vllm") == sim.url("vllm") + "/v1"
        health = await client.get(sim.url("vllm") + "/health")
        assert health.status_code == 200
        response = await client.post(
            sim.base_url("vllm") + "/chat/completions",
            headers={"authorization": "Bearer k"},
            json={"model": "llama", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.json()["choices"][0]["message"]["content"] == (
            "Simulated reply from vllm to: hi"
        )
