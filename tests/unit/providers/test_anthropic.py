"""Anthropic Messages adapter: request building, parsing, errors, typed-event streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors._config import ProviderConfig
from llmlb_actors._errors import ConfigError, LLMError
from llmlb_actors._models import LLMRequest, Message, StreamChunk, Usage
from llmlb_actors.providers.anthropic import AnthropicAdapter
from tests.unit.providers.adapter_testing import (
    KEY,
    collect,
    json_response,
    raw_response,
    sse_body,
    sse_response,
)

if TYPE_CHECKING:
    import httpx

    from tests.unit.providers.adapter_testing import MakeProvider

EXAMPLE = {
    "id": "msg_01A",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 3},
}

STREAM = sse_body("""
event: message_start
data: {"type":"message_start","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}

event: message_stop
data: {"type":"message_stop"}
""")  # noqa: E501

FINAL = StreamChunk(
    finish_reason="stop",
    usage=Usage(prompt_tokens=10, completion_tokens=3, total_tokens=13),
    model="claude-x",
)


def adapter(**fields: Any) -> AnthropicAdapter:
    fields.setdefault("name", "claude")
    fields.setdefault("model", "claude-x")
    fields.setdefault("api_key", KEY)
    return AnthropicAdapter(ProviderConfig(**fields))


def body(call_body: bytes | None) -> Any:
    assert call_body is not None
    return msgspec.json.decode(call_body)


# ---- building requests ---------------------------------------------------------------------------


def test_build_request_maps_every_field() -> None:
    req = LLMRequest(
        prompt="Hi", system="Be brief.", max_tokens=64, temperature=0.2, top_p=0.9, stop=("END",)
    )
    call = adapter().build_request(req, stream=False)
    assert (call.method, call.url) == ("POST", "https://api.anthropic.com/v1/messages")
    headers = dict(call.headers)
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert "authorization" not in headers
    assert body(call.body) == {
        "model": "claude-x",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "Be brief.",
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
    }


def test_max_tokens_defaults_and_stream_flag() -> None:
    call = adapter().build_request(LLMRequest(prompt="Hi"), stream=True)
    assert body(call.body) == {
        "model": "claude-x",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    assert dict(call.headers)["accept"] == "text/event-stream"


def test_system_messages_move_to_top_level() -> None:
    req = LLMRequest(
        system="Top.",
        messages=(
            Message(role="system", content="Inline."),
            Message(role="user", content="a"),
            Message(role="assistant", content="b"),
            Message(role="system", content="Later."),
            Message(role="user", content="c"),
        ),
    )
    sent = body(adapter().build_request(req, stream=False).body)
    assert sent["system"] == "Top.\n\nInline.\n\nLater."
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    only_inline = LLMRequest(
        messages=(Message(role="system", content="S"), Message(role="user", content="u"))
    )
    assert body(adapter().build_request(only_inline, stream=False).body)["system"] == "S"


def test_api_version_and_base_url_are_configurable() -> None:
    a = adapter(api_version="2026-10-21", base_url="http://127.0.0.1:9/")
    call = a.build_request(LLMRequest(prompt="x"), stream=False)
    assert call.url == "http://127.0.0.1:9/v1/messages"
    assert dict(call.headers)["anthropic-version"] == "2026-10-21"
    health = a.health_request()
    assert (health.method, health.url, health.body) == ("GET", "http://127.0.0.1:9/v1/models", None)
    assert dict(health.headers)["x-api-key"] == KEY
    assert dict(health.headers)["anthropic-version"] == "2026-10-21"


def test_header_injection_and_secrets() -> None:
    with pytest.raises(ConfigError, match="api_version"):
        adapter(api_version="2023-06-01\r\nx-evil: 1")
    with pytest.raises(ConfigError, match="api_key") as info:
        adapter(api_key=KEY + "\n")
    assert KEY not in str(info.value)
    a = adapter()
    assert KEY not in repr(a)
    assert KEY not in repr(a.build_request(LLMRequest(prompt="x"), stream=False))


# ---- whole responses -----------------------------------------------------------------------------


async def test_parse_doc_example(make_provider: MakeProvider) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(EXAMPLE)

    resp = await make_provider(AnthropicAdapter, handler).make_request(LLMRequest(prompt="Hi"))
    assert (resp.content, resp.model, resp.finish_reason) == ("Hello!", "claude-x", "stop")
    assert resp.usage == Usage(prompt_tokens=10, completion_tokens=3, total_tokens=13)
    assert seen[0].headers["x-api-key"] == KEY


def test_text_blocks_are_joined_and_others_skipped() -> None:
    msg = dict(
        EXAMPLE,
        content=[
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "a"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            {"type": "text", "text": "b"},
        ],
        stop_reason="tool_use",
    )
    resp = adapter().parse_response(200, {}, msgspec.json.encode(msg))
    assert (resp.content, resp.finish_reason) == ("ab", "tool_calls")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
     ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), ("pause_turn", "other"), (None, None)],
)  # fmt: skip
def test_finish_reasons(reason: str | None, expected: str | None) -> None:
    msg = dict(EXAMPLE, stop_reason=reason)
    assert adapter().parse_response(200, {}, msgspec.json.encode(msg)).finish_reason == expected


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"id": "x"}', b'{"content": [{"text": "no type"}]}', b'{"content": "str"}',
     b'{"content": [{"type": "text", "text": "\xc3"}]}', b"\x89PNG"],
)  # fmt: skip
async def test_malformed_bodies(make_provider: MakeProvider, raw: bytes) -> None:
    provider = make_provider(AnthropicAdapter, lambda r: raw_response(raw), name="claude")
    with pytest.raises(LLMError, match="malformed Anthropic answer from provider 'claude'") as info:
        await provider.make_request(LLMRequest(prompt="x"))
    assert (info.value.kind, info.value.retryable) == ("protocol", True)


# ---- error statuses ------------------------------------------------------------------------------


def _err(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_1"}


@pytest.mark.parametrize(
    ("status", "type_", "retryable", "disables"),
    [
        (400, "invalid_request_error", False, False),
        (401, "authentication_error", False, True),
        (402, "billing_error", False, False),
        (403, "permission_error", False, True),
        (404, "not_found_error", False, True),
        (413, "request_too_large", False, False),
        (429, "rate_limit_error", True, False),
        (500, "api_error", True, False),
        (504, "timeout_error", True, False),
        (529, "overloaded_error", True, False),
    ],
)
async def test_error_statuses(
    make_provider: MakeProvider, status: int, type_: str, retryable: bool, disables: bool
) -> None:
    provider = make_provider(
        AnthropicAdapter, lambda r: json_response(_err(type_, "Something broke"), status)
    )
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    err = info.value
    assert (err.status, err.retryable, err.disables_provider) == (status, retryable, disables)
    assert err.message == f"Something broke ({type_})"
    assert err.retry_after is None


async def test_rate_limit_retry_after(make_provider: MakeProvider) -> None:
    provider = make_provider(
        AnthropicAdapter,
        lambda r: json_response(_err("rate_limit_error", "slow"), 429, {"retry-after": "12"}),
    )
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    assert (info.value.retry_after, info.value.retryable) == (12.0, True)


def test_unexpected_error_bodies_fall_back_to_text() -> None:
    a = adapter()
    assert a.error_message(413, b"<html>413 Request Entity Too Large</html>") == (
        "<html>413 Request Entity Too Large</html>",
        None,
    )
    assert a.error_message(500, b'{"error": {}}') == ('{"error": {}}', None)
    assert a.error_message(500, b'{"error": "x"}') == ('{"error": "x"}', None)


# ---- streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 13, 100])
async def test_stream_doc_example(make_provider: MakeProvider, size: int) -> None:
    provider = make_provider(AnthropicAdapter, lambda r: sse_response(STREAM, size=size))
    chunks = await collect(provider, LLMRequest(prompt="Hi"))
    assert chunks == [StreamChunk(delta="Hel"), StreamChunk(delta="lo"), FINAL]


async def test_stream_ignores_other_deltas_and_unknown_events(make_provider: MakeProvider) -> None:
    body = sse_body("""
event: message_start
data: {"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":5,"output_tokens":0}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}

event: brand_new_event
data: {"type":"brand_new_event","x":1}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{"}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":6,"output_tokens":7}}

event: message_stop
data: {"type":"message_stop"}
""")  # noqa: E501
    chunks = await collect(make_provider(AnthropicAdapter, lambda r: sse_response(body)),
                           LLMRequest(prompt="x"))  # fmt: skip
    assert chunks == [
        StreamChunk(finish_reason="length", usage=Usage(prompt_tokens=6, completion_tokens=7,
                                                        total_tokens=13), model="claude-x")
    ]  # fmt: skip


async def test_output_tokens_are_cumulative_not_summed(make_provider: MakeProvider) -> None:
    body = STREAM.replace(
        b'event: message_delta\n',
        b'event: message_delta\ndata: {"type":"message_delta","delta":{},'
        b'"usage":{"output_tokens":2}}\n\nevent: message_delta\n',
    )  # fmt: skip
    chunks = await collect(make_provider(AnthropicAdapter, lambda r: sse_response(body)),
                           LLMRequest(prompt="x"))  # fmt: skip
    assert chunks[-1] == FINAL


@pytest.mark.parametrize(
    ("error_type", "retryable"),
    [("overloaded_error", True), ("api_error", True), ("rate_limit_error", True),
     ("invalid_request_error", False), ("something_new", True)],
)  # fmt: skip
async def test_in_stream_error(
    make_provider: MakeProvider, error_type: str, retryable: bool
) -> None:
    cut = STREAM.index(b'"text":"lo"')
    cut = STREAM.rindex(b"event: ", 0, cut)  # the start of the second text delta event
    body = (
        STREAM[:cut]
        + b"event: error\ndata: "
        + msgspec.json.encode(_err(error_type, "Overloaded"))
        + b"\n\n"
        + STREAM[cut:]
    )
    got: list[StreamChunk] = []
    with pytest.raises(LLMError, match="error in stream: Overloaded") as info:
        await collect(make_provider(AnthropicAdapter, lambda r: sse_response(body)),
                      LLMRequest(prompt="x"), into=got)  # fmt: skip
    assert got == [StreamChunk(delta="Hel")]
    assert info.value.retryable is retryable
    assert info.value.message.endswith(f"({error_type})")


async def test_truncated_stream(make_provider: MakeProvider) -> None:
    cut = STREAM[: STREAM.index(b"event: message_stop")]
    got: list[StreamChunk] = []
    with pytest.raises(LLMError, match="truncated") as info:
        await collect(make_provider(AnthropicAdapter, lambda r: sse_response(cut)),
                      LLMRequest(prompt="x"), into=got)  # fmt: skip
    assert got == [StreamChunk(delta="Hel"), StreamChunk(delta="lo")]
    assert (info.value.kind, info.value.retryable) == ("protocol", True)


@pytest.mark.parametrize(
    "event",
    [b"data: {oops\n\n", b'data: {"no_type": 1}\n\n', b'data: {"type":"message_start"}\n\n',
     b'data: {"type":"content_block_delta","delta":"text"}\n\n'],
)  # fmt: skip
async def test_malformed_stream_events(make_provider: MakeProvider, event: bytes) -> None:
    body = STREAM.replace(b'event: ping\ndata: {"type":"ping"}\n\n', event)
    with pytest.raises(LLMError, match="malformed Anthropic answer") as info:
        await collect(make_provider(AnthropicAdapter, lambda r: sse_response(body)),
                      LLMRequest(prompt="x"))  # fmt: skip
    assert (info.value.kind, info.value.retryable) == ("protocol", True)


async def test_stream_529_overloaded(make_provider: MakeProvider) -> None:
    provider = make_provider(
        AnthropicAdapter,
        lambda r: json_response(_err("overloaded_error", "Overloaded"), 529,
                                {"retry-after-ms": "1500"}),
    )  # fmt: skip
    with pytest.raises(LLMError) as info:
        await collect(provider, LLMRequest(prompt="x"))
    err = info.value
    assert (err.status, err.retryable, err.retry_after) == (529, True, 1.5)
    assert err.message == "Overloaded (overloaded_error)"


async def test_health_check(make_provider: MakeProvider) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/v1/models")
        good = request.headers.get("x-api-key") == KEY and "anthropic-version" in request.headers
        return json_response({"data": []} if good else _err("authentication_error", "no"),
                             200 if good else 401)  # fmt: skip

    assert await make_provider(AnthropicAdapter, handler).check_health() is True
    with pytest.raises(LLMError) as refused:  # the reason, for lb.health_report()
        await make_provider(AnthropicAdapter, handler, api_key="bad").check_health()
    assert refused.value.status in (400, 401, 403)
