"""OpenAI Chat Completions, and the many servers that copy it ("openai-compatible").

Sans-I/O: builds ``POST {base}/chat/completions`` and parses its JSON and SSE
answers (https://platform.openai.com/docs/api-reference/chat). Mistral reuses
this adapter with a few switches (`llmlb_actors.providers.mistral`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

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

__all__ = ["OpenAIAdapter", "OpenAICompatibleAdapter"]


# ---- request body ---------------------------------------------------------------------------


class _StreamOptions(msgspec.Struct):
    include_usage: bool


class _Body(msgspec.Struct, omit_defaults=True):
    model: str
    messages: tuple[Message, ...]
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None


_INCLUDE_USAGE = _StreamOptions(include_usage=True)


# ---- response views (only the fields we read) -----------------------------------------------


class _Part(msgspec.Struct):
    """A content chunk; Mistral's thinking models send lists of these."""

    type: str = "text"
    text: str = ""


_Content = str | list[_Part] | None


def _text(content: _Content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join([p.text for p in content if p.type == "text"])


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None

    def to_usage(self) -> Usage:
        return usage(self.prompt_tokens, self.completion_tokens, self.total_tokens)


class _Message(msgspec.Struct):
    content: _Content = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    model: str = ""
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    content: _Content = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _ErrorInfo(msgspec.Struct):
    message: str = ""
    type: str | None = None
    code: str | int | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    model: str = ""
    usage: _Usage | None = None
    error: _ErrorInfo | str | None = None
    # Mistral (and some compatible servers) send a bare error object in-stream:
    # {"object": "error", "message": ..., "type": ..., "code": ...}.
    object: str = ""
    message: str = ""
    type: str | None = None
    code: str | int | None = None


class _DetailItem(msgspec.Struct):
    loc: list[str | int] = []
    msg: str = ""


class _ErrorBody(msgspec.Struct):
    """Every error shape seen from OpenAI-like servers.

    OpenAI ``{"error": {...}}``; Ollama ``{"error": "..."}``; vLLM and Mistral
    ``{"object": "error", "message": ...}``; FastAPI-style ``{"detail": ...}``.
    """

    error: _ErrorInfo | str | None = None
    message: str | None = None
    type: str | None = None
    code: str | int | None = None
    detail: str | list[_DetailItem] | None = None


_COMPLETION = msgspec.json.Decoder(_Completion)
_CHUNK = msgspec.json.Decoder(_Chunk)
_ERROR_BODY = msgspec.json.Decoder(_ErrorBody)

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "model_length": "length",  # Mistral: the model's context window ran out
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}
# Errors retrying will not fix, whatever the status says (a quota that will not refill).
_FATAL_CODES = frozenset(
    {"insufficient_quota", "invalid_request_error", "invalid_api_key", "billing_hard_limit_reached"}
)


def _finish(reason: str | None) -> FinishReason | None:
    return None if reason is None else _FINISH.get(reason, "other")


def _describe(message: str, tag: str | int | None) -> str:
    return f"{message} ({tag})" if tag not in (None, "") and str(tag) not in message else message


def _code(code: str | int | None) -> str | None:
    """A string code names the error (``insufficient_quota``); a numeric one repeats the status."""
    return code if isinstance(code, str) and code else None


def _error_text(view: _ErrorBody) -> tuple[str, str | None, str | None]:
    """``(message, type, code)`` from any of the shapes `_ErrorBody` accepts."""
    err = view.error
    if isinstance(err, _ErrorInfo):
        return err.message, err.type, _code(err.code)
    if isinstance(err, str) and err:
        return err, None, None
    if view.message:
        return view.message, view.type, _code(view.code)
    if isinstance(view.detail, str):
        return view.detail, None, None
    if view.detail:
        parts = [
            f"{'.'.join(str(x) for x in item.loc)}: {item.msg}" if item.loc else item.msg
            for item in view.detail
        ]
        return "; ".join(parts), None, None
    return "", None, None


class OpenAIAdapter(ProtocolAdapter):
    """OpenAI Chat Completions (``protocol="openai"``).

    Sends ``max_completion_tokens`` (``max_tokens`` is deprecated there and
    refused by o-series models) and asks streams for
    ``stream_options.include_usage`` so token counts arrive at the end.
    """

    protocol: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    label: ClassVar[str] = "OpenAI"
    """Protocol name used in error messages."""
    uses_max_completion_tokens: ClassVar[bool] = True
    sends_stream_options: ClassVar[bool] = True

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        auth: list[tuple[str, str]] = []
        if config.api_key:
            check_header_value(config, "api_key", config.api_key)
            auth.append(("authorization", Secret(f"Bearer {config.api_key}")))
        extra = self.extra_headers()
        json_type = [("content-type", "application/json")]
        self._headers = header_list([*json_type, ("accept", "application/json"), *auth], extra)
        self._stream_headers = header_list(
            [*json_type, ("accept", "text/event-stream"), *auth], extra
        )
        self._health_headers = header_list([("accept", "application/json"), *auth], extra)
        self._url = f"{self.base_url}/chat/completions"
        self._health_url = f"{self.base_url}/models"
        self._model = config.model or ""

    def build_request(self, request: LLMRequest, *, stream: bool) -> HTTPRequest:
        messages = request.as_messages()
        if request.system:
            messages = (Message(role="system", content=request.system), *messages)
        mct = self.uses_max_completion_tokens
        body = _Body(
            model=self._model,
            messages=messages,
            max_completion_tokens=request.max_tokens if mct else None,
            max_tokens=None if mct else request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop_sequences,
            stream=stream,
            stream_options=_INCLUDE_USAGE if stream and self.sends_stream_options else None,
        )
        headers = self._stream_headers if stream else self._headers
        return HTTPRequest("POST", self._url, headers, ENCODER.encode(body))

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMResponse:
        completion = decode(_COMPLETION, body, self.name, self.label)
        if not completion.choices:
            raise protocol_error(self.name, self.label, "no choices in the response")
        choice = completion.choices[0]
        return LLMResponse(
            content=_text(choice.message.content),
            model=completion.model or self._model,
            usage=completion.usage.to_usage() if completion.usage is not None else Usage(),
            finish_reason=_finish(choice.finish_reason),
        )

    def error_message(self, status: int, body: bytes) -> tuple[str, bool | None]:
        view = try_decode(_ERROR_BODY, body)
        if view is None:
            return body_text(body), None
        message, type_, code = _error_text(view)
        if not message:
            return body_text(body), None
        quota = "insufficient_quota" in (code, type_)  # retrying will not refill it
        return _describe(message, code or type_), False if quota else None

    def health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", self._health_url, self._health_headers)

    def stream_decoder(self) -> StreamDecoder:
        return _StreamDecoder(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.base_url}>"


class OpenAICompatibleAdapter(OpenAIAdapter):
    """An OpenAI-shaped server (vLLM, Ollama, Groq, Together, OpenRouter, ...).

    Same paths and shapes; sends ``max_tokens``, which these servers expect.
    The config requires ``base_url``.
    """

    protocol: ClassVar[str] = "openai-compatible"
    label: ClassVar[str] = "OpenAI-compatible"
    uses_max_completion_tokens: ClassVar[bool] = False


class _StreamDecoder(StreamDecoder):
    """``data:``-only chunks ending with ``data: [DONE]``; usage may come on any chunk."""

    def __init__(self, adapter: OpenAIAdapter) -> None:
        self._name = adapter.name
        self._label = adapter.label
        self._model = adapter._model
        self._finish: str | None = None
        self._usage: _Usage | None = None

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        return feed_event(self, event)

    def feed_data(self, datas: list[bytes], out: list[StreamChunk]) -> None:
        name = self._name
        provider = self.provider
        for data in datas:
            try:
                chunk = _CHUNK.decode(data)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                # Off the hot path: the terminal marker, keep-alives, invalid UTF-8
                # (read as the replacement character, as the event decoder does).
                if data.startswith(b"[DONE]"):
                    self.done = True
                    out.append(
                        StreamChunk(
                            finish_reason=_finish(self._finish),
                            usage=None if self._usage is None else self._usage.to_usage(),
                            model=self._model,
                            provider=provider,
                        )
                    )
                    return
                if not data.strip():
                    continue  # an empty keep-alive event carries nothing to parse
                chunk = decode(_CHUNK, data.decode("utf-8", "replace"), name, self._label)
            if chunk.error is not None:
                raise self._error(chunk.error)
            if chunk.object == "error":
                raise self._error(
                    _ErrorInfo(message=chunk.message, type=chunk.type, code=chunk.code)
                )
            if chunk.usage is not None:
                self._usage = chunk.usage  # some servers send a running total on every chunk
            if chunk.model:
                self._model = chunk.model
            choices = chunk.choices
            if not choices:
                continue
            choice = choices[0]
            if choice.finish_reason is not None:
                self._finish = choice.finish_reason
            delta = choice.delta
            if delta is not None:
                content = delta.content
                if content:
                    text = content if type(content) is str else _text(content)
                    if text:
                        out.append(StreamChunk(delta=text, provider=provider))

    def finish(self) -> list[StreamChunk]:
        if not self.done:
            raise truncated_error(self._name, self._label)
        return []

    def _error(self, err: _ErrorInfo | str) -> LLMError:
        tags: tuple[str | None, ...] = ()
        if isinstance(err, str):
            message = err
        else:
            message = err.message or "error event in stream"
            tags = (err.type, _code(err.code))
        fatal = any(t in _FATAL_CODES for t in tags)
        tag = next((t for t in reversed(tags) if t), None)
        return LLMError(
            f"error in stream: {_describe(message, tag)}",
            provider=self._name,
            retryable=not fatal,
            kind="http",
        )
