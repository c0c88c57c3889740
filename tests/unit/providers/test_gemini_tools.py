"""Gemini adapter: function declarations and calls, functionResponse, images, JSON output, ids."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors import LLMRequest, Message, StreamChunk, ToolCall, Usage
from llmlb_actors._config import ProviderConfig
from llmlb_actors.providers.gemini import SKIP_SIGNATURE, GeminiAdapter
from tests.unit.providers.adapter_testing import KEY, collect, json_response, sse_body, sse_response
from tests.unit.providers.workload_cases import (
    IMAGE_URL,
    PNG_B64,
    SCHEMA,
    WEATHER,
    WEATHER_SCHEMA,
    body,
    conversation,
)

if TYPE_CHECKING:
    from tests.unit.providers.adapter_testing import MakeProvider


def adapter(**fields: Any) -> GeminiAdapter:
    fields.setdefault("name", "gemini")
    fields.setdefault("model", "gemini-2.5-flash")
    fields.setdefault("api_key", KEY)
    return GeminiAdapter(ProviderConfig(**fields))


def build(request: LLMRequest, **fields: Any) -> Any:
    return body(adapter(**fields).build_request(request, stream=False).body)


DECLARATIONS = [
    {
        "name": "get_weather",
        "description": "Current weather",
        "parametersJsonSchema": WEATHER_SCHEMA,
    },
    {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}},
]


def test_conversation_parts_function_calls_and_responses() -> None:
    assert build(conversation()) == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Weather and time in Paris? Also, look:"},
                    {"fileData": {"mimeType": "image/png", "fileUri": IMAGE_URL}},
                    {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "/9hqcGVn"}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"text": "Let me check."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_time", "args": {}}},
                ],
            },
            {
                # One user turn of results; the name comes from the call when the tool
                # message has none, and a JSON object result is passed as the object.
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}},
                ],
            },
            {"role": "user", "parts": [{"text": "Thanks"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "tools": [{"functionDeclarations": DECLARATIONS}],
    }


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        ("get_weather", {"functionCallingConfig": {"mode": "ANY",
                                                   "allowedFunctionNames": ["get_weather"]}}),
    ],
)  # fmt: skip
def test_tool_choice_variants(choice: str, wire: Any) -> None:
    sent = build(LLMRequest(prompt="hi", tools=[WEATHER], tool_choice=choice))
    assert sent["toolConfig"] == wire
    assert sent["tools"] == [{"functionDeclarations": DECLARATIONS[:1]}]


def test_json_schema_seed_and_generation_fields() -> None:
    sent = build(LLMRequest(prompt="j", response_format=SCHEMA, seed=42, max_tokens=8))
    assert sent["generationConfig"] == {
        "maxOutputTokens": 8,
        "responseMimeType": "application/json",
        "responseJsonSchema": WEATHER_SCHEMA,
        "seed": 42,
    }
    assert build(LLMRequest(prompt="j", response_format="json"))["generationConfig"] == {
        "responseMimeType": "application/json"
    }


def test_api_version_v1_uses_the_older_schema_fields() -> None:
    sent = build(LLMRequest(prompt="j", tools=[WEATHER], response_format=SCHEMA), api_version="v1")
    assert sent["tools"][0]["functionDeclarations"][0]["parameters"] == WEATHER_SCHEMA
    assert sent["generationConfig"]["responseSchema"] == WEATHER_SCHEMA


def test_a_seed_gemini_cannot_hold_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="llmlb_actors"):
        sent = build(LLMRequest(prompt="x", seed=2**40))
    assert "generationConfig" not in sent
    assert len(caplog.records) == 1
    assert "seed" in caplog.records[0].getMessage()


def test_extra_body_merges_into_nested_objects() -> None:
    sent = build(
        LLMRequest(
            prompt="x",
            temperature=0.3,
            extra_body={"generationConfig": {"topK": 4}, "safetySettings": []},
        )
    )
    assert sent["generationConfig"] == {"temperature": 0.3, "topK": 4}
    assert sent["safetySettings"] == []


def test_gemini_3_needs_a_signature_on_calls_it_did_not_make() -> None:
    foreign = ToolCall(id="toolu_x", name="get_weather", arguments={"city": "Oslo"})
    request = LLMRequest(
        messages=[
            Message(role="user", content="hi"),
            Message(role="assistant", content="", tool_calls=[foreign]),
            Message(role="tool", tool_call_id="toolu_x", content="cold"),
        ]
    )
    part = build(request, model="gemini-3-pro-preview")["contents"][1]["parts"][0]
    assert part == {
        "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
        "thoughtSignature": SKIP_SIGNATURE,
    }
    older = build(request)["contents"][1]["parts"][0]
    assert "thoughtSignature" not in older


# ---- answers -------------------------------------------------------------------------------------


def _answer(parts: list[dict[str, Any]], response_id: str = "r1") -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13,
                          "cachedContentTokenCount": 6},
        "modelVersion": "gemini-2.5-flash",
        "responseId": response_id,
    }  # fmt: skip


CALLS = [
    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
    {"functionCall": {"name": "get_time"}},
]


async def test_calls_without_ids_get_stable_synthesised_ones(make_provider: MakeProvider) -> None:
    provider = make_provider(GeminiAdapter, lambda r: json_response(_answer(CALLS)))
    resp = await provider.make_request(LLMRequest(prompt="x", tools=[WEATHER]))
    assert resp.finish_reason == "tool_calls"  # the API says STOP
    assert [(c.name, c.arguments) for c in resp.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    ids = [c.id for c in resp.tool_calls]
    assert len(set(ids)) == 2
    assert all(i.startswith("call_") for i in ids)
    assert resp.usage == Usage(prompt_tokens=9, completion_tokens=4, total_tokens=13,
                               cached_tokens=6)  # fmt: skip
    # The same answer gives the same ids; another answer gives others.
    again = adapter().parse_response(200, {}, msgspec.json.encode(_answer(CALLS)))
    assert [c.id for c in again.tool_calls] == ids
    other = adapter().parse_response(200, {}, msgspec.json.encode(_answer(CALLS, "r2")))
    assert not {c.id for c in other.tool_calls} & set(ids)


def test_ids_and_signatures_from_the_api_are_kept_and_echoed() -> None:
    parts = [
        {
            "functionCall": {"id": "fc-1", "name": "get_weather", "args": {"city": "Rome"}},
            "thoughtSignature": "c2lnbmF0dXJl",
        }
    ]
    resp = adapter(model="gemini-3-flash").parse_response(
        200, {}, msgspec.json.encode(_answer(parts))
    )
    assert resp.tool_calls == (ToolCall(id="fc-1", name="get_weather", arguments={"city": "Rome"}),)
    follow_up = LLMRequest(
        messages=[
            Message(role="user", content="hi"),
            Message(role="assistant", content="", tool_calls=resp.tool_calls),
            Message(role="tool", tool_call_id="fc-1", content="warm"),
        ]
    )
    part = build(follow_up, model="gemini-3-flash")["contents"][1]["parts"][0]
    assert part["thoughtSignature"] == "c2lnbmF0dXJl"


async def test_stream_delivers_calls_whole_with_distinct_ids(make_provider: MakeProvider) -> None:
    text = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking."}]}}],
            "responseId": "r9"}  # fmt: skip
    first = {"candidates": [{"content": {"role": "model", "parts": CALLS[:1]}}], "responseId": "r9"}
    last = _answer(CALLS[1:], "r9")
    stream = sse_body("\n".join(f"data: {msgspec.json.encode(e).decode()}\n"
                                for e in (text, first, last)))  # fmt: skip
    provider = make_provider(GeminiAdapter, lambda r: sse_response(stream, size=13))
    chunks = await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    calls = [c for chunk in chunks for c in chunk.tool_calls]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                      ("get_time", {})]  # fmt: skip
    assert len({c.id for c in calls}) == 2
    assert chunks[0] == StreamChunk(delta="Checking.")
    assert [len(c.tool_calls) for c in chunks] == [0, 1, 1, 0]
    assert chunks[-1].finish_reason == "tool_calls"


async def test_text_that_quotes_the_function_call_key_is_still_text(
    make_provider: MakeProvider,
) -> None:
    # Text that mentions the key is text; a call next to text in one event comes whole.
    quoting = '{"functionCall": {"name": "x"}}'
    events = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": quoting}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": " and "},
                                                                  CALLS[0]]}}]},
        _answer([{"text": "done"}], "r1"),
    ]  # fmt: skip
    stream = sse_body("\n".join(f"data: {msgspec.json.encode(e).decode()}\n" for e in events))
    provider = make_provider(GeminiAdapter, lambda r: sse_response(stream, size=7))
    chunks = await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    assert chunks[0] == StreamChunk(delta=quoting)
    assert chunks[1].delta == " and "
    assert [(c.name, c.arguments) for c in chunks[1].tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert [c.delta for c in chunks[2:]] == ["done", ""]
    assert chunks[-1].finish_reason == "tool_calls"
