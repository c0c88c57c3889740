"""The simulator as a model for tools, JSON and images, its APIs' rules on tool turns, and Azure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors.sim import SimProvider, Simulator, open_simulator
from llmlb_actors.sim._schema import sample
from tests.sim.helpers import KEYS, MODELS, auth_headers, decode, parse_sse, providers
from tests.sim.helpers import client as make_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

AZURE_KEY = "azure-key"
DEPLOYMENT = "gpt4o-prod"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    azure = SimProvider(name="azure", protocol="azure", api_key=AZURE_KEY, model=DEPLOYMENT)
    async with open_simulator([*providers(chunks=3), azure]) as simulator:
        yield simulator


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(timeout=5) as c:
        yield c


# -- the schema sampler ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        (SCHEMA, {"city": "sim-city"}),
        ({"type": "integer", "minimum": 5}, 5),
        ({"type": "number", "exclusiveMaximum": 0}, -1.0),
        ({"type": "string", "format": "date"}, "2025-01-01"),
        ({"type": "string", "minLength": 5}, "simxx"),
        ({"enum": ["b", "a"]}, "b"),
        ({"const": 3}, 3),
        ({"type": ["null", "boolean"]}, True),
        ({"anyOf": [{"type": "null"}, {"type": "integer"}]}, 1),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 2}, [1, 1]),
        ({"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}}, {"n": 1.0}),  # Gemini's
        (
            {
                "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
                "type": "object",
                "properties": {"at": {"$ref": "#/$defs/Point"}},
            },
            {"at": {"x": 1}},
        ),
        ({"allOf": [{"properties": {"a": {"type": "boolean"}}}]}, {"a": True}),
    ],
)
def test_sample_validates_against_its_schema(schema: dict[str, Any], value: Any) -> None:
    assert sample(schema) == value


# -- OpenAI-shaped -----------------------------------------------------------------------------

OPENAI_TOOL = {"type": "function", "function": {"name": "get_city", "parameters": SCHEMA}}


def openai_body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": MODELS["openai"], "messages": messages, "tools": [OPENAI_TOOL], **extra}


async def post_openai(
    sim: Simulator, client: httpx.AsyncClient, body: dict[str, Any], name: str = "openai"
) -> httpx.Response:
    return await client.post(
        sim.url(name) + "/v1/chat/completions", json=body, headers=auth_headers(name, KEYS[name])
    )


async def test_openai_calls_the_tool_then_answers_the_result(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    ask = [{"role": "user", "content": "Where?"}]
    first = decode((await post_openai(sim, client, openai_body(ask))).content)
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_city", "arguments": '{"city":"sim-city"}'}
    result = [
        *ask,
        choice["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "Oslo"},
    ]
    second = decode((await post_openai(sim, client, openai_body(result))).content)
    assert second["choices"][0]["finish_reason"] == "stop"
    assert second["choices"][0]["message"]["content"].endswith("to: Oslo")
    forced = openai_body(result, tool_choice="required")
    third = decode((await post_openai(sim, client, forced)).content)
    assert third["choices"][0]["finish_reason"] == "tool_calls"  # forced: it calls again
    none = openai_body(ask, tool_choice="none")
    assert (
        decode((await post_openai(sim, client, none)).content)["choices"][0]["finish_reason"]
        == "stop"
    )


async def test_openai_streams_tool_arguments_in_fragments(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    body = openai_body([{"role": "user", "content": "Where?"}], stream=True)
    resp = await post_openai(sim, client, body)
    events = [decode(d) for _, d in parse_sse(resp.text) if d != "[DONE]"]
    fragments = [
        c["delta"]["tool_calls"][0]["function"]["arguments"]
        for e in events
        for c in e["choices"]
        if c["delta"].get("tool_calls")
    ]
    assert len(fragments) >= 3
    assert "".join(fragments) == '{"city":"sim-city"}'
    assert events[0]["choices"][0]["delta"]["tool_calls"][0]["id"]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "user", "content": "x"}, {"role": "tool", "content": "1"}], "tool_call_id"),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "tool", "content": "1", "tool_call_id": "z"},
            ],
            "must be a response to a preceding message with 'tool_calls'",
        ),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "image_url"),
    ],
)
async def test_openai_refuses_what_the_api_refuses(
    sim: Simulator, client: httpx.AsyncClient, messages: list[dict[str, Any]], message: str
) -> None:
    resp = await post_openai(sim, client, openai_body(messages))
    assert resp.status_code == 400
    assert message in resp.json()["error"]["message"]


async def test_openai_json_schema_and_json_object(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}
    body = {"model": MODELS["openai"], "messages": [{"role": "user", "content": "hi"}]}
    resp = decode((await post_openai(sim, client, {**body, "response_format": fmt})).content)
    assert decode(resp["choices"][0]["message"]["content"]) == {"city": "sim-city"}
    resp = decode(
        (
            await post_openai(sim, client, {**body, "response_format": {"type": "json_object"}})
        ).content
    )
    assert set(decode(resp["choices"][0]["message"]["content"])) == {"answer"}


async def test_mistral_refuses_ids_that_are_not_nine_characters(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "get_city", "arguments": "{}"},
    }
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "Oslo"},
    ]
    body = {**openai_body(messages), "model": MODELS["mistral"]}
    resp = await post_openai(sim, client, body, name="mistral")
    assert resp.status_code == 400
    assert "length of 9" in resp.json()["message"]
    call["id"] = messages[2]["tool_call_id"] = "Ab3dE6gH9"
    assert (await post_openai(sim, client, body, name="mistral")).status_code == 200


# -- Anthropic ---------------------------------------------------------------------------------


async def test_anthropic_insists_on_tool_results_right_after_their_calls(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    uses = [
        {"type": "tool_use", "id": f"toolu_{i}", "name": "get_city", "input": {}} for i in (1, 2)
    ]
    result = [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "x"} for i in (1, 2)]
    split = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": uses},
        {"role": "user", "content": result[:1]},
        {"role": "user", "content": result[1:]},
    ]
    merged = [*split[:2], {"role": "user", "content": result}]
    tools = [{"name": "get_city", "input_schema": SCHEMA}]
    answers = []
    for messages in (split, merged):
        body = {"model": MODELS["anthropic"], "max_tokens": 9, "messages": messages, "tools": tools}
        answers.append(
            await client.post(
                sim.url("anthropic") + "/v1/messages",
                json=body,
                headers=auth_headers("anthropic", KEYS["anthropic"]),
            )
        )
    refused, accepted = answers
    assert refused.status_code == 400
    assert "without tool_result blocks immediately after" in refused.json()["error"]["message"]
    assert accepted.status_code == 200
    assert accepted.json()["stop_reason"] == "end_turn"


# -- Gemini ------------------------------------------------------------------------------------


async def gemini(sim: Simulator, client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post(
        f"{sim.url('gemini')}/v1beta/models/{MODELS['gemini']}:generateContent",
        json=body,
        headers=auth_headers("gemini", KEYS["gemini"]),
    )


async def test_gemini_function_response_needs_a_name_and_snake_case_is_read(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    nameless = {"contents": [{"role": "user", "parts": [{"functionResponse": {"response": {}}}]}]}
    resp = await gemini(sim, client, nameless)
    assert resp.status_code == 400
    assert "function_response.name" in resp.json()["error"]["message"]
    # The SDK writes some fields in snake_case (proto JSON allows both).
    snake = {
        "contents": [
            {"role": "user", "parts": [{"inline_data": {"mime_type": "image/png", "data": "iVBO"}}]}
        ],
        "tools": [
            {"function_declarations": [{"name": "get_city", "parameters_json_schema": SCHEMA}]}
        ],
    }
    answer = (await gemini(sim, client, snake)).json()
    part = answer["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "get_city", "args": {"city": "sim-city"}}}


# -- Azure OpenAI ------------------------------------------------------------------------------


def azure_chat(model: str | None = DEPLOYMENT) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    return body


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        (f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21",
         {"api-key": AZURE_KEY}, azure_chat(None), 200),
        ("/openai/v1/chat/completions", {"api-key": AZURE_KEY}, azure_chat(), 200),
        ("/openai/v1/chat/completions", {"authorization": f"Bearer {AZURE_KEY}"},
         azure_chat(), 200),
        # Without api-version the deployment routes do not exist, as on Azure.
        (f"/openai/deployments/{DEPLOYMENT}/chat/completions", {"api-key": AZURE_KEY},
         azure_chat(), 404),
        ("/openai/v1/chat/completions", {}, azure_chat(), 401),
        ("/openai/v1/chat/completions", {"api-key": "wrong"}, azure_chat(), 401),
        ("/openai/deployments/other/chat/completions?api-version=2024-10-21",
         {"api-key": AZURE_KEY}, azure_chat(), 404),
    ],
)  # fmt: skip
async def test_azure_routes_and_keys(
    sim: Simulator,
    client: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any],
    status: int,
) -> None:
    resp = await client.post(sim.url("azure") + path, json=body, headers=headers)
    assert resp.status_code == status, resp.text
    if status == 200:
        assert resp.json()["model"] == DEPLOYMENT
    else:
        assert set(resp.json()["error"]) == {"code", "message"}
    if path.startswith("/openai/deployments/other"):
        assert resp.json()["error"]["code"] == "DeploymentNotFound"


async def test_azure_health_on_both_url_shapes(sim: Simulator, client: httpx.AsyncClient) -> None:
    key = {"api-key": AZURE_KEY}
    classic = await client.get(
        sim.url("azure") + "/openai/models?api-version=2024-10-21", headers=key
    )
    v1 = await client.get(sim.url("azure") + "/openai/v1/models", headers=key)
    unversioned = await client.get(sim.url("azure") + "/openai/models", headers=key)
    assert classic.status_code == v1.status_code == 200
    assert msgspec.json.decode(classic.content) == msgspec.json.decode(v1.content)
    assert unversioned.status_code == 404
    assert (await client.get(sim.url("azure") + "/openai/v1/models")).status_code == 401
