"""Gemini adapter: camelCase bodies, RPC errors (bad key is a 400), close-terminated streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors._config import ProviderConfig
from llmlb_actors._errors import ConfigError, LLMError
from llmlb_actors._models import LLMRequest, Message, StreamChunk, Usage
from llmlb_actors.providers.gemini import GeminiAdapter, parse_duration
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

BASE = "https://generativelanguage.googleapis.com"

EXAMPLE = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Hello!"}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "r1",
}

STREAM = sse_body("""
data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,"totalTokenCount":4},"modelVersion":"gemini-2.5-flash","responseId":"r1"}

data: {"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5},"modelVersion":"gemini-2.5-flash","responseId":"r1"}
""").replace(b"\n", b"\r\n")  # noqa: E501  (Google sends CRLF)

FINAL = StreamChunk(
    finish_reason="stop",
    usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
    model="gemini-2.5-flash",
)


def adapter(**fields: Any) -> GeminiAdapter:
    fields.setdefault("name", "gemini")
    fields.setdefault("model", "gemini-2.5-flash")
    fields.setdefault("api_key", KEY)
    return GeminiAdapter(ProviderConfig(**fields))


def body(raw: bytes | None) -> Any:
    assert raw is not None
    return msgspec.json.decode(raw)


def rpc_error(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


KEY_INVALID = rpc_error(
    400,
    "INVALID_ARGUMENT",
    "API key not valid. Please pass a valid API key.",
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    },
    {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "API key not valid. Please pass a valid API key.",
    },
)


def quota_error(delay: str) -> dict[str, Any]:
    return rpc_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota.",
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "m", "quotaId": "GenerateRequestsPerDay"}],
        },
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"url": "https://x"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
    )


# ---- building requests ---------------------------------------------------------------------------


def test_build_request_doc_example() -> None:
    req = LLMRequest(
        prompt="Hi", system="Be brief.", max_tokens=64, temperature=0.2, top_p=0.9, stop=("END",)
    )
    call = adapter().build_request(req, stream=False)
    assert call.method == "POST"
    assert call.url == f"{BASE}/v1beta/models/gemini-2.5-flash:generateContent"
    headers = dict(call.headers)
    assert headers["x-goog-api-key"] == KEY
    assert "authorization" not in headers
    assert KEY not in call.url
    assert body(call.body) == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "generationConfig": {
            "maxOutputTokens": 64,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
    }


def test_stream_url_roles_and_system_messages() -> None:
    req = LLMRequest(
        messages=(
            Message(role="system", content="S"),
            Message(role="user", content="a"),
            Message(role="assistant", content="b"),
            Message(role="user", content="c"),
        )
    )
    call = adapter().build_request(req, stream=True)
    assert call.url == f"{BASE}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert dict(call.headers)["accept"] == "text/event-stream"
    assert body(call.body) == {
        "systemInstruction": {"parts": [{"text": "S"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"text": "b"}]},
            {"role": "user", "parts": [{"text": "c"}]},
        ],
    }


def test_api_version_base_url_and_model_quoting() -> None:
    a = adapter(api_version="v1", base_url="http://127.0.0.1:8/", model="models/my model/x?y")
    call = a.build_request(LLMRequest(prompt="x"), stream=False)
    assert call.url == "http://127.0.0.1:8/v1/models/my%20model%2Fx%3Fy:generateContent"
    health = a.health_request()
    assert (health.method, health.url) == ("GET", "http://127.0.0.1:8/v1/models/my%20model%2Fx%3Fy")
    assert dict(health.headers)["x-goog-api-key"] == KEY


def test_secrets() -> None:
    with pytest.raises(ConfigError, match="api_key"):
        adapter(api_key="k\r\n")
    a = adapter()
    assert KEY not in repr(a)
    assert KEY not in repr(a.build_request(LLMRequest(prompt="x"), stream=True))


# ---- whole responses -----------------------------------------------------------------------------


async def test_parse_doc_example(make_provider: MakeProvider) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(EXAMPLE)

    provider = make_provider(GeminiAdapter, handler, model="gemini-2.5-flash")
    resp = await provider.make_request(LLMRequest(prompt="Hi"))
    assert (resp.content, resp.model, resp.finish_reason) == ("Hello!", "gemini-2.5-flash", "stop")
    assert resp.usage == Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert seen[0].url.path == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_thought_parts_skipped_and_thinking_tokens_counted() -> None:
    resp_body = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {"text": "A"},
                        {"text": "B"},
                    ]
                },
                "finishReason": "MAX_TOKENS",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 3,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 10,
            "totalTokenCount": 15,
        },
    }
    resp = adapter().parse_response(200, {}, msgspec.json.encode(resp_body))
    assert (resp.content, resp.finish_reason) == ("AB", "length")
    assert resp.usage == Usage(
        prompt_tokens=3, completion_tokens=12, total_tokens=15, reasoning_tokens=10
    )
    assert resp.model == "gemini-2.5-flash"  # no modelVersion: the configured model


def test_max_tokens_candidate_without_parts_and_no_total() -> None:
    resp_body = {
        "candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4},
    }
    resp = adapter().parse_response(200, {}, msgspec.json.encode(resp_body))
    assert (resp.content, resp.finish_reason) == ("", "length")
    assert resp.usage.total_tokens == 7


def test_blocked_prompt_is_content_filter() -> None:
    resp_body = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
    }
    resp = adapter().parse_response(200, {}, msgspec.json.encode(resp_body))
    assert (resp.content, resp.finish_reason) == ("", "content_filter")
    assert resp.usage == Usage(prompt_tokens=8, completion_tokens=0, total_tokens=8)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
     ("RECITATION", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"),
     ("BLOCKLIST", "content_filter"), ("SPII", "content_filter"), ("LANGUAGE", "other"),
     ("OTHER", "other"), ("MALFORMED_FUNCTION_CALL", "error"), (None, None)],
)  # fmt: skip
def test_finish_reasons(reason: str | None, expected: str | None) -> None:
    cand: dict[str, Any] = {"content": {"parts": [{"text": "x"}]}}
    if reason is not None:
        cand["finishReason"] = reason
    resp = adapter().parse_response(200, {}, msgspec.json.encode({"candidates": [cand]}))
    assert resp.finish_reason == expected


@pytest.mark.parametrize(
    "raw",
    [b"[", b"{}", b'{"candidates": []}', b'{"candidates": {"x": 1}}',
     b'{"candidates": [{"content": {"parts": [{"text": 1}]}}]}', b"\xfe\xff"],
)  # fmt: skip
async def test_malformed_bodies(make_provider: MakeProvider, raw: bytes) -> None:
    provider = make_provider(GeminiAdapter, lambda r: raw_response(raw), name="gem")
    with pytest.raises(LLMError, match="malformed Gemini answer from provider 'gem'") as info:
        await provider.make_request(LLMRequest(prompt="x"))
    assert (info.value.kind, info.value.retryable) == ("protocol", True)


# ---- error statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "retryable", "disables", "message"),
    [
        (400, rpc_error(400, "INVALID_ARGUMENT", "Invalid JSON payload"), False, False,
         "Invalid JSON payload (INVALID_ARGUMENT)"),
        (400, KEY_INVALID, False, True,
         "API key not valid. Please pass a valid API key. (INVALID_ARGUMENT: API_KEY_INVALID)"),
        (400, rpc_error(400, "FAILED_PRECONDITION", "User location is not supported"), False,
         False, "User location is not supported (FAILED_PRECONDITION)"),
        (403, rpc_error(403, "PERMISSION_DENIED", "Permission denied"), False, True,
         "Permission denied"),
        (404, rpc_error(404, "NOT_FOUND", "models/x is not found for API version v1beta"), False,
         True, "models/x is not found"),
        (429, quota_error("27s"), True, False, "exceeded your current quota"),
        (500, rpc_error(500, "INTERNAL", "An internal error has occurred"), True, False,
         "internal error"),
        (503, rpc_error(503, "UNAVAILABLE", "The model is overloaded"), True, False,
         "The model is overloaded (UNAVAILABLE)"),
        (504, rpc_error(504, "DEADLINE_EXCEEDED", "Deadline expired"), True, False,
         "Deadline expired"),
    ],
)  # fmt: skip
async def test_error_statuses(
    make_provider: MakeProvider,
    status: int,
    error: dict[str, Any],
    retryable: bool,
    disables: bool,
    message: str,
) -> None:
    provider = make_provider(GeminiAdapter, lambda r: json_response(error, status))
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    err = info.value
    assert (err.status, err.retryable, err.disables_provider) == (status, retryable, disables)
    assert message in err.message
    assert err.retry_after == (27.0 if status == 429 else None)
    assert KEY not in str(err)


@pytest.mark.parametrize(
    ("delay", "headers", "retry_after", "retryable"),
    [
        ("3.700s", {}, 3.7, True),
        ("0s", {}, 0.0, True),
        ("27s", {"retry-after": "5"}, 5.0, True),  # a header, when present, wins
        ("bogus", {}, None, True),
        ("3600s", {}, 3600.0, True),
        # A daily quota: not this request's fault, so it fails over (still retryable).
        ("86400s", {}, 86400.0, True),
    ],
)
async def test_retry_info(
    make_provider: MakeProvider,
    delay: str,
    headers: dict[str, str],
    retry_after: float | None,
    retryable: bool,
) -> None:
    provider = make_provider(
        GeminiAdapter, lambda r: json_response(quota_error(delay), 429, headers)
    )
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    assert (info.value.retry_after, info.value.retryable) == (retry_after, retryable)
    assert info.value.status == 429


def test_error_bodies_in_other_shapes() -> None:
    a = adapter()
    array = msgspec.json.encode([rpc_error(503, "UNAVAILABLE", "busy")])
    assert a.error_message(503, array) == ("busy (UNAVAILABLE)", None)
    assert a.error_message(502, b"<html>Bad Gateway</html>") == ("<html>Bad Gateway</html>", None)
    assert a.error_message(400, msgspec.json.encode(KEY_INVALID))[1] is False
    err = a.parse_error(502, {"retry-after": "2"}, b"oops")
    assert (err.message, err.retryable, err.retry_after) == ("oops", True, 2.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("27s", 27.0), ("3.700s", 3.7), ("0.5s", 0.5), ("27", None), ("s", None), ("-1s", None),
     ("infs", None), ("nans", None), ("", None)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


# ---- streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 9, 120])
async def test_stream_doc_example(make_provider: MakeProvider, size: int) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse_response(STREAM, size=size)

    chunks = await collect(make_provider(GeminiAdapter, handler), LLMRequest(prompt="Hi"))
    assert chunks == [StreamChunk(delta="Hel"), StreamChunk(delta="lo"), FINAL]
    assert seen[0].url.params["alt"] == "sse"
    assert seen[0].url.path.endswith(":streamGenerateContent")


async def test_stream_without_finish_reason_is_truncated(make_provider: MakeProvider) -> None:
    cut = STREAM[: STREAM.index(b"data:", 10)]  # the first chunk only
    got: list[StreamChunk] = []
    with pytest.raises(LLMError, match="truncated") as info:
        await collect(make_provider(GeminiAdapter, lambda r: sse_response(cut)),
                      LLMRequest(prompt="x"), into=got)  # fmt: skip
    assert got == [StreamChunk(delta="Hel")]
    assert (info.value.kind, info.value.retryable) == ("protocol", True)


async def test_stream_cut_inside_the_last_event_is_truncated(make_provider: MakeProvider) -> None:
    cut = STREAM[:-2]  # the final blank line never arrives: the last event is incomplete
    with pytest.raises(LLMError, match="truncated"):
        await collect(make_provider(GeminiAdapter, lambda r: sse_response(cut)),
                      LLMRequest(prompt="x"))  # fmt: skip


async def test_stream_usage_only_at_end_and_thoughts_skipped(make_provider: MakeProvider) -> None:
    stream = sse_body("""
data: {"candidates":[{"content":{"parts":[{"text":"plan","thought":true}]}}]}

data: {"candidates":[{"content":{"parts":[{"text":""}]}}]}

data: {"candidates":[{"content":{"parts":[{"text":"ok"}]},"finishReason":"STOP"}]}

data: {"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1,"thoughtsTokenCount":2}}
""")
    chunks = await collect(make_provider(GeminiAdapter, lambda r: sse_response(stream)),
                           LLMRequest(prompt="x"))  # fmt: skip
    assert chunks == [
        StreamChunk(delta="ok"),
        StreamChunk(finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=3,
                                                      total_tokens=4, reasoning_tokens=2),
                    model="m"),
    ]  # fmt: skip


async def test_stream_blocked_prompt(make_provider: MakeProvider) -> None:
    stream = sse_body('data: {"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}')
    chunks = await collect(make_provider(GeminiAdapter, lambda r: sse_response(stream)),
                           LLMRequest(prompt="x"))  # fmt: skip
    assert chunks == [StreamChunk(finish_reason="content_filter", model="m")]


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [(500, "INTERNAL", True), (503, "UNAVAILABLE", True), (400, "INVALID_ARGUMENT", False)],
)
async def test_in_stream_error(
    make_provider: MakeProvider, code: int, status: str, retryable: bool
) -> None:
    first = STREAM[: STREAM.index(b"data:", 10)]
    stream = first + b"data: " + msgspec.json.encode(rpc_error(code, status, "boom")) + b"\r\n\r\n"
    got: list[StreamChunk] = []
    with pytest.raises(LLMError, match=f"error in stream: boom \\({status}\\)") as info:
        await collect(make_provider(GeminiAdapter, lambda r: sse_response(stream)),
                      LLMRequest(prompt="x"), into=got)  # fmt: skip
    assert got == [StreamChunk(delta="Hel")]
    assert info.value.retryable is retryable


@pytest.mark.parametrize(
    "event",
    [b"data: {\"candidates\": [\r\n\r\n", b"data: [1]\r\n\r\n",
     b'data: {"candidates":[{"content":{"parts":"x"}}]}\r\n\r\n'],
)  # fmt: skip
async def test_malformed_stream_events(make_provider: MakeProvider, event: bytes) -> None:
    with pytest.raises(LLMError, match="malformed Gemini answer") as info:
        await collect(make_provider(GeminiAdapter, lambda r: sse_response(event + STREAM)),
                      LLMRequest(prompt="x"))  # fmt: skip
    assert (info.value.kind, info.value.retryable) == ("protocol", True)


async def test_stream_error_status_with_bad_key(make_provider: MakeProvider) -> None:
    provider = make_provider(GeminiAdapter, lambda r: json_response(KEY_INVALID, 400))
    with pytest.raises(LLMError) as info:
        await collect(provider, LLMRequest(prompt="x"))
    err = info.value
    assert (err.status, err.retryable, err.disables_provider) == (400, False, True)


async def test_health_check(make_provider: MakeProvider) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/v1beta/models/m")
        if request.headers.get("x-goog-api-key") == KEY:
            return json_response({"name": "models/m"})
        return json_response(KEY_INVALID, 400)

    assert await make_provider(GeminiAdapter, handler).check_health() is True
    with pytest.raises(LLMError) as refused:  # the reason, for lb.health_report()
        await make_provider(GeminiAdapter, handler, api_key="bad").check_health()
    assert refused.value.status in (400, 401, 403)
