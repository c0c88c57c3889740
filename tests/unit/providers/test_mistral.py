"""Mistral adapter: OpenAI shapes with Mistral's differences."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmlb_actors._config import ProviderConfig
from llmlb_actors._errors import LLMError
from llmlb_actors._models import LLMRequest, StreamChunk, Usage
from llmlb_actors.providers.mistral import MistralAdapter
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
    import httpx

    from tests.unit.providers.adapter_testing import MakeProvider

STREAM = sse_body("""
data: {"id":"a1","object":"chat.completion.chunk","created":1732548656,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

data: {"id":"a1","object":"chat.completion.chunk","created":1732548656,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}

data: {"id":"a1","object":"chat.completion.chunk","created":1732548656,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"total_tokens":9,"completion_tokens":2}}

data: [DONE]
""")  # noqa: E501


def adapter(**fields: Any) -> MistralAdapter:
    fields.setdefault("name", "mistral")
    fields.setdefault("model", "mistral-small-latest")
    fields.setdefault("api_key", KEY)
    return MistralAdapter(ProviderConfig(**fields))


def test_build_request() -> None:
    req = LLMRequest(prompt="Hi", system="S", max_tokens=10, temperature=0.5, stop=("a", "b"))
    call = adapter().build_request(req, stream=True)
    assert (call.method, call.url) == ("POST", "https://api.mistral.ai/v1/chat/completions")
    assert dict(call.headers)["authorization"] == f"Bearer {KEY}"
    assert call.body is not None
    assert msgspec.json.decode(call.body) == {
        "model": "mistral-small-latest",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
        "max_tokens": 10,
        "temperature": 0.5,
        "stop": ["a", "b"],
        "stream": True,  # and no stream_options, no max_completion_tokens
    }
    health = adapter().health_request()
    assert (health.method, health.url) == ("GET", "https://api.mistral.ai/v1/models")


async def test_parse_response_with_chunked_content_and_model_length(
    make_provider: MakeProvider,
) -> None:
    body = {
        "id": "x",
        "model": "magistral-medium",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                        {"type": "text", "text": "Hel"},
                        {"type": "text", "text": "lo"},
                    ],
                },
                "finish_reason": "model_length",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    provider = make_provider(MistralAdapter, lambda r: json_response(body))
    resp = await provider.make_request(LLMRequest(prompt="x"))
    assert resp.content == "Hello"  # thinking chunks are not part of the answer
    assert resp.finish_reason == "length"
    assert resp.model == "magistral-medium"
    assert resp.usage == Usage(prompt_tokens=7, completion_tokens=2, total_tokens=9)


@pytest.mark.parametrize(("reason", "expected"), [("stop", "stop"), ("length", "length"),
                         ("error", "error"), ("tool_calls", "tool_calls")])  # fmt: skip
def test_finish_reasons(reason: str, expected: str) -> None:
    body = msgspec.json.encode({"choices": [{"message": {"content": ""}, "finish_reason": reason}]})
    assert adapter().parse_response(200, {}, body).finish_reason == expected


@pytest.mark.parametrize(
    ("status", "body", "retryable", "disables", "message"),
    [
        # An unknown model: a refusal, like the other protocols' 404 (leaves rotation).
        (400, b'{"object":"error","message":"Invalid model","type":"invalid_model","code":"1500"}',
         False, True, "Invalid model (1500)"),
        (400, b'{"object":"error","message":"bad temperature","type":"invalid_request_error"}',
         False, False, "bad temperature"),
        (401, b'{"detail":"Unauthorized"}', False, True, "Unauthorized"),
        (401, b'{"message":"Unauthorized","request_id":"r1"}', False, True, "Unauthorized"),
        (422, b'{"detail":[{"loc":["body","messages"],"msg":"Field required","type":"missing"},'
              b'{"loc":["body","temperature"],"msg":"too big","type":"less_than_equal"}]}',
         False, False, "body.messages: Field required; body.temperature: too big"),
        (429, b'{"message":"Requests rate limit exceeded"}', True, False, "rate limit exceeded"),
        (500, b"Internal Server Error", True, False, "Internal Server Error"),
        (503, b'{"object":"error","message":"Service unavailable","type":"internal_error"}',
         True, False, "Service unavailable (internal_error)"),
    ],
)  # fmt: skip
async def test_error_statuses(
    make_provider: MakeProvider,
    status: int,
    body: bytes,
    retryable: bool,
    disables: bool,
    message: str,
) -> None:
    headers = {"retry-after": "3"} if status == 429 else None
    provider = make_provider(MistralAdapter, lambda r: raw_response(body, status, headers))
    with pytest.raises(LLMError) as info:
        await provider.make_request(LLMRequest(prompt="x"))
    err = info.value
    assert (err.status, err.retryable, err.disables_provider) == (status, retryable, disables)
    assert message in err.message
    assert err.retry_after == (3.0 if status == 429 else None)


@pytest.mark.parametrize("size", [0, 3, 50])
async def test_stream_doc_example(make_provider: MakeProvider, size: int) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse_response(STREAM, size=size)

    chunks = await collect(make_provider(MistralAdapter, handler), LLMRequest(prompt="Hi"))
    assert chunks == [
        StreamChunk(delta="Hel"),
        StreamChunk(delta="lo"),
        StreamChunk(
            finish_reason="stop",
            usage=Usage(prompt_tokens=7, completion_tokens=2, total_tokens=9),
            model="mistral-small-latest",
        ),
    ]
    assert "stream_options" not in body_of(seen[0])


async def test_stream_delta_as_chunk_list(make_provider: MakeProvider) -> None:
    body = sse_body("""
data: {"model":"magistral","choices":[{"delta":{"content":[{"type":"thinking","thinking":[]}]}}]}

data: {"model":"magistral","choices":[{"delta":{"content":[{"type":"text","text":"ok"}]},"finish_reason":"stop"}]}

data: [DONE]
""")  # noqa: E501
    chunks = await collect(make_provider(MistralAdapter, lambda r: sse_response(body)),
                           LLMRequest(prompt="x"))  # fmt: skip
    assert chunks == [StreamChunk(delta="ok"), StreamChunk(finish_reason="stop", model="magistral")]


async def test_truncated_stream(make_provider: MakeProvider) -> None:
    cut = STREAM[: STREAM.index(b"data: [DONE]")]
    with pytest.raises(LLMError, match="truncated") as info:
        await collect(make_provider(MistralAdapter, lambda r: sse_response(cut)),
                      LLMRequest(prompt="x"))  # fmt: skip
    assert (info.value.kind, info.value.retryable) == ("protocol", True)
    assert "Mistral" in info.value.message


async def test_in_stream_error_object(make_provider: MakeProvider) -> None:
    body = (
        b'data: {"id":"a","object":"chat.completion.chunk","model":"m","choices":'
        b'[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
        b'data: {"object":"error","message":"Service unavailable","type":"internal_server_error",'
        b'"param":null,"code":"500"}\n\n'
    )
    with pytest.raises(LLMError, match="Service unavailable") as info:
        await collect(make_provider(MistralAdapter, lambda r: sse_response(body)),
                      LLMRequest(prompt="x"))  # fmt: skip
    assert info.value.retryable


async def test_malformed_body(make_provider: MakeProvider) -> None:
    provider = make_provider(MistralAdapter, lambda r: raw_response(b'{"choices": [{}]}'))
    with pytest.raises(LLMError, match="malformed Mistral answer") as info:
        await provider.make_request(LLMRequest(prompt="x"))
    assert (info.value.kind, info.value.retryable) == ("protocol", True)
