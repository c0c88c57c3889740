"""OpenAI and OpenAI-compatible adapters: request building, parsing, errors, streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest

from llmlb_actors._config import ProviderConfig
from llmlb_actors._errors import ConfigError, LLMError
from llmlb_actors._models import LLMRequest, Message, StreamChunk, Usage
from llmlb_actors.providers.openai import OpenAIAdapter, OpenAICompatibleAdapter
from tests.unit.providers.adapter_testing import (
    KEY,
    body_of,
    collect,
    json_response,
    raw_response,
    sse_body,
    sse_response,
)

if TYPE_CHECKING:
    from tests.unit.providers.adapter_testing import MakeProvider

EXAMPLE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1750000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}

STREAM = sse_body("""
data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1750000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1750000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1750000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1750000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1750000000,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}

data: [DONE]
""")  # noqa: E501

FINAL = StreamChunk(
    finish_reason="stop",
    usage=Usage(prompt_tokens=9, completion_tokens=2, total_tokens=11),
    model="gpt-4o-mini",
)


def adapter(cls: type[OpenAIAdapter] = OpenAIAdapter, **fields: Any) -> OpenAIAdapter:
    fields.setdefault("name", "openai")
    fields.setdefault("provider", cls.protocol)
    fields.setdefault("model", "gpt-4o-mini")
    fields.setdefault("api_key", KEY)
    return cls(ProviderConfig(**fields))


def decoded(body: bytes | None) -> Any:
    assert body is not None
    return body_of(httpx.Request("POST", "http://x", content=body))


# ---- building requests ---------------------------------------------------------------------------


def test_build_request_maps_every_field() -> None:
    req = LLMRequest(
        prompt="Hi", system="Be brief.", max_tokens=64, temperature=0.2, top_p=0.9, stop=("END",)
    )
    call = adapter().build_request(req, stream=False)
    assert call.method == "POST"
    assert call.url == "https://api.openai.com/v1/chat/completions"
    headers = dict(call.headers)
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["content-type"] == "application/json"
    assert decoded(call.body) == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
    }


def test_build_request_omits_unset_fields_and_keeps_messages() -> None:
    req = LLMRequest(
        messages=(
            Message(role="system", content="S"),
            Message(role="user", content="a"),
            Message(role="assistant", content="b"),
        )
    )
    assert decoded(adapter().build_request(req, stream=False).body) == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
        ],
    }


def test_stream_request_asks_for_usage() -> None:
    call = adapter().build_request(LLMRequest(prompt="Hi"), stream=True)
    body = decoded(call.body)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert dict(call.headers)["accept"] == "text/event-stream"


def test_compatible_sends_max_tokens_and_uses_base_url() -> None:
    a = adapter(
        OpenAICompatibleAdapter,
        base_url="http://127.0.0.1:11434/v1/",
        api_key=None,
        api_key_required=False,
    )
    call = a.build_request(LLMRequest(prompt="Hi", max_tokens=5), stream=True)
    assert call.url == "http://127.0.0.1:11434/v1/chat/completions"
    body = decoded(call.body)
    assert body["max_tokens"] == 5
    assert "max_completion_tokens" not in body
    assert body["stream_options"] == {"include_usage": True}
    assert "authorization" not in dict(call.headers)  # no key configured: no auth header
    assert a.health_request().url == "http://127.0.0.1:11434/v1/models"


def test_health_request() -> None:
    call = adapter().health_request()
    assert (call.method, call.url, call.body) == ("GET", "https://api.openai.com/v1/models", None)
    assert dict(call.headers)["authorization"] == f"Bearer {KEY}"


def test_user_headers_are_added_and_may_replace_ours() -> None:
    a = adapter(headers={"OpenAI-Project": "proj", "Accept": "application/x-custom"})
    headers = dict(a.build_request(LLMRequest(prompt="x"), stream=False).headers)
    assert headers["openai-project"] == "proj"
    assert headers["accept"] == "application/x-custom"


def test_key_never_shown_in_reprs() -> None:
    a = adapter()
    call = a.build_request(LLMRequest(prompt="x"), stream=False)
    for text in (repr(a), str(a), repr(call), repr(call.headers), repr(a.health_request())):
        assert KEY not in text
    assert "openai" in repr(a)


@pytest.mark.parametrize("bad", ["sk-1\r\nx-evil: 1", "sk\n", "sk\x00"])
def test_key_with_line_breaks_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ConfigError, match="api_key") as info:
        adapter(api_key=bad)
    assert bad not in str(info.value)


# ---- whole responses -----------------------------------------------------------------------------


async def test_parse_doc_example(make_provider: MakeProvider) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(EXAMPLE)

    provider = make_provider(OpenAIAdapter, handler)
    resp = await provider.make_request(LLMRequest(prompt="Hi"))
    assert resp.content == "Hello!"
    assert resp.model == "gpt-4o-mini"
    assert resp.finish_reason == "stop"
    assert resp.usage == Usage(prompt_tokens=9, completion_tokens=2, total_tokens=11)
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert str(seen[0].url) == "https://api.openai.com/v1/chat/completions"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("something_new", "other"),
        (None, None),
    ],
)
def test_finish_reasons_are_normalised(reason: str | None, expected: str | None) -> None:
    body = {"choices": [{"message": {"content": "x"}, "finish_reason": reason}]}
    resp = adapter().parse_response(200, {}, msgspec.json.encode(body))
    assert resp.finish_reason == expected


def test_null_content_and_missing_usage_and_total() -> None:
    a = adapter()
    resp = a.parse_response(
        200, {}, msgspec.json.encode({"choices": [{"message": {"content": None}}]})
    )
    assert (resp.content, resp.usage, resp.model) == ("", Usage(), "gpt-4o-mini")
    body = {
        "choices": [{"message": {"content": "x"}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3},
    }
    assert a.parse_response(200, {}, msgspec.json.encode(body)).usage.total_tokens == 7


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"choices": [', "malformed"),
        (b"<html>502 Bad Gateway</html>", "malformed"),
        (b'{"id": "x"}', "choices"),
        (b'{"choices": "nope"}', "choices"),
        (b'{"choices": [{"message": {"content": 5}}]}', "content"),
        (b'{"choices": []}', "no choices"),
        (b'{"choices": [{"message": {"content": "\xff\xfe"}}]}', "malformed"),
        (b"\xff\xfe\x00{", "malformed"),
        (b"", "malformed"),
    ],
)
async def test_malformed_bodies_are_protocol_errors(
    make_provider: MakeProvider, body: bytes, fragment: str
) -> None:
    provider = make_provider(OpenAIAdapter, lambda r: raw_response(body), name="oa")
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    err = info.value
    assert (err.kind, err.retryable, err.provider, err.status) == ("protocol", True, "oa", None)
    assert fragment in err.message
    assert "'oa'" in err.message  # names the provider


# ---- error statuses ------------------------------------------------------------------------------


def _err(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "retryable", "disables", "message"),
    [
        (400, _err("Bad thing", "invalid_request_error"), False, False, "Bad thing"),
        (401, _err("Incorrect API key", "invalid_request_error", "invalid_api_key"), False, True,
         "Incorrect API key (invalid_api_key)"),
        (403, _err("Country not supported", "invalid_request_error", "unsupported_country"),
         False, True, "Country not supported"),
        (404, _err("The model x does not exist", "invalid_request_error", "model_not_found"),
         False, True, "does not exist"),
        (409, _err("Conflict", "conflict"), True, False, "Conflict"),
        (422, _err("Unprocessable", "invalid_request_error"), False, False, "Unprocessable"),
        (429, _err("Rate limit reached", "requests", "rate_limit_exceeded"), True, False,
         "Rate limit reached (rate_limit_exceeded)"),
        (429, _err("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
         False, False, "exceeded your current quota"),
        (500, _err("The server had an error", "server_error"), True, False, "server had an error"),
        (503, _err("Slow down", "server_error", "slow_down"), True, False, "Slow down"),
    ],
)  # fmt: skip
async def test_error_statuses(
    make_provider: MakeProvider,
    status: int,
    body: dict[str, Any],
    retryable: bool,
    disables: bool,
    message: str,
) -> None:
    provider = make_provider(OpenAIAdapter, lambda r: json_response(body, status), name="oa")
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    err = info.value
    assert (err.status, err.retryable, err.disables_provider) == (status, retryable, disables)
    assert (err.kind, err.provider, err.retry_after) == ("http", "oa", None)
    assert message in err.message
    assert KEY not in str(err)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ],
)
async def test_retry_after_headers(
    make_provider: MakeProvider, headers: dict[str, str], expected: float
) -> None:
    body = _err("Rate limit reached", "requests", "rate_limit_exceeded")
    provider = make_provider(OpenAIAdapter, lambda r: json_response(body, 429, headers))
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    assert info.value.retry_after == expected
    assert info.value.retryable


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>Bad gateway</html>", "<html>Bad gateway</html>"),
        (b'{"error": "model not found"}', "model not found"),  # Ollama
        (b'{"object": "error", "message": "bad model", "type": "NotFoundError", "code": 404}',
         "bad model (NotFoundError)"),  # vLLM
        (b'{"detail": "Not Found"}', "Not Found"),  # FastAPI
        (b"\xff\xfe broken", "\ufffd\ufffd broken"),
        (b"x" * 5000, "x" * 299 + "…"),
    ],
)  # fmt: skip
def test_error_message_shapes(body: bytes, message: str) -> None:
    got, retryable = adapter().error_message(502, body)
    assert got == message
    assert retryable is None


# ---- streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 7, 64])
async def test_stream_doc_example(make_provider: MakeProvider, size: int) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse_response(STREAM, size=size)

    provider = make_provider(OpenAIAdapter, handler)
    chunks = await collect(provider, LLMRequest(prompt="Hi"))
    # The first chunk's empty content produces no chunk.
    assert chunks == [StreamChunk(delta="Hel"), StreamChunk(delta="lo"), FINAL]
    assert body_of(seen[0])["stream_options"] == {"include_usage": True}


async def test_stream_with_crlf_comments_and_running_usage(make_provider: MakeProvider) -> None:
    # OpenRouter-style comments; xAI-style usage on every chunk (keep the last).
    body = (
        b": OPENROUTER PROCESSING\r\n\r\n"
        b'data: {"model":"x","choices":[{"delta":{"content":"a"}}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\r\n\r\n'
        b": OPENROUTER PROCESSING\r\n\r\n"
        b'data: {"model":"x","choices":[{"delta":{"content":"b"},"finish_reason":"length"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":2}}\r\n\r\n'
        b'data: {"model":"x","choices":[],"usage":null}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    provider = make_provider(OpenAICompatibleAdapter, lambda r: sse_response(body, size=5),
                             base_url="http://127.0.0.1:1/v1")  # fmt: skip
    chunks = await collect(provider, LLMRequest(prompt="Hi"))
    assert chunks == [
        StreamChunk(delta="a"),
        StreamChunk(delta="b"),
        StreamChunk(finish_reason="length", usage=Usage(prompt_tokens=1, completion_tokens=2,
                                                        total_tokens=3), model="x"),
    ]  # fmt: skip


async def test_stream_without_usage(make_provider: MakeProvider) -> None:
    body = sse_body("""
data: {"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}

data: [DONE]
""")
    chunks = await collect(make_provider(OpenAIAdapter, lambda r: sse_response(body)),
                           LLMRequest(prompt="x"))  # fmt: skip
    assert chunks == [StreamChunk(delta="a"), StreamChunk(finish_reason="stop", model="m")]


@pytest.mark.parametrize(
    "cut",
    [
        STREAM[: STREAM.index(b"data: [DONE]")],  # finished, usage sent, but no [DONE]
        STREAM[: STREAM.index(b'"finish_reason":"stop"')],  # cut mid-event
    ],
)
async def test_truncated_stream(make_provider: MakeProvider, cut: bytes) -> None:
    provider = make_provider(OpenAIAdapter, lambda r: sse_response(cut))
    got: list[StreamChunk] = []
    with pytest.raises(LLMError, match="truncated") as info:
        await collect(provider, LLMRequest(prompt="x"), into=got)
    assert got == [StreamChunk(delta="Hel"), StreamChunk(delta="lo")]
    assert (info.value.kind, info.value.retryable) == ("protocol", True)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ({"message": "The server had an error", "type": "server_error", "code": None}, True),
        ({"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}, False),
        ("upstream died", True),
    ],
)
async def test_in_stream_error(
    make_provider: MakeProvider, error: dict[str, Any] | str, retryable: bool
) -> None:
    body = (
        b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
        b"data: " + msgspec.json.encode({"error": error}) + b"\n\n"
        b"data: [DONE]\n\n"
    )
    provider = make_provider(OpenAIAdapter, lambda r: sse_response(body))
    got: list[StreamChunk] = []
    with pytest.raises(LLMError, match="error in stream") as info:
        await collect(provider, LLMRequest(prompt="x"), into=got)
    assert got == [StreamChunk(delta="Hel")]
    assert info.value.retryable is retryable
    assert info.value.kind == "http"


@pytest.mark.parametrize(
    "event",
    [b"data: {not json}\n\n", b'data: {"choices": 3}\n\n', b'data: {"choices":[{"delta":5}]}\n\n',
     b'data: {"choices":[{"delta":{"content":7}}]}\n\n', b"data: [1, 2]\n\n"],
)  # fmt: skip
async def test_malformed_stream_events(make_provider: MakeProvider, event: bytes) -> None:
    body = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n' + event + b"data: [DONE]\n\n"
    provider = make_provider(OpenAIAdapter, lambda r: sse_response(body), name="oa")
    with pytest.raises(LLMError) as info:
        await collect(provider, LLMRequest(prompt="x"))
    err = info.value
    assert (err.kind, err.retryable, err.provider) == ("protocol", True, "oa")
    assert "malformed OpenAI answer" in err.message


async def test_non_utf8_stream_bytes_are_replaced_not_fatal(make_provider: MakeProvider) -> None:
    # The SSE layer decodes with replacement (as the spec says), so the JSON stays valid.
    body = b'data: {"choices":[{"delta":{"content":"a\xff"}}]}\n\ndata: [DONE]\n\n'
    chunks = await collect(make_provider(OpenAIAdapter, lambda r: sse_response(body)),
                           LLMRequest(prompt="x"))  # fmt: skip
    assert [c.delta for c in chunks] == ["a\ufffd", ""]


async def test_stream_error_status(make_provider: MakeProvider) -> None:
    body = _err("Rate limit reached", "requests", "rate_limit_exceeded")
    provider = make_provider(
        OpenAIAdapter, lambda r: json_response(body, 429, {"retry-after-ms": "1200"})
    )
    with pytest.raises(LLMError) as info:
        await collect(provider, LLMRequest(prompt="x"))
    err = info.value
    assert (err.status, err.retryable, err.retry_after) == (429, True, 1.2)
    assert "Rate limit reached" in err.message


async def test_oversized_sse_line_is_a_protocol_error(make_provider: MakeProvider) -> None:
    from llmlb_actors.providers import _http

    body = b"data: " + b"x" * (_http.MAX_SSE_LINE_BYTES + 1)
    provider = make_provider(OpenAIAdapter, lambda r: sse_response(body, size=65536))
    with pytest.raises(LLMError, match="malformed event stream") as info:
        await collect(provider, LLMRequest(prompt="x"))
    assert info.value.kind == "protocol"


async def test_health_check(make_provider: MakeProvider) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/v1/models")
        ok = request.headers.get("authorization") == f"Bearer {KEY}"
        return json_response({"data": []}, 200 if ok else 401)

    assert await make_provider(OpenAIAdapter, handler).check_health() is True
    with pytest.raises(LLMError) as refused:  # the reason, for lb.health_report()
        await make_provider(OpenAIAdapter, handler, api_key="wrong").check_health()
    assert refused.value.status in (400, 401, 403)
