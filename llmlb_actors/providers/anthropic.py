"""Anthropic Messages API (``POST {base}/v1/messages``), sans-I/O.

Shapes from https://docs.anthropic.com/en/api/messages. The API requires
``max_tokens`` and takes the system prompt at top level only, so system turns
in ``messages`` are lifted out. Streams are typed events ending with
``message_stop``; ``output_tokens`` in ``message_delta`` is cumulative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import msgspec

from .._errors import LLMError
from .._models import FinishReason, LLMRequest, LLMResponse, Message, StreamChunk, Usage
from .._secrets import Secret
from .._transport._base import HTTPRequest
from ._adapter import ProtocolAdapter, StreamDecoder
from ._status import classify_status
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

__all__ = ["AnthropicAdapter"]

DEFAULT_MAX_TOKENS = 1024
"""Sent when the request sets no ``max_tokens``: the API refuses a body without one."""

_LABEL = "Anthropic"


# ---- request body ---------------------------------------------------------------------------


class _Body(msgspec.Struct, omit_defaults=True):
    model: str
    max_tokens: int
    messages: tuple[Message, ...]
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: tuple[str, ...] | None = None
    stream: bool = False


# ---- response views -------------------------------------------------------------------------


class _Block(msgspec.Struct):
    type: str
    text: str = ""


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None


class _Message(msgspec.Struct):
    content: list[_Block]
    model: str = ""
    stop_reason: str | None = None
    usage: _Usage | None = None


class _StartMessage(msgspec.Struct):
    model: str = ""
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    """Both ``content_block_delta.delta`` and ``message_delta.delta``."""

    type: str = ""
    text: str = ""
    stop_reason: str | None = None


class _ErrorInfo(msgspec.Struct):
    type: str = ""
    message: str = ""


class _Event(msgspec.Struct):
    type: str
    message: _StartMessage | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _ErrorInfo | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorInfo


_MESSAGE = msgspec.json.Decoder(_Message)
_EVENT = msgspec.json.Decoder(_Event)
_ERROR_BODY = msgspec.json.Decoder(_ErrorBody)

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The status each error type travels with, so an in-stream error is classified by
# the same rules as an HTTP one.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _finish(reason: str | None) -> FinishReason | None:
    return None if reason is None else _FINISH.get(reason, "other")


def _describe(err: _ErrorInfo) -> str:
    if err.type and err.message:
        return f"{err.message} ({err.type})"
    return err.message or err.type


class AnthropicAdapter(ProtocolAdapter):
    """Anthropic Claude (``protocol="anthropic"``).

    ``anthropic-version`` is ``config.api_version`` or ``2023-06-01``.
    """

    protocol: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str] = "https://api.anthropic.com"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        version = config.api_version or "2023-06-01"
        check_header_value(config, "api_version", version)
        ours: list[tuple[str, str]] = [("anthropic-version", version)]
        if config.api_key:
            check_header_value(config, "api_key", config.api_key)
            ours.append(("x-api-key", Secret(config.api_key)))
        extra = self.extra_headers()
        json_type = ("content-type", "application/json")
        self._headers = header_list([json_type, ("accept", "application/json"), *ours], extra)
        self._stream_headers = header_list(
            [json_type, ("accept", "text/event-stream"), *ours], extra
        )
        self._health_headers = header_list([("accept", "application/json"), *ours], extra)
        self._url = f"{self.base_url}/v1/messages"
        self._health_url = f"{self.base_url}/v1/models"
        self._model = config.model or ""

    def build_request(self, request: LLMRequest, *, stream: bool) -> HTTPRequest:
        messages = request.as_messages()
        system = request.system or None
        if any(m.role == "system" for m in messages):
            # The API has no system role in `messages` (for most models): lift them out.
            lifted = [m.content for m in messages if m.role == "system"]
            system = "\n\n".join([system, *lifted] if system else lifted)
            messages = tuple(m for m in messages if m.role != "system")
        body = _Body(
            model=self._model,
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
            messages=messages,
            system=system,
            temperature=request.temperature,
            top_p=request.top_p,
            stop_sequences=request.stop_sequences,
            stream=stream,
        )
        headers = self._stream_headers if stream else self._headers
        return HTTPRequest("POST", self._url, headers, ENCODER.encode(body))

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMResponse:
        msg = decode(_MESSAGE, body, self.name, _LABEL)
        u = msg.usage
        return LLMResponse(
            content="".join([b.text for b in msg.content if b.type == "text"]),
            model=msg.model or self._model,
            usage=Usage() if u is None else usage(u.input_tokens or 0, u.output_tokens or 0),
            finish_reason=_finish(msg.stop_reason),
        )

    def error_message(self, status: int, body: bytes) -> tuple[str, bool | None]:
        view = try_decode(_ERROR_BODY, body)
        if view is None or not (view.error.message or view.error.type):
            return body_text(body), None
        return _describe(view.error), None

    def health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", self._health_url, self._health_headers)

    def stream_decoder(self) -> StreamDecoder:
        return _StreamDecoder(self.name, self._model)

    def __repr__(self) -> str:
        return f"<AnthropicAdapter {self.name!r} {self.base_url}>"


class _StreamDecoder(StreamDecoder):
    """Typed events; ``message_stop`` is terminal, ``ping`` and unknown types are ignored."""

    def __init__(self, name: str, model: str) -> None:
        self._name = name
        self._model = model
        self._input = 0
        self._output = 0
        self._stop: str | None = None

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        return feed_event(self, event)

    def feed_data(self, datas: list[bytes], out: list[StreamChunk]) -> None:
        name = self._name
        provider = self.provider
        for data in datas:
            try:
                ev = _EVENT.decode(data)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                if not data.strip():
                    continue
                # Invalid UTF-8 reads as the replacement character; anything else raises.
                ev = decode(_EVENT, data.decode("utf-8", "replace"), name, _LABEL)
            kind = ev.type
            if kind == "content_block_delta":
                delta = ev.delta
                if delta is not None and delta.type == "text_delta" and delta.text:
                    out.append(StreamChunk(delta=delta.text, provider=provider))
                # input_json_delta, thinking_delta, signature_delta: not text
            elif kind == "message_delta":
                if ev.delta is not None and ev.delta.stop_reason is not None:
                    self._stop = ev.delta.stop_reason
                self._take_usage(ev.usage)
            elif kind == "message_start":
                if ev.message is None:
                    raise protocol_error(name, _LABEL, "message_start without a message")
                self._model = ev.message.model or self._model
                self._take_usage(ev.message.usage)
            elif kind == "message_stop":
                self.done = True
                out.append(
                    StreamChunk(
                        finish_reason=_finish(self._stop),
                        usage=usage(self._input, self._output),
                        model=self._model,
                        provider=provider,
                    )
                )
                return
            elif kind == "error":
                raise self._error(ev.error)
            # ping, content_block_start/stop, and types added later: nothing to say

    def _take_usage(self, u: _Usage | None) -> None:
        if u is None:
            return
        if u.input_tokens is not None:
            self._input = u.input_tokens
        if u.output_tokens is not None:
            self._output = u.output_tokens  # cumulative: assign, never add

    def _error(self, err: _ErrorInfo | None) -> LLMError:
        if err is None:
            err = _ErrorInfo(type="error", message="error event in stream")
        status = _ERROR_STATUS.get(err.type)
        retryable = True if status is None else classify_status(status)[0]
        return LLMError(
            f"error in stream: {_describe(err)}",
            provider=self._name,
            retryable=retryable,
            kind="http",
        )

    def finish(self) -> list[StreamChunk]:
        if not self.done:
            raise truncated_error(self._name, _LABEL)
        return []
