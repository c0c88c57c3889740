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

from .._chat import ImagePart, JSONSchema, TextPart, image_url
from .._errors import LLMError
from .._models import FinishReason, LLMRequest, LLMResponse, Message, StreamChunk, Usage
from .._secrets import Secret
from .._transport._base import HTTPRequest
from ._adapter import ProtocolAdapter, StreamDecoder
from ._wire import (
    ENCODER,
    ToolCallAssembler,
    body_text,
    check_header_value,
    decode,
    decode_event,
    feed_event,
    header_list,
    is_plain,
    json_text,
    merge_extra_body,
    parse_arguments,
    protocol_error,
    tool_call,
    truncated_error,
    try_decode,
    usage,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._chat import Tool
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


class _RichBody(_Body, omit_defaults=True):
    """Tools, output format and seed, after the text fields (a text-only body has none)."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if type(part) is TextPart:
        return {"type": "text", "text": part.text}
    return {"type": "image_url", "image_url": {"url": image_url(part)}}  # type: ignore[arg-type]


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    return {"type": "function", "function": function}


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text}
    if m.tool_calls:
        out: dict[str, Any] = {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json_text(c.arguments)},
                }
                for c in m.tool_calls
            ],
        }
        if m.text:
            out["content"] = m.text
        return out
    content = m.content
    if isinstance(content, str) or m.role != "user":
        return {"role": m.role, "content": m.text}
    return {"role": m.role, "content": [_part(p) for p in content]}


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
    cached_tokens: float | None = None

    def to_usage(self) -> Usage:
        counts = self.tokens or self.billed_units
        if counts is None:
            return Usage()
        plain = usage(int(counts.input_tokens), int(counts.output_tokens))
        if self.cached_tokens:
            return msgspec.structs.replace(plain, cached_tokens=int(self.cached_tokens))
        return plain


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    id: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct):
    content: list[_Block] | str | None = []
    tool_calls: list[_ToolCall] | None = None


class _Chat(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None
    usage: _Usage | None = None


class _DeltaContent(msgspec.Struct):
    text: str = ""


class _DeltaMessage(msgspec.Struct):
    # An object in content-start/-delta, an (empty) list in message-start.
    content: _DeltaContent | list[Any] | None = None
    # An object in tool-call-start/-delta, an (empty) list in message-start.
    tool_calls: _ToolCall | list[Any] | None = None


class _Delta(msgspec.Struct):
    message: _DeltaMessage | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None
    error: str | None = None


class _Event(msgspec.Struct):
    type: str
    delta: _Delta | None = None
    index: int = 0


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
        if not is_plain(request):
            return self._build_rich(request, stream)
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

    def _build_rich(self, request: LLMRequest, stream: bool) -> HTTPRequest:
        """Tools, images, tool turns, JSON output and the seed."""
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(_message(m) for m in request.as_messages())
        tools = None
        choice = None
        if request.tools:
            offered = request.tools
            named = request.tool_choice
            if named not in (None, "auto", "none", "required"):
                # No way to name one tool here: offer only it, and require a call.
                offered = [t for t in offered if t.name == named]
                named = "required"
            tools = [_tool(t) for t in offered]
            choice = {"required": "REQUIRED", "none": "NONE"}.get(named or "")
        fmt = request.response_format
        response_format = None
        if isinstance(fmt, JSONSchema):
            response_format = {"type": "json_object", "json_schema": fmt.schema}
        elif fmt == "json":
            response_format = {"type": "json_object"}
        body = _RichBody(
            model=self._model,
            messages=messages,  # type: ignore[arg-type]
            stream=stream,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            p=request.top_p,
            stop_sequences=request.stop_sequences,
            tools=tools,
            tool_choice=choice,
            response_format=response_format,
            seed=request.seed,
        )
        headers = self._stream_headers if stream else self._headers
        data = merge_extra_body(ENCODER.encode(body), request.extra_body)
        return HTTPRequest("POST", self._url, headers, data)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMResponse:
        chat = decode(_CHAT, body, self.name, _LABEL)
        content = chat.message.content
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            text = "".join([b.text for b in content if b.type == "text"])
        calls = tuple(
            tool_call(
                c.id or "",
                (c.function or _Function()).name or "",
                parse_arguments(
                    (c.function or _Function()).arguments,
                    self.name,
                    _LABEL,
                    (c.function or _Function()).name or "",
                ),
                self.name,
                _LABEL,
            )
            for c in chat.message.tool_calls or ()
        )
        return LLMResponse(
            content=text,
            model=self._model,  # the response does not name the model
            usage=Usage() if chat.usage is None else chat.usage.to_usage(),
            finish_reason=_finish(chat.finish_reason),
            tool_calls=calls,
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
        self._tools: ToolCallAssembler | None = None

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
                slow = decode_event(_EVENT, data, name, _LABEL)
                if slow is None:
                    continue
                ev = slow
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
            elif kind.startswith("tool-call-"):
                self._tool_event(kind, ev, out)
            # message-start, content-start/-end, tool-plan, citation events, debug: nothing

    def _tool_event(self, kind: str, ev: _Event, out: list[StreamChunk]) -> None:
        """tool-call-start names the call, -delta adds argument text, -end makes it whole."""
        tools = self._tools
        if tools is None:
            tools = self._tools = ToolCallAssembler(self._name, _LABEL)
        message = ev.delta.message if ev.delta is not None else None
        call = message.tool_calls if message is not None else None
        function = call.function if isinstance(call, _ToolCall) else None
        if kind == "tool-call-start":
            tools.start(ev.index, call.id if isinstance(call, _ToolCall) else None,
                        function.name if function is not None else None)  # fmt: skip
            if function is not None and function.arguments:
                tools.add(ev.index, function.arguments)
        elif kind == "tool-call-delta":
            if function is not None and function.arguments:
                tools.add(ev.index, function.arguments)
        elif kind == "tool-call-end":
            calls = tools.finish(ev.index)
            if calls:
                out.append(StreamChunk(tool_calls=tuple(calls), provider=self.provider))

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
