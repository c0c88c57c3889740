"""Google Gemini API (generativelanguage ``generateContent``), sans-I/O.

Shapes from https://ai.google.dev/api/generate-content: camelCase bodies,
roles ``user``/``model``, the system prompt in ``systemInstruction``. Streams
(``:streamGenerateContent?alt=sse``) have no terminal event, so a stream is
complete only if some chunk carried a ``finishReason`` before the body ended.
Errors use the Google RPC shape; an invalid key is a 400 there, not a 401, and
a 429 says how long to wait in ``RetryInfo.retryDelay``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import msgspec

from .._chat import ImagePart, JSONSchema, TextPart, image_base64
from .._errors import LLMError
from .._models import FinishReason, LLMRequest, LLMResponse, Message, StreamChunk, Usage
from .._quota._headers import parse_gemini_quota
from .._secrets import Secret
from .._transport._base import HTTPRequest
from ._adapter import ProtocolAdapter, StreamDecoder
from ._status import classify_status, error_for_status
from ._wire import (
    ENCODER,
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
    stable_id,
    tool_call,
    truncated_error,
    try_decode,
    usage,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._chat import ToolCall
    from .._config import ProviderConfig
    from .._quota._types import Observation
    from .._sse import SSEEvent

__all__ = ["GeminiAdapter"]

_LABEL = "Gemini"


# ---- request body ---------------------------------------------------------------------------


class _Part(msgspec.Struct):
    text: str


class _Content(msgspec.Struct, omit_defaults=True):
    parts: tuple[_Part, ...]
    role: str | None = None


class _GenerationConfig(msgspec.Struct, omit_defaults=True, rename="camel"):
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: tuple[str, ...] | None = None


class _Body(msgspec.Struct, omit_defaults=True, rename="camel"):
    contents: list[_Content]
    system_instruction: _Content | None = None
    generation_config: _GenerationConfig | None = None


_ROLE = {"user": "user", "assistant": "model"}


class _RichGenerationConfig(_GenerationConfig, omit_defaults=True, rename="camel"):
    response_mime_type: str | None = None
    response_json_schema: dict[str, Any] | None = None
    response_schema: dict[str, Any] | None = None  # API version v1: no JSON Schema field
    seed: int | None = None


class _RichBody(msgspec.Struct, omit_defaults=True, rename="camel"):
    contents: list[dict[str, Any]]
    system_instruction: _Content | None = None
    generation_config: _RichGenerationConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_config: dict[str, Any] | None = None


_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_IMAGE_TYPES |= {".gif": "image/gif", ".webp": "image/webp"}
_INT32 = 2**31
_GEMINI_3 = re.compile(r"^gemini-([3-9]|[1-9][0-9])")
SKIP_SIGNATURE = "skip_thought_signature_validator"
"""Google's documented stand-in for a missing thought signature (Gemini 3 insists on one)."""

# Gemini 3 returns an opaque thoughtSignature with a function call and rejects the next
# turn unless it comes back on that call. ToolCall has no place for it (and other
# providers must never see it), so it is kept here by call id, bounded.
_SIGNATURES: dict[str, str] = {}
_MAX_SIGNATURES = 4096


def _remember_signature(call_id: str, signature: str) -> None:
    if len(_SIGNATURES) >= _MAX_SIGNATURES:
        del _SIGNATURES[next(iter(_SIGNATURES))]
    _SIGNATURES[call_id] = signature


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if type(part) is TextPart:
        return {"text": part.text}
    inline = image_base64(part)  # type: ignore[arg-type]
    if inline is not None:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    url = part.url or ""  # type: ignore[union-attr]
    data: dict[str, str] = {}
    media = part.media_type or _IMAGE_TYPES.get(url.rsplit("?", 1)[0][url.rfind(".") :].lower())  # type: ignore[union-attr]
    if media:
        data["mimeType"] = media
    data["fileUri"] = url
    return {"fileData": data}


def _response_object(text: str) -> dict[str, Any]:
    """A tool result as ``functionResponse.response`` (an object): JSON objects pass as is."""
    if text.lstrip().startswith("{"):
        try:
            value = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value
    return {"result": text}


def _tool_config(choice: str | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"functionCallingConfig": {"mode": choice.upper()}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice]}}


# ---- response views -------------------------------------------------------------------------


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: dict[str, Any] | None = None
    id: str | None = None


class _RPart(msgspec.Struct, rename="camel"):
    text: str = ""
    thought: bool = False
    function_call: _FunctionCall | None = None
    thought_signature: str | None = None


class _RContent(msgspec.Struct):
    parts: list[_RPart] = []  # absent on some MAX_TOKENS candidates of thinking models


class _Candidate(msgspec.Struct, rename="camel"):
    content: _RContent | None = None
    finish_reason: str | None = None


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    total_token_count: int | None = None
    cached_content_token_count: int = 0

    def to_usage(self) -> Usage:
        # Thinking tokens are billed as output, so they count as completion tokens
        # (as OpenAI counts reasoning tokens); then prompt + completion == total.
        plain = usage(
            self.prompt_token_count,
            self.candidates_token_count + self.thoughts_token_count,
            self.total_token_count,
        )
        if self.thoughts_token_count or self.cached_content_token_count:
            return msgspec.structs.replace(
                plain,
                cached_tokens=self.cached_content_token_count,
                reasoning_tokens=self.thoughts_token_count,
            )
        return plain


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _Detail(msgspec.Struct):
    type: str = msgspec.field(name="@type", default="")
    reason: str = ""
    retry_delay: str = msgspec.field(name="retryDelay", default="")


class _RPCError(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[_Detail] = []


class _Response(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    usage_metadata: _UsageMetadata | None = None
    model_version: str = ""
    prompt_feedback: _PromptFeedback | None = None
    error: _RPCError | None = None
    response_id: str = ""


class _ErrorBody(msgspec.Struct):
    error: _RPCError


_RESPONSE = msgspec.json.Decoder(_Response)
# Without alt=sse Google answers in a JSON array; accept that shape for errors too.
_ERROR_BODY = msgspec.json.Decoder(_ErrorBody | list[_ErrorBody])

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
}


def _finish(reason: str | None) -> FinishReason | None:
    return None if reason is None else _FINISH.get(reason, "other")


def _text(candidate: _Candidate) -> str:
    if candidate.content is None:
        return ""
    return "".join([p.text for p in candidate.content.parts if not p.thought])


def _calls(candidate: _Candidate, provider: str, response_id: str, first: int) -> list[ToolCall]:
    """The candidate's function calls; ids made from the answer when the API gives none."""
    out: list[ToolCall] = []
    if candidate.content is None:
        return out
    for part in candidate.content.parts:
        call = part.function_call
        if call is None:
            continue
        arguments = call.args if call.args is not None else {}
        id_ = call.id or stable_id(
            response_id, str(first + len(out)), call.name, json_text(arguments)
        )
        out.append(tool_call(id_, call.name, arguments, provider, _LABEL))
        if part.thought_signature:
            _remember_signature(id_, part.thought_signature)
    return out


def parse_duration(value: str) -> float | None:
    """Seconds from a protobuf Duration string (``"27s"``, ``"3.700s"``), or ``None``."""
    if not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _rpc_error(body: bytes) -> _RPCError | None:
    view = try_decode(_ERROR_BODY, body)
    if isinstance(view, list):
        view = view[0] if view else None
    return None if view is None else view.error


def _retry_delay(err: _RPCError) -> float | None:
    for detail in err.details:
        if detail.retry_delay:
            return parse_duration(detail.retry_delay)
    return None


def _key_invalid(err: _RPCError) -> bool:
    return any(d.reason == "API_KEY_INVALID" for d in err.details)


def _describe(err: _RPCError) -> str:
    tags = [t for t in (err.status, *(d.reason for d in err.details)) if t]
    text = err.message or f"error {err.code}"
    return f"{text} ({': '.join(tags)})" if tags else text


class GeminiAdapter(ProtocolAdapter):
    """Google Gemini (``protocol="gemini"``); the API version path is ``config.api_version``
    or ``v1beta``."""

    protocol: ClassVar[str] = "gemini"
    default_base_url: ClassVar[str] = "https://generativelanguage.googleapis.com"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        version = quote(config.api_version or "v1beta", safe="")
        model = config.model or ""
        self._model = model.removeprefix("models/")
        ours: list[tuple[str, str]] = []
        if config.api_key:
            check_header_value(config, "api_key", config.api_key)
            ours.append(("x-goog-api-key", Secret(config.api_key)))
        extra = self.extra_headers()
        json_type = ("content-type", "application/json")
        self._headers = header_list([json_type, ("accept", "application/json"), *ours], extra)
        self._stream_headers = header_list(
            [json_type, ("accept", "text/event-stream"), *ours], extra
        )
        self._health_headers = header_list([("accept", "application/json"), *ours], extra)
        # The model goes into the path: quote it so no name can change the URL's shape.
        root = f"{self.base_url}/{version}/models/{quote(self._model, safe='')}"
        self._url = f"{root}:generateContent"
        self._stream_url = f"{root}:streamGenerateContent?alt=sse"
        self._health_url = root
        # v1beta takes JSON Schema as is (parametersJsonSchema, responseJsonSchema); the v1
        # API has only the OpenAPI-subset fields, which take the simple schemas unchanged.
        self._legacy_schema = version == "v1"
        self._needs_signature = _GEMINI_3.match(self._model) is not None

    def build_request(self, request: LLMRequest, *, stream: bool) -> HTTPRequest:
        if not is_plain(request):
            return self._build_rich(request, stream)
        system: list[_Part] = [_Part(request.system)] if request.system else []
        contents: list[_Content] = []
        for m in request.as_messages():
            text: str = m.content  # type: ignore[assignment]  # plain: always text
            if m.role == "system":
                system.append(_Part(text))
            else:
                contents.append(_Content(parts=(_Part(text),), role=_ROLE[m.role]))
        config = None
        if (
            request.max_tokens is not None
            or request.temperature is not None
            or request.top_p is not None
            or request.stop_sequences is not None
        ):
            config = _GenerationConfig(
                max_output_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop_sequences=request.stop_sequences,
            )
        body = _Body(
            contents=contents,
            system_instruction=_Content(parts=tuple(system)) if system else None,
            generation_config=config,
        )
        if stream:
            return HTTPRequest("POST", self._stream_url, self._stream_headers, ENCODER.encode(body))
        return HTTPRequest("POST", self._url, self._headers, ENCODER.encode(body))

    def _build_rich(self, request: LLMRequest, stream: bool) -> HTTPRequest:
        """Function calling, images, tool turns, JSON output and the seed."""
        messages = request.as_messages()
        system = [_Part(request.system)] if request.system else []
        system.extend(_Part(m.text) for m in messages if m.role == "system")
        tools = None
        config = None
        if request.tools:
            field = "parameters" if self._legacy_schema else "parametersJsonSchema"
            declarations = []
            for t in request.tools:
                declaration: dict[str, Any] = {"name": t.name}
                if t.description:
                    declaration["description"] = t.description
                declaration[field] = t.parameters
                declarations.append(declaration)
            tools = [{"functionDeclarations": declarations}]
            config = _tool_config(request.tool_choice)
        fmt = request.response_format
        schema = fmt.schema if isinstance(fmt, JSONSchema) else None
        seed = request.seed
        if seed is not None and not -_INT32 <= seed < _INT32:
            dropped(self.name, _LABEL, "a seed outside 32 bits")
            seed = None
        generation = None
        if (
            request.max_tokens is not None
            or request.temperature is not None
            or request.top_p is not None
            or request.stop_sequences is not None
            or fmt is not None
            or seed is not None
        ):
            legacy = self._legacy_schema
            generation = _RichGenerationConfig(
                max_output_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop_sequences=request.stop_sequences,
                response_mime_type=None if fmt is None else "application/json",
                response_json_schema=None if legacy else schema,
                response_schema=schema if legacy else None,
                seed=seed,
            )
        body = _RichBody(
            contents=self._contents(messages),
            system_instruction=_Content(parts=tuple(system)) if system else None,
            generation_config=generation,
            tools=tools,
            tool_config=config,
        )
        data = merge_extra_body(ENCODER.encode(body), request.extra_body)
        if stream:
            return HTTPRequest("POST", self._stream_url, self._stream_headers, data)
        return HTTPRequest("POST", self._url, self._headers, data)

    def _contents(self, messages: tuple[Message, ...]) -> list[dict[str, Any]]:
        """Turns as ``contents``: tool results become functionResponse parts of one user turn."""
        out: list[dict[str, Any]] = []
        names: dict[str, str] = {}  # call id -> function name (a tool result needs the name)
        results: list[dict[str, Any]] | None = None
        for m in messages:
            if m.role == "system":
                continue
            if m.role == "tool":
                name = m.name or names.get(m.tool_call_id or "", "")
                answer = {"name": name, "response": _response_object(m.text)}
                if results is None:
                    results = [{"functionResponse": answer}]
                    out.append({"role": "user", "parts": results})
                else:
                    results.append({"functionResponse": answer})
                continue
            results = None
            content = m.content
            if m.tool_calls:
                parts: list[dict[str, Any]] = [{"text": m.text}] if m.text else []
                for i, call in enumerate(m.tool_calls):
                    names[call.id] = call.name
                    part: dict[str, Any] = {
                        "functionCall": {"name": call.name, "args": call.arguments}
                    }
                    signature = _SIGNATURES.get(call.id)
                    if signature is None and i == 0 and self._needs_signature:
                        signature = SKIP_SIGNATURE  # a call Gemini 3 did not make (failover)
                    if signature is not None:
                        part["thoughtSignature"] = signature
                    parts.append(part)
            elif isinstance(content, str):
                parts = [{"text": content}]
            else:
                parts = [_part(p) for p in content]
            out.append({"role": _ROLE[m.role], "parts": parts})
        return out

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMResponse:
        resp = decode(_RESPONSE, body, self.name, _LABEL)
        meta = resp.usage_metadata
        use = Usage() if meta is None else meta.to_usage()
        model = resp.model_version or self._model
        if not resp.candidates:
            feedback = resp.prompt_feedback
            if feedback is not None and feedback.block_reason:
                # The prompt itself was blocked: an answer, not a failure.
                return LLMResponse(
                    content="", model=model, usage=use, finish_reason="content_filter"
                )
            raise protocol_error(self.name, _LABEL, "no candidates and no block reason")
        candidate = resp.candidates[0]
        finish = _finish(candidate.finish_reason)
        calls = _calls(candidate, self.name, resp.response_id, 0)
        if calls:
            # Gemini says STOP when the turn ends in function calls.
            return LLMResponse(
                content=_text(candidate),
                model=model,
                usage=use,
                finish_reason="tool_calls" if finish in (None, "stop") else finish,
                tool_calls=tuple(calls),
            )
        return LLMResponse(content=_text(candidate), model=model, usage=use, finish_reason=finish)

    def error_message(self, status: int, body: bytes) -> tuple[str, bool | None]:
        err = _rpc_error(body)
        if err is None:
            return body_text(body), None
        return _describe(err), _retryable_override(err)

    def rate_limits(
        self, status: int, headers: Mapping[str, str], body: bytes | None
    ) -> Observation | None:
        """Gemini sends no rate-limit headers: a 429's body says how long (``RetryInfo``)
        and whether a per-day quota ran out (``QuotaFailure``)."""
        observation = super().rate_limits(status, headers, body)
        if status != 429 or not body:
            return observation
        quota = parse_gemini_quota(body)
        if quota is None or observation is None:
            return quota or observation
        return msgspec.structs.replace(quota, retry_after=observation.retry_after)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        """Add what only Google's body says: a bad key (a 400 here) and RetryInfo's delay."""
        err = _rpc_error(body)
        if err is None:
            return error_for_status(self.name, status, body_text(body), headers)
        error = error_for_status(
            self.name, status, _describe(err), headers, retryable=_retryable_override(err)
        )
        if _key_invalid(err):
            error.disables_provider = True
        if error.retry_after is None:
            error.retry_after = _retry_delay(err)
        return error

    def health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", self._health_url, self._health_headers)

    def stream_decoder(self) -> StreamDecoder:
        return _StreamDecoder(self.name, self._model)

    def __repr__(self) -> str:
        return f"<GeminiAdapter {self.name!r} {self.base_url}>"


def _retryable_override(err: _RPCError) -> bool | None:
    # A 429 stays retryable even for an exhausted daily quota (a long retryDelay): that
    # is this provider's state, not the request's fault, so the request fails over; the
    # quota store keeps the provider out until its quota comes back.
    return False if _key_invalid(err) else None


class _StreamDecoder(StreamDecoder):
    """Each event is a whole response with only new text; the body just ends."""

    def __init__(self, name: str, model: str) -> None:
        self._name = name
        self._model = model
        self._finish: FinishReason | None = None
        self._usage: _UsageMetadata | None = None
        self._calls = 0  # function calls so far: numbers the ids made for them

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        return feed_event(self, event)

    def feed_data(self, datas: list[bytes], out: list[StreamChunk]) -> None:
        name = self._name
        provider = self.provider
        for data in datas:
            try:
                resp = _RESPONSE.decode(data)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                slow = decode_event(_RESPONSE, data, name, _LABEL)
                if slow is None:
                    continue
                resp = slow
            if resp.error is not None:
                raise self._error(resp.error)
            if resp.usage_metadata is not None:
                self._usage = resp.usage_metadata  # cumulative: keep the last
            if resp.model_version:
                self._model = resp.model_version
            candidates = resp.candidates
            if not candidates:
                feedback = resp.prompt_feedback
                if feedback is not None and feedback.block_reason:
                    self._finish = "content_filter"
                continue
            candidate = candidates[0]
            if candidate.finish_reason is not None:
                self._finish = _finish(candidate.finish_reason)
            content = candidate.content
            if content is not None:
                parts = content.parts
                if len(parts) == 1 and not parts[0].thought and parts[0].function_call is None:
                    text = parts[0].text
                else:
                    text = "".join([p.text for p in parts if not p.thought])
                    if any(p.function_call is not None for p in parts):
                        # Function calls arrive whole, one part each: nothing to assemble.
                        calls = _calls(candidate, name, resp.response_id, self._calls)
                        self._calls += len(calls)
                        out.append(
                            StreamChunk(delta=text, tool_calls=tuple(calls), provider=provider)
                        )
                        continue
                if text:
                    out.append(StreamChunk(delta=text, provider=provider))

    def finish(self) -> list[StreamChunk]:
        if self._finish is None:
            raise truncated_error(self._name, _LABEL)
        self.done = True
        if self._calls and self._finish == "stop":
            self._finish = "tool_calls"
        return [
            StreamChunk(
                finish_reason=self._finish,
                usage=None if self._usage is None else self._usage.to_usage(),
                model=self._model,
                provider=self.provider,
            )
        ]

    def _error(self, err: _RPCError) -> LLMError:
        retryable = classify_status(err.code)[0] if err.code else True
        override = _retryable_override(err)
        return LLMError(
            f"error in stream: {_describe(err)}",
            provider=self._name,
            retryable=retryable if override is None else override,
            kind="http",
            retry_after=_retry_delay(err),
        )
