"""OpenAI adapter: tools, tool turns, images, output formats, seed, extra_body; calls parsed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors import LLMError, LLMRequest, StreamChunk, ToolCall, Usage
from llmlb_actors._config import ProviderConfig
from llmlb_actors.providers.openai import OpenAIAdapter, OpenAICompatibleAdapter
from tests.unit.providers.adapter_testing import KEY, collect, json_response, sse_body, sse_response
from tests.unit.providers.workload_cases import (
    CALL_A,
    CALL_B,
    IMAGE_URL,
    JPEG_URI,
    PNG_B64,
    SCHEMA,
    WEATHER,
    WEATHER_SCHEMA,
    body,
    conversation,
)

if TYPE_CHECKING:
    from tests.unit.providers.adapter_testing import MakeProvider


def adapter(cls: type[OpenAIAdapter] = OpenAIAdapter, **fields: Any) -> OpenAIAdapter:
    fields.setdefault("name", "openai")
    fields.setdefault("provider", cls.protocol)
    fields.setdefault("model", "gpt-4o-mini")
    fields.setdefault("api_key", KEY)
    if cls is OpenAICompatibleAdapter:
        fields.setdefault("base_url", "http://127.0.0.1:8000/v1")
    return cls(ProviderConfig(**fields))


TOOLS_WIRE = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": WEATHER_SCHEMA,
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
                                                                          "properties": {}}}},
]  # fmt: skip


# ---- request bodies ------------------------------------------------------------------------------


def test_conversation_with_images_tool_calls_and_results() -> None:
    call = adapter().build_request(conversation(), stream=False)
    assert body(call.body) == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather and time in Paris? Also, look:"},
                    {"type": "image_url", "image_url": {"url": IMAGE_URL}},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "image_url", "image_url": {"url": JPEG_URI}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_abc123XYZ",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "toolu_01A09q90qw90lq917835",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc123XYZ", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835", "content": "12:00"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": TOOLS_WIRE,
    }


def test_assistant_turn_of_only_tool_calls_has_null_content() -> None:
    request = LLMRequest(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [CALL_A]},
            {"role": "tool", "tool_call_id": CALL_A.id, "content": "sunny"},
        ]
    )
    messages = body(adapter().build_request(request, stream=False).body)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": CALL_A.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert "tools" not in body(adapter().build_request(request, stream=False).body)


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_variants(choice: str, wire: Any) -> None:
    request = LLMRequest(prompt="hi", tools=[WEATHER], tool_choice=choice)
    sent = body(adapter().build_request(request, stream=False).body)
    assert sent["tool_choice"] == wire
    assert sent["tools"] == TOOLS_WIRE[:1]


def test_tool_choice_without_tools_is_not_sent() -> None:
    sent = body(
        adapter().build_request(LLMRequest(prompt="hi", tool_choice="none"), stream=False).body
    )
    assert "tool_choice" not in sent
    assert "tools" not in sent


@pytest.mark.parametrize(
    ("fmt", "wire"),
    [
        ("json", {"type": "json_object"}),
        (
            SCHEMA,
            {
                "type": "json_schema",
                "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True},
            },
        ),
    ],
)
def test_response_format(fmt: Any, wire: Any) -> None:
    sent = body(
        adapter().build_request(LLMRequest(prompt="json", response_format=fmt), stream=False).body
    )
    assert sent == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "json"}],
        "response_format": wire,
    }


def test_seed_and_the_stream_fields_of_a_rich_request() -> None:
    sent = body(
        adapter().build_request(LLMRequest(prompt="x", seed=7, max_tokens=9), stream=True).body
    )
    assert sent == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 9,
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 7,
    }


def test_extra_body_is_merged_last_nested_objects_merge() -> None:
    request = LLMRequest(
        prompt="x",
        temperature=0.2,
        extra_body={
            "temperature": 0.5,  # replaces ours
            "stream_options": {"chunk_hint": 1},  # merges with ours
            "user": "u-1",  # added
            "logit_bias": {"50256": -100},
        },
    )
    sent = body(adapter().build_request(request, stream=True).body)
    assert sent == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.5,
        "stream": True,
        "stream_options": {"include_usage": True, "chunk_hint": 1},
        "user": "u-1",
        "logit_bias": {"50256": -100},
    }


def test_metadata_is_never_sent() -> None:
    request = LLMRequest(prompt="x", metadata={"job": "j-1"}, tools=[WEATHER])
    sent = adapter().build_request(request, stream=False).body
    assert sent is not None
    assert b"j-1" not in sent
    assert b"metadata" not in sent


def test_compatible_server_gets_the_same_shapes_with_max_tokens() -> None:
    call = adapter(OpenAICompatibleAdapter).build_request(conversation(max_tokens=3), stream=False)
    sent = body(call.body)
    assert sent["max_tokens"] == 3
    assert "max_completion_tokens" not in sent
    assert sent["tools"] == TOOLS_WIRE
    assert call.url == "http://127.0.0.1:8000/v1/chat/completions"


# ---- whole answers -------------------------------------------------------------------------------

TOOL_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {"id": "call_2", "type": "function",
                     "function": {"name": "get_time", "arguments": ""}},
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 90,
        "completion_tokens": 20,
        "total_tokens": 110,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0},
    },
}  # fmt: skip


async def test_whole_answer_with_two_tool_calls(make_provider: MakeProvider) -> None:
    provider = make_provider(OpenAIAdapter, lambda r: json_response(TOOL_ANSWER))
    resp = await provider.make_request(LLMRequest(prompt="x", tools=[WEATHER]))
    assert resp.content == ""
    assert resp.finish_reason == "tool_calls"
    assert resp.tool_calls == (
        ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="call_2", name="get_time", arguments={}),  # "" means no arguments
    )
    assert resp.usage == Usage(
        prompt_tokens=90, completion_tokens=20, total_tokens=110, cached_tokens=64,
        reasoning_tokens=12,
    )  # fmt: skip


def _with_arguments(arguments: Any, finish: str = "tool_calls") -> bytes:
    answer = msgspec.json.decode(msgspec.json.encode(TOOL_ANSWER))
    answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = arguments
    answer["choices"][0]["finish_reason"] = finish
    return msgspec.json.encode(answer)


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", '"text"', "null x"])
def test_unparseable_arguments_are_a_typed_error(arguments: str) -> None:
    with pytest.raises(LLMError) as info:
        adapter().parse_response(200, {}, _with_arguments(arguments))
    assert info.value.kind == "protocol"
    assert info.value.retryable
    assert "get_weather" in str(info.value)


def test_arguments_given_as_an_object_and_stop_from_a_compatible_server() -> None:
    resp = adapter(OpenAICompatibleAdapter).parse_response(
        200, {}, _with_arguments({"city": "Oslo"}, finish="stop")
    )
    assert resp.tool_calls[0].arguments == {"city": "Oslo"}
    assert resp.finish_reason == "tool_calls"  # vLLM and Ollama say "stop" here


def test_a_tool_call_without_id_is_a_protocol_error() -> None:
    answer = msgspec.json.decode(msgspec.json.encode(TOOL_ANSWER))
    del answer["choices"][0]["message"]["tool_calls"][0]["id"]
    with pytest.raises(LLMError, match="without an id") as info:
        adapter().parse_response(200, {}, msgspec.json.encode(answer))
    assert info.value.kind == "protocol"


# ---- streams -------------------------------------------------------------------------------------

PREFIX = '"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini"'


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return f'data: {{{PREFIX},"choices":[{msgspec.json.encode(choice).decode()}]}}\n'


def _tool_stream() -> bytes:
    """Text, then two calls whose names and arguments arrive in fragments, then usage."""
    events = [
        _chunk({"role": "assistant", "content": "Checking "}),
        _chunk({"content": "now."}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Pa'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                "function": {"name": "get_time", "arguments": "{"}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": "}"}}]}),
        _chunk({}, "tool_calls"),
        'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,'
        '"total_tokens":12}}\n',
        "data: [DONE]\n",
    ]  # fmt: skip
    return sse_body("\n".join(events))


@pytest.mark.parametrize("size", [0, 7])
async def test_stream_delivers_each_call_once_whole(make_provider: MakeProvider, size: int) -> None:
    stream = _tool_stream()
    provider = make_provider(OpenAIAdapter, lambda r: sse_response(stream, size=size))
    chunks = await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    assert chunks == [
        StreamChunk(delta="Checking "),
        StreamChunk(delta="now."),
        # the first call is complete once the second one starts
        StreamChunk(tool_calls=(ToolCall(id="call_1", name="get_weather",
                                         arguments={"city": "Paris"}),)),
        StreamChunk(tool_calls=(ToolCall(id="call_2", name="get_time", arguments={}),)),
        StreamChunk(finish_reason="tool_calls", model="gpt-4o-mini",
                    usage=Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)),
    ]  # fmt: skip


async def test_stream_with_broken_arguments_raises_a_typed_error(
    make_provider: MakeProvider,
) -> None:
    events = [
        _chunk({"tool_calls": [{"index": 0, "id": "call_1",
                                "function": {"name": "get_weather", "arguments": '{"city": '}}]}),
        _chunk({}, "tool_calls"),
        "data: [DONE]\n",
    ]  # fmt: skip
    stream = sse_body("\n".join(events))
    provider = make_provider(OpenAIAdapter, lambda r: sse_response(stream))
    with pytest.raises(LLMError, match="not a JSON object") as info:
        await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    assert info.value.kind == "protocol"


async def test_stream_whose_calls_end_at_done_without_a_finish_reason(
    make_provider: MakeProvider,
) -> None:
    events = [
        _chunk({"tool_calls": [{"index": 0, "id": "call_9",
                                "function": {"name": "get_time", "arguments": "{}"}}]}),
        "data: [DONE]\n",
    ]  # fmt: skip
    stream = sse_body("\n".join(events))
    provider = make_provider(OpenAIAdapter, lambda r: sse_response(stream))
    chunks = await collect(provider, LLMRequest(prompt="x", tools=[WEATHER]))
    assert chunks == [
        StreamChunk(tool_calls=(ToolCall(id="call_9", name="get_time", arguments={}),)),
        StreamChunk(finish_reason="tool_calls", model="gpt-4o-mini"),
    ]


def test_key_in_calls_is_still_hidden() -> None:
    call = adapter().build_request(conversation(), stream=False)
    assert KEY not in repr(call)
    assert CALL_B.id in (call.body or b"").decode()
