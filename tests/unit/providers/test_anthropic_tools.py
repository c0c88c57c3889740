"""Anthropic adapter: tool_use / tool_result blocks, images, output formats; tool calls parsed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors import LLMError, LLMRequest, Message, StreamChunk, ToolCall, Usage
from llmlb_actors._config import ProviderConfig
from llmlb_actors.providers.anthropic import JSON_TOOL, AnthropicAdapter
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


def adapter(**fields: Any) -> AnthropicAdapter:
    fields.setdefault("name", "claude")
    fields.setdefault("model", "claude-x")
    fields.setdefault("api_key", KEY)
    return AnthropicAdapter(ProviderConfig(**fields))


def build(request: LLMRequest, *, stream: bool = False) -> Any:
    return body(adapter().build_request(request, stream=stream).body)


TOOLS_WIRE = [
    {"name": "get_weather", "description": "Current weather", "input_schema": WEATHER_SCHEMA},
    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
]


def test_conversation_blocks_and_merged_tool_results() -> None:
    assert build(conversation()) == {
        "model": "claude-x",
        "max_tokens": 1024,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather and time in Paris? Also, look:"},
                    {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": PNG_B64}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                                 "data": "/9hqcGVn"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_abc123XYZ", "name": "get_weather",
                     "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835", "name": "get_time",
                     "input": {}},
                ],
            },
            {
                # Consecutive tool results travel in one user turn.
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_abc123XYZ",
                     "content": '{"temp": 21}'},
                    {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835",
                     "content": "12:00"},
                ],
            },
            {"role": "user", "content": "Thanks"},
        ],
        "system": "Be brief.",
        "tools": TOOLS_WIRE,
    }  # fmt: skip


def test_ids_the_api_would_refuse_are_mapped_the_same_on_both_sides() -> None:
    call = ToolCall(id="call:1/x", name="get_weather", arguments={})
    sent = build(
        LLMRequest(
            messages=[
                Message(role="user", content="hi"),
                Message(role="assistant", content="", tool_calls=[call]),
                Message(role="tool", tool_call_id="call:1/x", content="ok"),
            ]
        )
    )
    use = sent["messages"][1]["content"][0]
    result = sent["messages"][2]["content"][0]
    assert use["type"] == "tool_use"
    assert result["type"] == "tool_result"
    assert use["id"] == result["tool_use_id"] != "call:1/x"
    assert use["id"].replace("_", "").replace("-", "").isalnum()
    assert "text" not in [b["type"] for b in sent["messages"][1]["content"]]  # no empty text


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_variants(choice: str, wire: Any) -> None:
    sent = build(LLMRequest(prompt="hi", tools=[WEATHER], tool_choice=choice))
    assert sent["tool_choice"] == wire
    assert sent["tools"] == TOOLS_WIRE[:1]


def test_json_schema_uses_native_structured_output() -> None:
    sent = build(LLMRequest(prompt="json please", response_format=SCHEMA))
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}}
    assert "tools" not in sent


def test_json_mode_forces_one_tool_whose_input_is_the_answer() -> None:
    sent = build(LLMRequest(prompt="json please", response_format="json"))
    assert sent["tools"] == [
        {"name": JSON_TOOL, "description": "Give the answer as this JSON object.",
         "input_schema": {"type": "object"}}
    ]  # fmt: skip
    assert sent["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_what_the_api_cannot_express_is_dropped_with_one_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="llmlb_actors"):
        sent = build(LLMRequest(prompt="x", seed=5, tools=[WEATHER], response_format="json"))
    assert "seed" not in sent
    assert sent["tools"] == TOOLS_WIRE[:1]  # the user's tools, no forced JSON tool
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert any("seed" in line for line in lines)
    assert any("response_format='json'" in line for line in lines)


def test_extra_body_merges_last() -> None:
    sent = build(
        LLMRequest(
            prompt="x",
            max_tokens=2000,
            extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 5},
        )
    )
    assert sent == {
        "model": "claude-x",
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 5,
    }


# ---- answers -------------------------------------------------------------------------------------

ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 10, "output_tokens": 30, "cache_read_input_tokens": 200},
}


async def test_whole_answer_with_text_and_two_calls(make_provider: MakeProvider) -> None:
    provider = make_provider(AnthropicAdapter, lambda r: json_response(ANSWER))
    resp = await provider.make_request(LLMRequest(prompt="x", tools=[WEATHER]))
    assert resp.content == "Let me look."
    assert resp.finish_reason == "tool_calls"
    assert resp.tool_calls == (
        ToolCall(id="toolu_1", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="toolu_2", name="get_time", arguments={}),
    )
    assert resp.usage == Usage(prompt_tokens=10, completion_tokens=30, total_tokens=40,
                               cached_tokens=200)  # fmt: skip


def test_forced_json_tool_comes_back_as_text() -> None:
    answer = dict(
        ANSWER,
        content=[{"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {"a": [1, 2]}}],
    )
    resp = adapter().parse_response(200, {}, msgspec.json.encode(answer))
    assert (resp.content, resp.finish_reason, resp.tool_calls) == ('{"a":[1,2]}', "stop", ())


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {msgspec.json.encode(data).decode()}\n"


def _delta(index: int, delta: dict[str, Any]) -> str:
    return _event("content_block_delta",
                  {"type": "content_block_delta", "index": index, "delta": delta})  # fmt: skip


def _json(index: int, piece: str) -> str:
    return _delta(index, {"type": "input_json_delta", "partial_json": piece})


def _start(index: int, block: dict[str, Any]) -> str:
    data = {"type": "content_block_start", "index": index, "content_block": block}
    return _event("content_block_start", data)


def _stop(index: int) -> str:
    return _event("content_block_stop", {"type": "content_block_stop", "index": index})


START_MESSAGE = {"id": "m", "model": "claude-x", "usage": {"input_tokens": 10, "output_tokens": 1}}
START = _event("message_start", {"type": "message_start", "message": START_MESSAGE})
END = [
    _event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                             "usage": {"output_tokens": 30}}),
    _event("message_stop", {"type": "message_stop"}),
]  # fmt: skip


@pytest.mark.parametrize("size", [0, 11])
async def test_stream_assembles_input_json_deltas(make_provider: MakeProvider, size: int) -> None:
    events = [
        START,
        _start(0, {"type": "text", "text": ""}),
        _delta(0, {"type": "text_delta", "text": "Let me "}),
        _delta(0, {"type": "text_delta", "text": "look."}),
        _stop(0),
        _start(1, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
        _json(1, ""),
        _json(1, '{"ci'),
        _event("ping", {"type": "ping"}),
        _json(1, 'ty": "Par'),
        _json(1, 'is"}'),
        _stop(1),
        _start(2, {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}),
        _stop(2),  # no input_json_delta at all: no arguments
        *END,
    ]
    stream = sse_body("\n".join(events))
    provider = make_provider(AnthropicAdapter, lambda r: sse_response(stream, size=size))
    chunks = await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    assert chunks == [
        StreamChunk(delta="Let me "),
        StreamChunk(delta="look."),
        StreamChunk(tool_calls=(ToolCall(id="toolu_1", name="get_weather",
                                         arguments={"city": "Paris"}),)),
        StreamChunk(tool_calls=(ToolCall(id="toolu_2", name="get_time", arguments={}),)),
        StreamChunk(finish_reason="tool_calls", model="claude-x",
                    usage=Usage(prompt_tokens=10, completion_tokens=30, total_tokens=40)),
    ]  # fmt: skip


async def test_stream_of_the_forced_json_tool_is_text(make_provider: MakeProvider) -> None:
    events = [
        START,
        _start(0, {"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {}}),
        _json(0, '{"a": '),
        _json(0, "1}"),
        _stop(0),
        *END,
    ]
    provider = make_provider(AnthropicAdapter, lambda r: sse_response(sse_body("\n".join(events))))
    chunks = await collect(provider, LLMRequest(prompt="x", response_format="json"))
    assert [c.delta for c in chunks] == ['{"a": ', "1}", ""]
    assert chunks[-1].finish_reason == "stop"
    assert not any(c.tool_calls for c in chunks)


async def test_stream_with_broken_input_json_is_a_typed_error(make_provider: MakeProvider) -> None:
    events = [
        START,
        _start(0, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
        _json(0, '{"city": '),
        _stop(0),
        *END,
    ]
    provider = make_provider(AnthropicAdapter, lambda r: sse_response(sse_body("\n".join(events))))
    with pytest.raises(LLMError, match="not a JSON object") as info:
        await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    assert info.value.kind == "protocol"
