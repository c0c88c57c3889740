"""Cohere v2 adapter: tools, tool turns, image parts, JSON output, seed; tool calls parsed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors import LLMError, LLMRequest, StreamChunk, ToolCall, Usage
from llmlb_actors._config import ProviderConfig
from llmlb_actors.providers.cohere import CohereAdapter
from tests.unit.providers.adapter_testing import KEY, collect, json_response, sse_body, sse_response
from tests.unit.providers.workload_cases import (
    IMAGE_URL,
    PNG_B64,
    SCHEMA,
    TIME,
    WEATHER,
    WEATHER_SCHEMA,
    body,
    conversation,
)

if TYPE_CHECKING:
    from tests.unit.providers.adapter_testing import MakeProvider


def adapter(**fields: Any) -> CohereAdapter:
    fields.setdefault("name", "cohere")
    fields.setdefault("model", "command-a")
    fields.setdefault("api_key", KEY)
    return CohereAdapter(ProviderConfig(**fields))


def build(request: LLMRequest, *, stream: bool = False) -> Any:
    return body(adapter().build_request(request, stream=stream).body)


WEATHER_WIRE = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather",
                 "parameters": WEATHER_SCHEMA},
}  # fmt: skip


def test_conversation_with_images_tool_calls_and_results() -> None:
    assert build(conversation()) == {
        "model": "command-a",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather and time in Paris? Also, look:"},
                    {"type": "image_url", "image_url": {"url": IMAGE_URL}},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9hqcGVn"}},
                ],
            },
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "call_abc123XYZ", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                    {"id": "toolu_01A09q90qw90lq917835", "type": "function",
                     "function": {"name": "get_time", "arguments": "{}"}},
                ],
                "content": "Let me check.",
            },
            {"role": "tool", "tool_call_id": "call_abc123XYZ", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835", "content": "12:00"},
            {"role": "user", "content": "Thanks"},
        ],
        "stream": False,
        "tools": [WEATHER_WIRE, {"type": "function", "function": {"name": "get_time",
                  "parameters": {"type": "object", "properties": {}}}}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("choice", "wire", "tools"),
    [
        ("auto", None, ["get_weather", "get_time"]),
        ("none", "NONE", ["get_weather", "get_time"]),
        ("required", "REQUIRED", ["get_weather", "get_time"]),
        # No way to name a tool: only that tool is offered, and a call is required.
        ("get_time", "REQUIRED", ["get_time"]),
    ],
)
def test_tool_choice_variants(choice: str, wire: str | None, tools: list[str]) -> None:
    sent = build(LLMRequest(prompt="hi", tools=[WEATHER, TIME], tool_choice=choice))
    assert sent.get("tool_choice") == wire
    assert [t["function"]["name"] for t in sent["tools"]] == tools


@pytest.mark.parametrize(
    ("fmt", "wire"),
    [
        ("json", {"type": "json_object"}),
        (SCHEMA, {"type": "json_object", "json_schema": WEATHER_SCHEMA}),
    ],
)
def test_response_format_and_seed(fmt: Any, wire: Any) -> None:
    sent = build(LLMRequest(prompt="j", response_format=fmt, seed=11, top_p=0.5), stream=True)
    assert sent == {
        "model": "command-a",
        "messages": [{"role": "user", "content": "j"}],
        "stream": True,
        "p": 0.5,
        "response_format": wire,
        "seed": 11,
    }


def test_extra_body_merges_last() -> None:
    sent = build(LLMRequest(prompt="x", extra_body={"safety_mode": "OFF", "stream": True}))
    assert sent["safety_mode"] == "OFF"
    assert sent["stream"] is True


ANSWER = {
    "id": "c1",
    "finish_reason": "TOOL_CALL",
    "message": {
        "role": "assistant",
        "tool_plan": "I will look up the weather.",
        "tool_calls": [
            {"id": "get_weather_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "get_time_2", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}},
        ],
    },
    "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 9},
              "tokens": {"input_tokens": 50, "output_tokens": 9}, "cached_tokens": 32},
}  # fmt: skip


async def test_whole_answer_with_two_calls(make_provider: MakeProvider) -> None:
    provider = make_provider(CohereAdapter, lambda r: json_response(ANSWER))
    resp = await provider.make_request(LLMRequest(prompt="x", tools=[WEATHER]))
    assert resp.content == ""  # the tool plan is the model's reasoning, not the answer
    assert resp.finish_reason == "tool_calls"
    assert resp.tool_calls == (
        ToolCall(id="get_weather_1", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="get_time_2", name="get_time", arguments={}),
    )
    assert resp.usage == Usage(prompt_tokens=50, completion_tokens=9, total_tokens=59,
                               cached_tokens=32)  # fmt: skip


def test_unparseable_arguments_are_a_typed_error() -> None:
    answer = msgspec.json.decode(msgspec.json.encode(ANSWER))
    answer["message"]["tool_calls"][0]["function"]["arguments"] = "{oops"
    with pytest.raises(LLMError) as info:
        adapter().parse_response(200, {}, msgspec.json.encode(answer))
    assert info.value.kind == "protocol"


def _event(data: dict[str, Any]) -> str:
    return f"event: {data['type']}\ndata: {msgspec.json.encode(data).decode()}\n"


def _call_start(index: int, id_: str, name: str) -> str:
    call = {"id": id_, "type": "function", "function": {"name": name, "arguments": ""}}
    return _event({"type": "tool-call-start", "index": index,
                   "delta": {"message": {"tool_calls": call}}})  # fmt: skip


def _call_delta(index: int, piece: str) -> str:
    message = {"tool_calls": {"function": {"arguments": piece}}}
    return _event({"type": "tool-call-delta", "index": index, "delta": {"message": message}})


@pytest.mark.parametrize("size", [0, 9])
async def test_stream_assembles_tool_call_deltas(make_provider: MakeProvider, size: int) -> None:
    events = [
        _event({"id": "c1", "type": "message-start", "delta": {"message": {
            "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [],
            "citations": []}}}),
        _event({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will"}}}),
        _call_start(0, "get_weather_1", "get_weather"),
        _call_delta(0, '{"city'),
        _call_delta(0, '":"Paris"}'),
        _event({"type": "tool-call-end", "index": 0}),
        _call_start(1, "get_time_2", "get_time"),
        _event({"type": "tool-call-end", "index": 1}),
        _event({"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": {
            "tokens": {"input_tokens": 50, "output_tokens": 9}}}}),
        "data: [DONE]\n",
    ]  # fmt: skip
    stream = sse_body("\n".join(events))
    provider = make_provider(CohereAdapter, lambda r: sse_response(stream, size=size))
    chunks = await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    assert chunks == [
        StreamChunk(tool_calls=(ToolCall(id="get_weather_1", name="get_weather",
                                         arguments={"city": "Paris"}),)),
        StreamChunk(tool_calls=(ToolCall(id="get_time_2", name="get_time", arguments={}),)),
        StreamChunk(finish_reason="tool_calls", model="m",
                    usage=Usage(prompt_tokens=50, completion_tokens=9, total_tokens=59)),
    ]  # fmt: skip
