"""Cohere Chat v2 adapter: request building, two usage buckets, typed-event streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors._config import ProviderConfig
from llmlb_actors._errors import LLMError
from llmlb_actors._models import LLMRequest, Message, StreamChunk, Usage
from llmlb_actors.providers.cohere import CohereAdapter
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
    "id": "c0ffee",
    "finish_reason": "COMPLETE",
    "message": {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
    "usage": {
        "billed_units": {"input_tokens": 5, "output_tokens": 2},
        "tokens": {"input_tokens": 70, "output_tokens": 2},
    },
}

STREAM = sse_body("""
event: message-start
data: {"id":"c0ffee","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}

event: content-start
data: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}

event: content-delta
data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hel"}}}}

event: content-delta
data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"lo"}}}}

event: content-end
data: {"type":"content-end","index":0}

event: message-end
data: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":5,"output_tokens":2},"tokens":{"input_tokens":70,"output_tokens":2}}}}

data: [DONE]
""")  # noqa: E501

FINAL = StreamChunk(
    finish_reason="stop",
    usage=Usage(prompt_tokens=70, completion_tokens=2, total_tokens=72),
    model="command-r",
)


def adapter(**fields: Any) -> CohereAdapter:
    fields.setdefault("name", "cohere")
    fields.setdefault("model", "command-r")
    fields.setdefault("api_key", KEY)
    return CohereAdapter(ProviderConfig(**fields))


def body(raw: bytes | None) -> Any:
    assert raw is not None
    return msgspec.json.decode(raw)


# ---- building requests ---------------------------------------------------------------------------


def test_build_request_maps_every_field() -> None:
    req = LLMRequest(
        prompt="Hi", system="Be brief.", max_tokens=64, temperature=0.2, top_p=0.9, stop=("END",)
    )
    call = adapter().build_request(req, stream=False)
    assert (call.method, call.url) == ("POST", "https://api.cohere.com/v2/chat")
    assert dict(call.headers)["authorization"] == f"Bearer {KEY}"
    assert body(call.body) == {
        "model": "command-r",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "stream": False,  # sent explicitly, as the SDK does
        "max_tokens": 64,
        "temperature": 0.2,
        "p": 0.9,
        "stop_sequences": ["END"],
    }


def test_stream_request_and_messages() -> None:
    req = LLMRequest(
        messages=(Message(role="user", content="a"), Message(role="assistant", content="b"))
    )
    call = adapter(base_url="http://127.0.0.1:7").build_request(req, stream=True)
    assert call.url == "http://127.0.0.1:7/v2/chat"
    assert dict(call.headers)["accept"] == "text/event-stream"
    assert body(call.body) == {
        "model": "command-r",
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        "stream": True,
    }


def test_health_request_and_secrets() -> None:
    a = adapter()
    call = a.health_request()
    assert (call.method, call.url, call.body) == ("GET", "https://api.cohere.com/v1/models", None)
    assert dict(call.headers)["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(a)
    assert KEY not in repr(call)


# ---- whole responses -----------------------------------------------------------------------------


async def test_parse_doc_example(make_provider: MakeProvider) -> None:
    provider = make_provider(CohereAdapter, lambda r: json_response(EXAMPLE), model="command-r")
    resp = await provider.make_request(LLMRequest(prompt="Hi"))
    assert (resp.content, resp.model, resp.finish_reason) == ("Hello!", "command-r", "stop")
    # usage.tokens (what the model processed) is preferred over billed_units.
    assert resp.usage == Usage(prompt_tokens=70, completion_tokens=2, total_tokens=72)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"billed_units": {"input_tokens": 5, "output_tokens": 2}}, Usage(prompt_tokens=5,
         completion_tokens=2, total_tokens=7)),
        ({"billed_units": {"input_tokens": 5.0, "output_tokens": 2.0}, "cached_tokens": 1},
         Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7, cached_tokens=1)),
        ({}, Usage()),
        (None, Usage()),
    ],
)  # fmt: skip
def test_usage_buckets(usage: dict[str, Any] | None, expected: Usage) -> None:
    resp = adapter().parse_response(200, {}, msgspec.json.encode(dict(EXAMPLE, usage=usage)))
    assert resp.usage == expected


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"),
     ("TOOL_CALL", "tool_calls"), ("ERROR", "error"), ("TIMEOUT", "error"), ("NEW", "other")],
)  # fmt: skip
def test_finish_reasons(reason: str, expected: str) -> None:
    resp = adapter().parse_response(
        200, {}, msgspec.json.encode(dict(EXAMPLE, finish_reason=reason))
    )
    assert resp.finish_reason == expected


def test_text_blocks_only() -> None:
    msg = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "a"},
            {"type": "text", "text": "b"},
        ],
    }
    resp = adapter().parse_response(200, {}, msgspec.json.encode(dict(EXAMPLE, message=msg)))
    assert resp.content == "ab"


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"id": "x"}', b'{"message": []}', b'{"message": {"content": [{"text": 5}]}}',
     b'{"message": {"content": []}, "usage": {"tokens": {"input_tokens": "x"}}}',
     b"\xc3\x28"],
)  # fmt: skip
async def test_malformed_bodies(make_provider: MakeProvider, raw: bytes) -> None:
    provider = make_provider(CohereAdapter, lambda r: raw_response(raw), name="co")
    with pytest.raises(LLMError, match="malformed Cohere answer from provider 'co'") as info:
        await provider.make_request(LLMRequest(prompt="x"))
    assert (info.value.kind, info.value.retryable) == ("protocol", True)


# ---- error statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable", "disables"),
    [
        (400, False, False),
        (401, False, True),
        (402, False, False),
        (403, False, True),
        (404, False, True),
        (422, False, False),
        (429, True, False),
        (498, False, False),
        (499, False, False),
        (500, True, False),
        (501, True, False),
        (503, True, False),
        (504, True, False),
    ],
)
async def test_error_statuses(
    make_provider: MakeProvider, status: int, retryable: bool, disables: bool
) -> None:
    provider = make_provider(
        CohereAdapter, lambda r: json_response({"id": "e1", "message": "invalid api token"}, status)
    )
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    err = info.value
    assert (err.status, err.retryable, err.disables_provider) == (status, retryable, disables)
    assert (err.message, err.retry_after, err.kind) == ("invalid api token", None, "http")


async def test_retry_after(make_provider: MakeProvider) -> None:
    provider = make_provider(
        CohereAdapter,
        lambda r: json_response({"message": "trial limit"}, 429, {"retry-after": "60"}),
    )
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    assert (info.value.retry_after, info.value.retryable) == (60.0, True)


def test_unexpected_error_bodies_fall_back_to_text() -> None:
    assert adapter().error_message(502, b"upstream connect error") == (
        "upstream connect error",
        None,
    )
    assert adapter().error_message(500, b'{"message": ""}') == ('{"message": ""}', None)


# ---- streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 17, 200])
async def test_stream_doc_example(make_provider: MakeProvider, size: int) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse_response(STREAM, size=size)

    chunks = await collect(make_provider(CohereAdapter, handler, model="command-r"),
                           LLMRequest(prompt="Hi"))  # fmt: skip
    assert chunks == [StreamChunk(delta="Hel"), StreamChunk(delta="lo"), FINAL]


async def test_stream_without_done_marker(make_provider: MakeProvider) -> None:
    stream = STREAM[: STREAM.index(b"data: [DONE]")]
    chunks = await collect(make_provider(CohereAdapter, lambda r: sse_response(stream),
                                         model="command-r"), LLMRequest(prompt="x"))  # fmt: skip
    assert chunks[-1] == FINAL


async def test_stream_done_without_message_end(make_provider: MakeProvider) -> None:
    stream = STREAM[: STREAM.index(b"event: message-end")] + b"data: [DONE]\n\n"
    chunks = await collect(make_provider(CohereAdapter, lambda r: sse_response(stream)),
                           LLMRequest(prompt="x"))  # fmt: skip
    assert chunks == [StreamChunk(delta="Hel"), StreamChunk(delta="lo"), StreamChunk(model="m")]


async def test_truncated_stream(make_provider: MakeProvider) -> None:
    stream = STREAM[: STREAM.index(b"event: content-end")]
    got: list[StreamChunk] = []
    with pytest.raises(LLMError, match="truncated") as info:
        await collect(make_provider(CohereAdapter, lambda r: sse_response(stream)),
                      LLMRequest(prompt="x"), into=got)  # fmt: skip
    assert got == [StreamChunk(delta="Hel"), StreamChunk(delta="lo")]
    assert (info.value.kind, info.value.retryable) == ("protocol", True)


async def test_stream_ignores_tool_and_citation_events(make_provider: MakeProvider) -> None:
    extra = sse_body("""
event: tool-plan-delta
data: {"type":"tool-plan-delta","delta":{"message":{"tool_plan":"I will"}}}

event: citation-start
data: {"type":"citation-start","index":0,"delta":{"message":{"citations":{"start":0,"end":1}}}}

event: debug
data: {"type":"debug","prompt":"..."}

event: content-delta
data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":""}}}}
""")
    stream = STREAM.replace(b"event: content-end", extra + b"event: content-end")
    chunks = await collect(make_provider(CohereAdapter, lambda r: sse_response(stream),
                                         model="command-r"), LLMRequest(prompt="x"))  # fmt: skip
    assert chunks == [StreamChunk(delta="Hel"), StreamChunk(delta="lo"), FINAL]


async def test_in_stream_error(make_provider: MakeProvider) -> None:
    stream = STREAM.replace(
        b'"delta":{"finish_reason":"COMPLETE"',
        b'"delta":{"finish_reason":"ERROR","error":"internal failure"',
    )
    got: list[StreamChunk] = []
    with pytest.raises(LLMError, match="error in stream: internal failure") as info:
        await collect(make_provider(CohereAdapter, lambda r: sse_response(stream)),
                      LLMRequest(prompt="x"), into=got)  # fmt: skip
    assert got == [StreamChunk(delta="Hel"), StreamChunk(delta="lo")]
    assert info.value.retryable


@pytest.mark.parametrize(
    "event",
    [b"data: {not json}\n\n", b'data: {"delta": {}}\n\n', b'data: {"type": "content-delta"}\n\n',
     b'data: {"type":"content-delta","delta":{"message":{"content":{"text":7}}}}\n\n',
     b'event: content-delta\ndata: "just a string"\n\n'],
)  # fmt: skip
async def test_unparseable_events_raise(make_provider: MakeProvider, event: bytes) -> None:
    stream = STREAM.replace(b"event: content-end", event + b"event: content-end")
    got: list[StreamChunk] = []
    with pytest.raises(LLMError, match="malformed Cohere answer") as info:
        await collect(make_provider(CohereAdapter, lambda r: sse_response(stream)),
                      LLMRequest(prompt="x"), into=got)  # fmt: skip
    assert (info.value.kind, info.value.retryable) == ("protocol", True)
    assert got == [StreamChunk(delta="Hel"), StreamChunk(delta="lo")]


async def test_health_check(make_provider: MakeProvider) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/v1/models")
        ok = request.headers.get("authorization") == f"Bearer {KEY}"
        return json_response({"models": []} if ok else {"message": "invalid api token"},
                             200 if ok else 401)  # fmt: skip

    assert await make_provider(CohereAdapter, handler).check_health() is True
    with pytest.raises(LLMError) as refused:  # the reason, for lb.health_report()
        await make_provider(CohereAdapter, handler, api_key="nope").check_health()
    assert refused.value.status in (400, 401, 403)
