"""Requests shared by the adapter tests of tools, images, output formats and pass-through."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import msgspec

from llmlb_actors import ImagePart, JSONSchema, LLMRequest, Message, TextPart, Tool, ToolCall

if TYPE_CHECKING:
    import httpx

PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"
PNG_B64 = base64.b64encode(PNG).decode()
JPEG_URI = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8jpeg").decode()
IMAGE_URL = "https://example.com/cat.png"

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = Tool(name="get_weather", description="Current weather", parameters=WEATHER_SCHEMA)
TIME = Tool(name="get_time", parameters={"type": "object", "properties": {}})

# Ids from another provider (OpenAI-style and Anthropic-style) in one conversation.
CALL_A = ToolCall(id="call_abc123XYZ", name="get_weather", arguments={"city": "Paris"})
CALL_B = ToolCall(id="toolu_01A09q90qw90lq917835", name="get_time", arguments={})


def conversation(**extra: Any) -> LLMRequest:
    """A user turn with text and three images, two parallel tool calls, their results, more."""
    return LLMRequest(
        system="Be brief.",
        messages=[
            Message(
                role="user",
                content=[
                    TextPart(text="Weather and time in Paris? Also, look:"),
                    ImagePart(url=IMAGE_URL),
                    ImagePart(data=PNG, media_type="image/png"),
                    ImagePart(url=JPEG_URI),
                ],
            ),
            Message(role="assistant", content="Let me check.", tool_calls=[CALL_A, CALL_B]),
            Message(role="tool", tool_call_id=CALL_A.id, content='{"temp": 21}'),
            Message(role="tool", tool_call_id=CALL_B.id, name="get_time", content="12:00"),
            Message(role="user", content="Thanks"),
        ],
        tools=[WEATHER, TIME],
        **extra,
    )


def body(call_body: bytes | None) -> Any:
    assert call_body is not None
    return msgspec.json.decode(call_body)


def request_body(request: httpx.Request) -> Any:
    return msgspec.json.decode(request.content)


SCHEMA = JSONSchema(name="weather", schema=WEATHER_SCHEMA)
