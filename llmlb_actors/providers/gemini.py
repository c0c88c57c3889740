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
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote

import msgspec

from .._errors import LLMError
from .._models import FinishReason, LLMRequest, LLMResponse, StreamChunk, Usage
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


# ---- response views -------------------------------------------------------------------------


class _RPart(msgspec.Struct):
    text: str = ""
    thought: bool = False


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

    def to_usage(self) -> Usage:
        # Thinking tokens are billed as output, so they count as completion tokens
        # (as OpenAI counts reasoning tokens); then prompt + completion == total.
        return usage(
            self.prompt_token_count,
            self.candidates_token_count + self.thoughts_token_count,
            self.total_token_count,
        )


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

    def build_request(self, request: LLMRequest, *, stream: bool) -> HTTPRequest:
        system: list[_Part] = [_Part(request.system)] if request.system else []
        contents: list[_Content] = []
        for m in request.as_messages():
            if m.role == "system":
                system.append(_Part(m.content))
            else:
                contents.append(_Content(parts=(_Part(m.content),), role=_ROLE[m.role]))
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
        return LLMResponse(
            content=_text(candidate),
            model=model,
            usage=use,
            finish_reason=_finish(candidate.finish_reason),
        )

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

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        return feed_event(self, event)

    def feed_data(self, datas: list[bytes], out: list[StreamChunk]) -> None:
        name = self._name
        provider = self.provider
        for data in datas:
            try:
                resp = _RESPONSE.decode(data)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                if not data.strip():
                    continue
                # Invalid UTF-8 reads as the replacement character; anything else raises.
                resp = decode(_RESPONSE, data.decode("utf-8", "replace"), name, _LABEL)
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
                if len(parts) == 1 and not parts[0].thought:
                    text = parts[0].text
                else:
                    text = "".join([p.text for p in parts if not p.thought])
                if text:
                    out.append(StreamChunk(delta=text, provider=provider))

    def finish(self) -> list[StreamChunk]:
        if self._finish is None:
            raise truncated_error(self._name, _LABEL)
        self.done = True
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
