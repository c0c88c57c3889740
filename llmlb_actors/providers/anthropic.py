"""Anthropic Messages API (``POST {base}/v1/messages``), sans-I/O.

Shapes from https://docs.anthropic.com/en/api/messages. The API requires
``max_tokens`` and takes the system prompt at top level only, so system turns
in ``messages`` are lifted out. Streams are typed events ending with
``message_stop``; ``output_tokens`` in ``message_delta`` is cumulative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from .._chat import ImagePart, JSONSchema, TextPart, image_base64
from .._errors import LLMError
from .._models import FinishReason, LLMRequest, LLMResponse, Message, StreamChunk, Usage
from .._secrets import Secret
from .._transport._base import HTTPRequest
from ._adapter import ProtocolAdapter, StreamDecoder
from ._status import classify_status
from ._wire import (
    ENCODER,
    ToolCallAssembler,
    body_text,
    check_header_value,
    decode,
    decode_event,
    dropped,
    feed_event,
    header_list,
    is_plain,
    json_text,
    merge_extra_body,
    protocol_error,
    safe_id,
    tool_call,
    truncated_error,
    try_decode,
    usage,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._chat import ToolCall
    from .._config import ProviderConfig
    from .._sse import SSEEvent

__all__ = ["AnthropicAdapter"]

DEFAULT_MAX_TOKENS = 1024
"""Sent when the request sets no ``max_tokens``: the API refuses a body without one."""

_LABEL = "Anthropic"

JSON_TOOL = "llmlb_json_answer"
"""The tool forced for ``response_format="json"``: its input comes back as the text answer.

The API's native structured output needs a schema, and ``"json"`` has none.
"""


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


class _RichBody(_Body, omit_defaults=True):
    """Tools and output format, after the text fields (a text-only body has none)."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if type(part) is TextPart:
        return {"type": "text", "text": part.text}
    inline = image_base64(part)  # type: ignore[arg-type]
    if inline is None:
        return {"type": "image", "source": {"type": "url", "url": part.url}}  # type: ignore[union-attr]
    media, data = inline
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def _tool_choice(choice: str | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def _turns(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages as the API wants them: tool results in user turns, consecutive ones merged."""
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the open user turn of tool results
    for m in messages:
        if m.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": safe_id(m.tool_call_id or ""),
                "content": m.text,
            }
            if results is None:
                results = [block]
                out.append({"role": "user", "content": results})
            else:
                results.append(block)
            continue
        results = None
        content = m.content
        if m.tool_calls:
            blocks: list[dict[str, Any]] = []
            if m.text:
                blocks.append({"type": "text", "text": m.text})
            blocks.extend(
                {"type": "tool_use", "id": safe_id(c.id), "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            )
            out.append({"role": m.role, "content": blocks})
        elif isinstance(content, str) or m.role != "user":
            out.append({"role": m.role, "content": m.text})
        else:
            out.append({"role": m.role, "content": [_part(p) for p in content]})
    return out


# ---- response views -------------------------------------------------------------------------


class _Block(msgspec.Struct):
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: dict[str, Any] | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None


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
    partial_json: str = ""


class _StartBlock(msgspec.Struct):
    type: str = ""
    id: str = ""
    name: str = ""


class _ErrorInfo(msgspec.Struct):
    type: str = ""
    message: str = ""


class _Event(msgspec.Struct):
    type: str
    message: _StartMessage | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _ErrorInfo | None = None
    index: int = 0
    content_block: _StartBlock | None = None


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


def _usage(u: _Usage | None) -> Usage:
    if u is None:
        return Usage()
    if u.cache_read_input_tokens:
        # input_tokens counts only the uncached part of the prompt: that stays the prompt.
        return Usage(
            prompt_tokens=u.input_tokens or 0,
            completion_tokens=u.output_tokens or 0,
            total_tokens=(u.input_tokens or 0) + (u.output_tokens or 0),
            cached_tokens=u.cache_read_input_tokens,
        )
    return usage(u.input_tokens or 0, u.output_tokens or 0)


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
        if not is_plain(request):
            return self._build_rich(request, stream)
        messages = request.as_messages()
        system = request.system or None
        if any(m.role == "system" for m in messages):
            # The API has no system role in `messages` (for most models): lift them out.
            lifted = [m.text for m in messages if m.role == "system"]
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

    def _build_rich(self, request: LLMRequest, stream: bool) -> HTTPRequest:
        """Tools, images, tool turns and output format; the seed has no field here."""
        messages = request.as_messages()
        lifted = [m.text for m in messages if m.role == "system"]
        system = "\n\n".join([request.system, *lifted] if request.system else lifted) or None
        tools = None
        choice = None
        if request.tools:
            tools = [_tool(t.name, t.description, t.parameters) for t in request.tools]
            choice = _tool_choice(request.tool_choice)
        output = None
        fmt = request.response_format
        if isinstance(fmt, JSONSchema):
            output = {"format": {"type": "json_schema", "schema": fmt.schema}}
        elif fmt == "json":
            if tools:
                dropped(self.name, _LABEL, "response_format='json' together with tools")
            else:
                schema = {"type": "object"}
                tools = [_tool(JSON_TOOL, "Give the answer as this JSON object.", schema)]
                choice = {"type": "tool", "name": JSON_TOOL}
        if request.seed is not None:
            dropped(self.name, _LABEL, "seed")
        body = _RichBody(
            model=self._model,
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
            messages=_turns(tuple(m for m in messages if m.role != "system")),  # type: ignore[arg-type]
            system=system,
            temperature=request.temperature,
            top_p=request.top_p,
            stop_sequences=request.stop_sequences,
            stream=stream,
            tools=tools,
            tool_choice=choice,
            output_config=output,
        )
        headers = self._stream_headers if stream else self._headers
        data = merge_extra_body(ENCODER.encode(body), request.extra_body)
        return HTTPRequest("POST", self._url, headers, data)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMResponse:
        msg = decode(_MESSAGE, body, self.name, _LABEL)
        u = msg.usage
        if any(b.type == "tool_use" for b in msg.content):
            return self._with_tools(msg)
        return LLMResponse(
            content="".join([b.text for b in msg.content if b.type == "text"]),
            model=msg.model or self._model,
            usage=Usage() if u is None else _usage(u),
            finish_reason=_finish(msg.stop_reason),
        )

    def _with_tools(self, msg: _Message) -> LLMResponse:
        text: list[str] = []
        calls: list[ToolCall] = []
        finish = _finish(msg.stop_reason)
        for block in msg.content:
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                arguments = block.input if block.input is not None else {}
                if block.name == JSON_TOOL:
                    text.append(json_text(arguments))  # response_format="json"
                    finish = "stop" if finish == "tool_calls" else finish
                    continue
                if not block.id:
                    raise protocol_error(self.name, _LABEL, f"tool_use {block.name!r} without id")
                calls.append(tool_call(block.id, block.name, arguments, self.name, _LABEL))
        return LLMResponse(
            content="".join(text),
            model=msg.model or self._model,
            usage=_usage(msg.usage),
            finish_reason=finish,
            tool_calls=tuple(calls),
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


def _tool(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": name}
    if description:
        tool["description"] = description
    tool["input_schema"] = schema
    return tool


class _StreamDecoder(StreamDecoder):
    """Typed events; ``message_stop`` is terminal, ``ping`` and unknown types are ignored."""

    def __init__(self, name: str, model: str) -> None:
        self._name = name
        self._model = model
        self._input = 0
        self._output = 0
        self._cached = 0
        self._stop: str | None = None
        self._tools: ToolCallAssembler | None = None  # tool_use blocks being streamed
        self._json_block: int | None = None  # the forced JSON tool's block: streamed as text

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        return feed_event(self, event)

    def feed_data(self, datas: list[bytes], out: list[StreamChunk]) -> None:
        name = self._name
        provider = self.provider
        for data in datas:
            try:
                ev = _EVENT.decode(data)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                slow = decode_event(_EVENT, data, name, _LABEL)
                if slow is None:
                    continue
                ev = slow
            kind = ev.type
            if kind == "content_block_delta":
                delta = ev.delta
                if delta is not None:
                    if delta.type == "text_delta":
                        if delta.text:
                            out.append(StreamChunk(delta=delta.text, provider=provider))
                    elif delta.type == "input_json_delta" and delta.partial_json:
                        self._input_json(ev.index, delta.partial_json, out)
                # thinking_delta, signature_delta: not text
            elif kind == "message_delta":
                if ev.delta is not None and ev.delta.stop_reason is not None:
                    self._stop = ev.delta.stop_reason
                self._take_usage(ev.usage)
            elif kind == "message_start":
                if ev.message is None:
                    raise protocol_error(name, _LABEL, "message_start without a message")
                self._model = ev.message.model or self._model
                self._take_usage(ev.message.usage)
            elif kind == "content_block_start":
                block = ev.content_block
                if block is not None and block.type == "tool_use":
                    self._tool_start(ev.index, block)
            elif kind == "content_block_stop":
                if self._tools is not None:
                    calls = self._tools.finish(ev.index)
                    if calls:
                        out.append(StreamChunk(tool_calls=tuple(calls), provider=provider))
            elif kind == "message_stop":
                self.done = True
                finish = _finish(self._stop)
                if self._json_block is not None and finish == "tool_calls":
                    finish = "stop"  # the forced JSON tool answered: that is the text
                use = usage(self._input, self._output)
                if self._cached:
                    use = _usage(_Usage(self._input, self._output, self._cached))
                out.append(
                    StreamChunk(
                        finish_reason=finish, usage=use, model=self._model, provider=provider
                    )
                )
                return
            elif kind == "error":
                raise self._error(ev.error)
            # ping and types added later: nothing to say

    def _tool_start(self, index: int, block: _StartBlock) -> None:
        if block.name == JSON_TOOL:
            self._json_block = index
            return
        if self._tools is None:
            self._tools = ToolCallAssembler(self._name, _LABEL)
        self._tools.start(index, block.id, block.name)

    def _input_json(self, index: int, fragment: str, out: list[StreamChunk]) -> None:
        """A fragment of a tool's input; the forced JSON tool's input is the answer's text."""
        if index == self._json_block:
            out.append(StreamChunk(delta=fragment, provider=self.provider))
        elif self._tools is not None:
            self._tools.add(index, fragment)

    def _take_usage(self, u: _Usage | None) -> None:
        if u is None:
            return
        if u.input_tokens is not None:
            self._input = u.input_tokens
        if u.output_tokens is not None:
            self._output = u.output_tokens  # cumulative: assign, never add
        if u.cache_read_input_tokens is not None:
            self._cached = u.cache_read_input_tokens

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
