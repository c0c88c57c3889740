"""Cohere Chat v2 (``POST {base}/v2/chat``), sans-I/O.

Shapes from https://docs.cohere.com/reference/chat: ``p`` for top_p,
``stop_sequences``, an explicit ``stream`` flag, two usage buckets (we report
``usage.tokens``, what the model processed, and fall back to ``billed_units``).
Streams are typed events; ``message-end`` is terminal and a trailing
``data: [DONE]`` is accepted too. Unlike the SDK, which skips events it cannot
parse, we raise a typed error: a garbled stream must not pass as a short one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from .._errors import LLMError
from .._models import FinishReason, LLMRequest, LLMResponse, Message, StreamChunk, Usage
from .._secrets import Secret
from .._transport._base import HTTPRequest
from ._adapter import ProtocolAdapter, StreamDecoder
from ._wire import (
    ENCODER,
    body_text,
    check_header_value,
    decode,
    feed_event,
    header_list,
    protocol_error,
    truncated_error,
    try_decode,
    usage,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._config import ProviderConfig
    from .._sse import SSEEvent

__all__ = ["CohereAdapter"]

_LABEL = "Cohere"


# ---- request body ---------------------------------------------------------------------------


class _Body(msgspec.Struct, omit_defaults=True):
    model: str
    messages: tuple[Message, ...]
    stream: bool  # no default: always sent, as the SDK does
    max_tokens: int | None = None
    temperature: float | None = None
    p: float | None = None
    stop_sequences: tuple[str, ...] | None = None


# ---- response views -------------------------------------------------------------------------


class _Block(msgspec.Struct):
    type: str = "text"
    text: str = ""


class _Counts(msgspec.Struct):
    input_tokens: float = 0  # Cohere has sent these as floats ("5.0") in the past
    output_tokens: float = 0


class _Usage(msgspec.Struct):
    billed_units: _Counts | None = None
    tokens: _Counts | None = None

    def to_usage(self) -> Usage:
        counts = self.tokens or self.billed_units
        if counts is None:
            return Usage()
        return usage(int(counts.input_tokens), int(counts.output_tokens))


class _Message(msgspec.Struct):
    content: list[_Block] | str = []


class _Chat(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None
    usage: _Usage | None = None


class _DeltaContent(msgspec.Struct):
    text: str = ""


class _DeltaMessage(msgspec.Struct):
    # An object in content-start/-delta, an (empty) list in message-start.
    content: _DeltaContent | list[Any] | None = None


class _Delta(msgspec.Struct):
    message: _DeltaMessage | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None
    error: str | None = None


class _Event(msgspec.Struct):
    type: str
    delta: _Delta | None = None


class _ErrorBody(msgspec.Struct):
    message: str = ""


_CHAT = msgspec.json.Decoder(_Chat)
_EVENT = msgspec.json.Decoder(_Event)
_ERROR_BODY = msgspec.json.Decoder(_ErrorBody)

_FINISH: dict[str, FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR": "error",
    "TIMEOUT": "error",
}


def _finish(reason: str | None) -> FinishReason | None:
    return None if reason is None else _FINISH.get(reason, "other")


class CohereAdapter(ProtocolAdapter):
    """Cohere (``protocol="cohere"``)."""

    protocol: ClassVar[str] = "cohere"
    default_base_url: ClassVar[str] = "https://api.cohere.com"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        auth: list[tuple[str, str]] = []
        if config.api_key:
            check_header_value(config, "api_key", config.api_key)
            auth.append(("authorization", Secret(f"Bearer {config.api_key}")))
        extra = self.extra_headers()
        json_type = ("content-type", "application/json")
        self._headers = header_list([json_type, ("accept", "application/json"), *auth], extra)
        self._stream_headers = header_list(
            [json_type, ("accept", "text/event-stream"), *auth], extra
        )
        self._health_headers = header_list([("accept", "application/json"), *auth], extra)
        self._url = f"{self.base_url}/v2/chat"
        self._health_url = f"{self.base_url}/v1/models"
        self._model = config.model or ""

    def build_request(self, request: LLMRequest, *, stream: bool) -> HTTPRequest:
        messages = request.as_messages()
        if request.system:
            messages = (Message(role="system", content=request.system), *messages)
        body = _Body(
            model=self._model,
            messages=messages,
            stream=stream,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            p=request.top_p,
            stop_sequences=request.stop_sequences,
        )
        headers = self._stream_headers if stream else self._headers
        return HTTPRequest("POST", self._url, headers, ENCODER.encode(body))

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMResponse:
        chat = decode(_CHAT, body, self.name, _LABEL)
        content = chat.message.content
        text = (
            content
            if isinstance(content, str)
            else "".join([b.text for b in content if b.type == "text"])
        )
        return LLMResponse(
            content=text,
            model=self._model,  # the response does not name the model
            usage=Usage() if chat.usage is None else chat.usage.to_usage(),
            finish_reason=_finish(chat.finish_reason),
        )

    def error_message(self, status: int, body: bytes) -> tuple[str, bool | None]:
        view = try_decode(_ERROR_BODY, body)
        if view is None or not view.message:
            return body_text(body), None
        return view.message, None

    def health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", self._health_url, self._health_headers)

    def stream_decoder(self) -> StreamDecoder:
        return _StreamDecoder(self.name, self._model)

    def __repr__(self) -> str:
        return f"<CohereAdapter {self.name!r} {self.base_url}>"


class _StreamDecoder(StreamDecoder):
    """Dispatches on the data's ``type`` (as the SDK does), not on the SSE event name."""

    def __init__(self, name: str, model: str) -> None:
        self._name = name
        self._model = model
        self._finish: str | None = None
        self._usage: _Usage | None = None

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        return feed_event(self, event)

    def feed_data(self, datas: list[bytes], out: list[StreamChunk]) -> None:
        name = self._name
        provider = self.provider
        for data in datas:
            if data.startswith(b"[DONE]"):
                out += self._end()
                return
            try:
                ev = _EVENT.decode(data)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                if not data.strip():
                    continue
                # Invalid UTF-8 reads as the replacement character; anything else raises.
                ev = decode(_EVENT, data.decode("utf-8", "replace"), name, _LABEL)
            kind = ev.type
            delta = ev.delta
            if kind == "content-delta":
                if delta is None or delta.message is None:
                    raise protocol_error(name, _LABEL, "content-delta without delta.message")
                content = delta.message.content
                if isinstance(content, _DeltaContent) and content.text:
                    out.append(StreamChunk(delta=content.text, provider=provider))
            elif kind == "message-end":
                if delta is not None:
                    if delta.error:
                        raise LLMError(
                            f"error in stream: {delta.error}",
                            provider=name,
                            retryable=True,
                            kind="http",
                        )
                    self._finish = delta.finish_reason
                    self._usage = delta.usage
                out += self._end()
                return
            # message-start, content-start/-end, tool and citation events, debug: nothing

    def _end(self) -> list[StreamChunk]:
        self.done = True
        return [
            StreamChunk(
                finish_reason=_finish(self._finish),
                usage=None if self._usage is None else self._usage.to_usage(),
                model=self._model,
                provider=self.provider,
            )
        ]

    def finish(self) -> list[StreamChunk]:
        if not self.done:
            raise truncated_error(self._name, _LABEL)
        return []
