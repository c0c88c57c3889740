"""The richer chat surface refuses bad input when it is built, naming the field."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors import (
    ImagePart,
    JSONSchema,
    LLMRequest,
    LLMResponse,
    Message,
    StreamChunk,
    TextPart,
    Tool,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from collections.abc import Callable

WEATHER = Tool(name="get_weather", parameters={"type": "object"})
CALL = ToolCall(id="c1", name="get_weather", arguments={"city": "Paris"})


def _request(**fields: Any) -> Callable[[], object]:
    return lambda: LLMRequest(**fields)


def _messages(*messages: Any) -> Callable[[], object]:
    return lambda: LLMRequest(messages=list(messages))


CASES: list[tuple[str, Callable[[], object], str]] = [
    ("unknown role", _messages({"role": "robot", "content": "x"}), "LLMRequest.messages[0]"),
    ("unknown role, struct", _messages(Message(role="robot", content="x")),  # type: ignore[arg-type]
     "Message.role"),
    ("tool message without tool_call_id",
     _messages({"role": "user", "content": "x"}, {"role": "tool", "content": "42"}),
     "Message.tool_call_id"),
    ("tool message answering no call",
     _messages({"role": "user", "content": "x"},
               {"role": "tool", "content": "42", "tool_call_id": "nope"}),
     "LLMRequest.messages[1].tool_call_id"),
    ("tool name contradicting its call",
     _messages({"role": "user", "content": "x"},
               {"role": "assistant", "content": "", "tool_calls": [CALL]},
               {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "other"}),
     "LLMRequest.messages[2].name"),
    ("tool calls on a user turn",
     _messages({"role": "user", "content": "x", "tool_calls": [CALL]}), "Message.tool_calls"),
    ("tool_call_id on a user turn",
     _messages({"role": "user", "content": "x", "tool_call_id": "c1"}), "Message.tool_call_id"),
    ("image in an assistant turn",
     _messages({"role": "user", "content": "x"},
               {"role": "assistant", "content": [{"type": "image", "url": "https://x/y.png"}]}),
     "Message.content[0]"),
    ("empty parts", _messages({"role": "user", "content": []}), "Message.content"),
    ("part of an unknown type",
     _messages({"role": "user", "content": [{"type": "audio", "data": "x"}]}),
     "content[0].type"),
    ("image with url and data",
     lambda: ImagePart(url="https://x/y.png", data=b"x", media_type="image/png"), "ImagePart.url"),
    ("image with neither", lambda: ImagePart(), "ImagePart.url"),
    ("bad media type", lambda: ImagePart(data=b"x", media_type="image/bmp"),
     "ImagePart.media_type"),
    ("bytes without a media type", lambda: ImagePart(data=b"x"), "ImagePart.media_type"),
    ("plain http url", lambda: ImagePart(url="http://x/y.png"), "ImagePart.url"),
    ("data URI of a non-image", lambda: ImagePart(url="data:text/plain;base64,eA=="),
     "ImagePart.url"),
    ("data URI not base64", lambda: ImagePart(url="data:image/png;base64,***"), "ImagePart.url"),
    ("tool name with spaces", lambda: Tool(name="get weather", parameters={}), "Tool.name"),
    ("tool name too long", lambda: Tool(name="x" * 65, parameters={}), "Tool.name"),
    ("parameters not a dict", lambda: Tool(name="t", parameters=["x"]),  # type: ignore[arg-type]
     "Tool.parameters"),
    ("tool as a dict with bad parameters",
     _request(prompt="x", tools=[{"name": "t", "parameters": "x"}]), "LLMRequest.tools[0]"),
    ("duplicate tool names", _request(prompt="x", tools=[WEATHER, WEATHER]), "LLMRequest.tools"),
    ("tool_choice naming an unknown tool",
     _request(prompt="x", tools=[WEATHER], tool_choice="get_time"), "LLMRequest.tool_choice"),
    ("tool_choice required without tools", _request(prompt="x", tool_choice="required"),
     "LLMRequest.tool_choice"),
    ("tool call arguments not a dict",
     lambda: ToolCall(id="c", name="t", arguments="{}"),  # type: ignore[arg-type]
     "ToolCall.arguments"),
    ("tool call without id", lambda: ToolCall(id="", name="t", arguments={}), "ToolCall.id"),
    ("schema name with a dot", lambda: JSONSchema(name="a.b", schema={}), "JSONSchema.name"),
    ("response_format of another kind", _request(prompt="x", response_format="xml"),
     "LLMRequest.response_format"),
    ("seed not an int", _request(prompt="x", seed=1.5), "LLMRequest.seed"),
    ("seed a bool", _request(prompt="x", seed=True), "LLMRequest.seed"),
    ("extra_body not JSON-encodable", _request(prompt="x", extra_body={"when": object()}),
     "LLMRequest.extra_body"),
    ("extra_body not a mapping", _request(prompt="x", extra_body=["x"]), "LLMRequest.extra_body"),
    ("metadata not strings", _request(prompt="x", metadata={"n": 1}), "LLMRequest.metadata"),
    ("lone surrogate in a part", lambda: TextPart(text="\ud800"), "TextPart.text"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_value_error_naming_the_field(
    build: Callable[[], object], field: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        build()


def test_dicts_become_structs_and_round_trip_through_json() -> None:
    request = LLMRequest(
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "see"},
                {"type": "image", "data": "iVBO", "media_type": "image/png"}]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "21C"},
        ],
        tools=[{"name": "get_weather", "parameters": {"type": "object"}}],
        tool_choice="auto",
        response_format={"name": "w", "schema": {"type": "object"}},
        metadata={"job": "7"},
    )  # fmt: skip
    assert request.messages is not None
    user, assistant, _ = request.messages
    assert isinstance(user.content, tuple)
    assert isinstance(user.content[1], ImagePart)
    assert isinstance(user.content[0], TextPart)
    assert assistant.tool_calls == (CALL,)
    assert request.tools == (WEATHER,)
    assert request.response_format == JSONSchema(name="w", schema={"type": "object"})
    again = msgspec.json.decode(msgspec.json.encode(request), type=LLMRequest)
    assert again == request


def test_image_bytes_are_not_shown_in_reprs() -> None:
    image = ImagePart(data=b"secret-pixels" * 100, media_type="image/png")
    assert "secret" not in repr(image)
    assert "1300 bytes" in repr(image)


def test_defaults_of_the_new_fields() -> None:
    assert LLMResponse(content="x").tool_calls == ()
    assert LLMResponse(content="x").metadata is None
    assert StreamChunk().tool_calls == ()
    assert Usage() == Usage(cached_tokens=0, reasoning_tokens=0)
    # A text turn still encodes as exactly {role, content}.
    assert msgspec.json.encode(Message(role="user", content="hi")) == (
        b'{"role":"user","content":"hi"}'
    )
