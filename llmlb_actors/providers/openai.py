"""OpenAI Chat Completions, and the many servers that copy it ("openai-compatible").

Sans-I/O: builds ``POST {base}/chat/completions`` and parses its JSON and SSE
answers (https://platform.openai.com/docs/api-reference/chat). Mistral reuses
this adapter with a few switches (`llmlb_actors.providers.mistral`).
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
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._chat import ToolCall
    from .._config import ProviderConfig
    from .._sse import SSEEvent

__all__ = ["OpenAIAdapter", "OpenAICompatibleAdapter"]


# ---- request body ---------------------------------------------------------------------------


class _StreamOptions(msgspec.Struct):
    include_usage: bool


class _Body(msgspec.Struct, omit_defaults=True):
    model: str
    messages: tuple[Message | _Turn, ...] | list[dict[str, Any]]
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None


class _Turn(msgspec.Struct):
    """A text turn encoded exactly as a text `Message`, built without its three unused fields."""

    role: str
    content: str


class _RichBody(_Body, omit_defaults=True):
    """The richer surface, after the text fields (a text-only body never has these)."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    random_seed: int | None = None  # Mistral's name for it


_INCLUDE_USAGE = _StreamOptions(include_usage=True)


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if type(part) is TextPart:
        return {"type": "text", "text": part.text}
    return {"type": "image_url", "image_url": {"url": image_url(part)}}  # type: ignore[arg-type]


def _tool_choice(choice: str | None) -> str | dict[str, Any] | None:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _response_format(fmt: str | JSONSchema | None) -> dict[str, Any] | None:
    if fmt is None:
        return None
    if isinstance(fmt, JSONSchema):
        schema = {"name": fmt.name, "schema": fmt.schema, "strict": fmt.strict}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": "json_object"}


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


# Usage views hold only numbers: gc=False spares the collector (and the decoder) the
# tracking of objects that can never be part of a cycle. OpenAI sends both detail
# objects on every answer, so they are on the hot path.
class _PromptDetails(msgspec.Struct, gc=False):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct, gc=False):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None

    def to_usage(self) -> Usage:
        prompt = self.prompt_tokens
        completion = self.completion_tokens
        total = self.total_tokens
        cached = self.prompt_tokens_details
        reasoning = self.completion_tokens_details
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion if total is None else total,
            cached_tokens=(cached.cached_tokens or 0) if cached is not None else 0,
            reasoning_tokens=(reasoning.reasoning_tokens or 0) if reasoning is not None else 0,
        )


class _Function(msgspec.Struct):
    name: str | None = None
    # A JSON string on OpenAI; Mistral may send the object itself.
    arguments: str | dict[str, Any] | None = None


class _ToolCall(msgspec.Struct):
    id: str | None = None
    function: _Function | None = None
    index: int | None = None  # streams only


class _Message(msgspec.Struct):
    content: _Content = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    model: str = ""
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    content: _Content = None
    tool_calls: list[_ToolCall] | None = None


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
    seed_field: ClassVar[str] = "seed"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        auth = self.auth_headers(config)
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

    def auth_headers(self, config: ProviderConfig) -> list[tuple[str, str]]:
        """The key as a Bearer token."""
        if not config.api_key:
            return []
        check_header_value(config, "api_key", config.api_key)
        return [("authorization", Secret(f"Bearer {config.api_key}"))]

    def tool_id(self, id: str) -> str:
        """A tool-call id as this API accepts it (Mistral narrows the format)."""
        return id

    def build_request(self, request: LLMRequest, *, stream: bool) -> HTTPRequest:
        if (
            request.tools is not None
            or request.response_format is not None
            or request.seed is not None
            or request.extra_body is not None
            or (request.messages is not None and not is_plain(request))
        ):
            return self._build_rich(request, stream)
        messages: tuple[Message | _Turn, ...]
        if request.messages is None:
            messages = (_Turn("user", request.prompt or ""),)
        else:
            messages = request.messages  # type: ignore[assignment]
        if request.system:
            messages = (_Turn("system", request.system), *messages)
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

    def _build_rich(self, request: LLMRequest, stream: bool) -> HTTPRequest:
        """Tools, parts, tool turns, output formats, seed and extra body."""
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(self._message(m) for m in request.as_messages())
        mct = self.uses_max_completion_tokens
        tools = None
        choice = None
        if request.tools:
            tools = [_tool(t.name, t.description, t.parameters) for t in request.tools]
            choice = _tool_choice(request.tool_choice)
        seed = request.seed
        body = _RichBody(
            model=self._model,
            messages=messages,
            max_completion_tokens=request.max_tokens if mct else None,
            max_tokens=None if mct else request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop_sequences,
            stream=stream,
            stream_options=_INCLUDE_USAGE if stream and self.sends_stream_options else None,
            tools=tools,
            tool_choice=choice,
            response_format=_response_format(request.response_format),
            seed=seed if self.seed_field == "seed" else None,
            random_seed=seed if self.seed_field == "random_seed" else None,
        )
        headers = self._stream_headers if stream else self._headers
        data = merge_extra_body(ENCODER.encode(body), request.extra_body)
        return HTTPRequest("POST", self._url, headers, data)

    def _message(self, m: Message) -> dict[str, Any]:
        if m.role == "tool":
            return {
                "role": "tool",
                "tool_call_id": self.tool_id(m.tool_call_id or ""),
                "content": m.text,
            }
        if m.tool_calls:
            return {
                "role": "assistant",
                "content": m.text or None,
                "tool_calls": [
                    {
                        "id": self.tool_id(c.id),
                        "type": "function",
                        "function": {"name": c.name, "arguments": json_text(c.arguments)},
                    }
                    for c in m.tool_calls
                ],
            }
        content = m.content
        if isinstance(content, str) or m.role != "user":
            return {"role": m.role, "content": m.text}
        return {"role": m.role, "content": [_part(p) for p in content]}

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMResponse:
        completion = decode(_COMPLETION, body, self.name, self.label)
        if not completion.choices:
            raise protocol_error(self.name, self.label, "no choices in the response")
        choice = completion.choices[0]
        message = choice.message
        if message.tool_calls:
            return self._with_tools(completion, choice)
        # Inlined text and finish-reason lookups: this runs once per answer.
        content = message.content
        reason = choice.finish_reason
        return LLMResponse(
            content=content if type(content) is str else _text(content),
            model=completion.model or self._model,
            usage=completion.usage.to_usage() if completion.usage is not None else Usage(),
            finish_reason=None if reason is None else _FINISH.get(reason, "other"),
        )

    def _with_tools(self, completion: _Completion, choice: _Choice) -> LLMResponse:
        calls = tuple(
            _whole_call(c, self.name, self.label) for c in choice.message.tool_calls or ()
        )
        finish = _finish(choice.finish_reason)
        return LLMResponse(
            content=_text(choice.message.content),
            model=completion.model or self._model,
            usage=completion.usage.to_usage() if completion.usage is not None else Usage(),
            # Some compatible servers say "stop" when the turn ends in tool calls.
            finish_reason="tool_calls" if finish in (None, "stop") else finish,
            tool_calls=calls,
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


def _tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = parameters
    return {"type": "function", "function": function}


def _whole_call(view: _ToolCall, provider: str, label: str) -> ToolCall:
    function = view.function or _Function()
    name = function.name or ""
    arguments = parse_arguments(function.arguments, provider, label, name)
    if not view.id:
        raise protocol_error(provider, label, f"tool call {name!r} without an id")
    return tool_call(view.id, name, arguments, provider, label)


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
        self._tools: ToolCallAssembler | None = None  # created by the first tool-call delta
        self._called = False

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
                    if self._tools:
                        calls = tuple(self._tools.finish_all())
                        self._called = True
                        out.append(StreamChunk(tool_calls=calls, provider=provider))
                    out.append(
                        StreamChunk(
                            finish_reason=self._final_reason(),
                            usage=None if self._usage is None else self._usage.to_usage(),
                            model=self._model,
                            provider=provider,
                        )
                    )
                    return
                slow = decode_event(_CHUNK, data, name, self._label)
                if slow is None:
                    continue
                chunk = slow
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
            delta = choice.delta
            if choice.finish_reason is not None:
                self._finish = choice.finish_reason
                if (delta is not None and delta.tool_calls) or self._tools:
                    self._tool_deltas(delta, out, finished=True)
                    continue
            if delta is not None:
                if delta.tool_calls:
                    self._tool_deltas(delta, out, finished=False)
                    continue
                content = delta.content
                if content:
                    text = content if type(content) is str else _text(content)
                    if text:
                        out.append(StreamChunk(delta=text, provider=provider))

    def _tool_deltas(self, delta: _Delta | None, out: list[StreamChunk], *, finished: bool) -> None:
        """Assemble argument fragments; a call is whole once a later one starts or the turn ends."""
        tools = self._tools
        if tools is None:
            tools = self._tools = ToolCallAssembler(self._name, self._label)
        provider = self.provider
        text = "" if delta is None else _text(delta.content)
        if text:
            out.append(StreamChunk(delta=text, provider=provider))
        done: list[ToolCall] = []
        calls = delta.tool_calls if delta is not None and delta.tool_calls else []
        for position, call in enumerate(calls):
            index = call.index if call.index is not None else position
            done.extend(tools.finish_before(index))
            function = call.function
            tools.start(index, call.id, None if function is None else function.name)
            if function is not None and function.arguments:
                arguments = function.arguments
                if isinstance(arguments, dict):  # Mistral streams each call whole
                    arguments = json_text(arguments)
                tools.add(index, arguments)
        if finished:
            done.extend(tools.finish_all())
        if done:
            self._called = True
            out.append(StreamChunk(tool_calls=tuple(done), provider=provider))

    def _final_reason(self) -> FinishReason | None:
        finish = _finish(self._finish)
        if (self._called or self._tools) and finish in (None, "stop"):
            return "tool_calls"
        return finish

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
