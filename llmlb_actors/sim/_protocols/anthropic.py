"""Anthropic Messages as the simulator speaks it."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec

from ._base import (
    CHAT,
    DEFAULT_MESSAGES,
    HEALTH,
    NOT_FOUND,
    Answer,
    BadRequest,
    ChatInput,
    Reply,
    Route,
    StreamPlan,
    WireProtocol,
    decode_body,
    encode,
    pick_tool,
    retry_after_value,
    split_text,
    sse,
    topic_of,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._quota import QuotaState, Refusal

__all__ = ["AnthropicProtocol"]


class _Source(msgspec.Struct):
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class _Inner(msgspec.Struct):
    type: str = "text"
    text: str | None = None


class _Block(msgspec.Struct):
    type: str = "text"
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[_Inner] | None = None
    source: _Source | None = None


class _Message(msgspec.Struct):
    role: str
    content: str | list[_Block]


class _ToolDef(msgspec.Struct):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None


class _ToolChoice(msgspec.Struct):
    type: str
    name: str | None = None


class _Format(msgspec.Struct):
    type: str
    schema: dict[str, Any] = {}


class _OutputConfig(msgspec.Struct):
    format: _Format | None = None


class _Request(msgspec.Struct):
    model: str
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    max_tokens: int
    system: str | list[_Block] | None = None
    stream: bool | None = None
    tools: list[_ToolDef] | None = None
    tool_choice: _ToolChoice | None = None
    output_config: _OutputConfig | None = None


_DECODER: Final = msgspec.json.Decoder(_Request)
_TOOL_ID: Final = re.compile(r"^[a-zA-Z0-9_-]+$")
_MEDIA: Final = ("image/png", "image/jpeg", "image/gif", "image/webp")
_CHOICES: Final = {"auto": "auto", "any": "required", "none": "none"}


def _text(content: str | list[_Block] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out = []
    for b in content:
        if b.type == "text" and b.text is not None:
            out.append(b.text)
        elif b.type == "tool_result":
            inner = b.content
            out.append(
                inner if isinstance(inner, str) else " ".join(i.text or "" for i in inner or ())
            )
    return " ".join(out)


def _check(messages: list[_Message]) -> bool:
    """The API's rules on roles, tool turns and images; True if the last turn is tool results."""
    pending: set[str] = set()  # tool_use ids the next message must answer
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if message.role not in ("user", "assistant"):
            raise BadRequest(f"{where}.role: Input should be 'user' or 'assistant'")
        blocks = message.content if isinstance(message.content, list) else []
        answered = {b.tool_use_id for b in blocks if b.type == "tool_result"}
        if pending - answered:
            raise BadRequest(
                f"{where}: tool_use ids were found without tool_result blocks immediately "
                f"after: {', '.join(sorted(pending - answered))}. Each tool_use block must "
                "have a corresponding tool_result block in the next message."
            )
        if answered - pending:
            raise BadRequest(
                f"{where}: unexpected tool_use_id found in tool_result blocks: "
                f"{', '.join(sorted(str(a) for a in answered - pending))}. Each tool_result "
                "block must have a corresponding tool_use block in the previous message."
            )
        if answered and message.role != "user":
            raise BadRequest(f"{where}: tool_result blocks belong in user messages")
        pending = set()
        for j, block in enumerate(blocks):
            if block.type == "tool_use":
                if message.role != "assistant" or not block.id or not _TOOL_ID.match(block.id):
                    raise BadRequest(f"{where}.content.{j}.id: String should match pattern "
                                     "'^[a-zA-Z0-9_-]+$'")  # fmt: skip
                if not isinstance(block.input, dict):
                    raise BadRequest(f"{where}.content.{j}.input: Input should be an object")
                pending.add(block.id)
            elif block.type == "image":
                source = block.source
                ok = source is not None and (
                    (source.type == "base64" and source.media_type in _MEDIA and source.data)
                    or (source.type == "url" and source.url)
                )
                if not ok:
                    raise BadRequest(f"{where}.content.{j}.source: invalid image source")
    if pending:
        raise BadRequest("the conversation ends with tool_use blocks that have no tool_result")
    last = messages[-1]
    return isinstance(last.content, list) and any(b.type == "tool_result" for b in last.content)


_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _rfc3339(epoch: float) -> str:
    """An RFC 3339 time in whole seconds, rounded up (as the API writes its resets)."""
    when = dt.datetime.fromtimestamp(math.ceil(epoch), dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return sse(encode(payload), name.encode())


_DELTA: Final = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
)
_BLOCK_START: Final = _event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
_PING: Final = _event("ping", {"type": "ping"})
_BLOCK_STOP: Final = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_STOP: Final = _event("message_stop", {"type": "message_stop"})
_STREAM_ERROR: Final = [
    _event(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
]
_MALFORMED: Final = (
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {\n\n'
)
_WRONG_SHAPE: Final = _event(
    "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": "unexpected"}
)


class AnthropicProtocol(WireProtocol):
    """``POST /v1/messages``, ``GET /v1/models``; ``x-api-key`` (or Bearer) auth.

    Any ``anthropic-version`` value is accepted (new SDKs send new dates), but
    the header must be present, as on the real API.
    """

    id_prefix = "msg_sim"

    def __init__(self, *, name: str, model: str, api_key: str | None, created: int) -> None:
        super().__init__(name=name, model=model, api_key=api_key, created=created)
        self._key = None if api_key is None else api_key.encode()
        self._bearer = None if api_key is None else b"Bearer " + api_key.encode()
        model_obj = {
            "type": "model",
            "id": model,
            "display_name": model,
            "created_at": "2025-01-01T00:00:00Z",
        }
        self._models = encode(
            {"data": [model_obj], "has_more": False, "first_id": model, "last_id": model}
        )
        self._model = encode(model_obj)
        self._errors: dict[tuple[int, float], Answer] = {}
        self._missing_version = self._error_answer(
            400, None, "anthropic-version: header is required"
        )

    def route(self, method: bytes, path: str, query: str) -> Route:
        if path == "/v1/messages":
            return Route(CHAT) if method == b"POST" else Route(NOT_FOUND)
        if method == b"GET":
            if path == "/v1/models":
                return Route(HEALTH)
            if path.startswith("/v1/models/"):
                return Route(HEALTH, model=path[len("/v1/models/") :])
        return Route(NOT_FOUND)

    def authorized(self, headers: Mapping[bytes, bytes], query: str) -> bool:
        if self._key is None:
            return True
        return (
            headers.get(b"x-api-key") == self._key or headers.get(b"authorization") == self._bearer
        )

    def precheck(self, headers: Mapping[bytes, bytes]) -> Answer | None:
        return None if b"anthropic-version" in headers else self._missing_version

    def auth_error(self) -> Answer:
        return self._error_answer(401, None, "invalid x-api-key")

    def parse_chat(self, route: Route, body: bytes) -> ChatInput:
        req = decode_body(_DECODER, body)
        words = len(_text(req.system).split())
        topic = ""
        for message in req.messages:
            text = _text(message.content)
            words += len(text.split())
            if message.role == "user":
                topic = text
        after_result = _check(req.messages)
        choice = req.tool_choice
        named = None
        if choice is not None:
            named = choice.name if choice.type == "tool" else _CHOICES.get(choice.type)
        tools = [(t.name, t.input_schema) for t in req.tools or ()]
        fmt = req.output_config.format if req.output_config is not None else None
        return ChatInput(
            model=req.model,
            tool=pick_tool(tools, named, after_result),
            json_schema=fmt.schema if fmt is not None and fmt.type == "json_schema" else None,
            stream=bool(req.stream),
            input_words=words,
            topic=topic_of(topic),
            max_tokens=req.max_tokens,
        )

    def bad_request(self, exc: BadRequest) -> Answer:
        message = f"{exc.field}: Field required" if exc.missing and exc.field else exc.message
        return self._error_answer(400, None, message)

    def model_not_found(self, model: str) -> Answer:
        return self._error_answer(404, None, f"model: {model}")

    def not_found(self, method: bytes, path: str) -> Answer:
        return self._error_answer(404, None, "Not Found")

    def error(self, status: int, retry_after: float) -> Answer:
        key = (status, retry_after)
        answer = self._errors.get(key)
        if answer is None:
            answer = self._errors[key] = self._error_answer(status, retry_after, None)
        return answer

    def _error_answer(self, status: int, retry_after: float | None, message: str | None) -> Answer:
        kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        body = encode(
            {
                "type": "error",
                "error": {
                    "type": kind,
                    "message": message or DEFAULT_MESSAGES.get(status, "Error"),
                },
                "request_id": "req_sim",
            }
        )
        headers = b""
        if status == 429 and retry_after is not None:
            # A scripted 429 (a fault, not a quota: see `quota_error`) claims no limit.
            headers = f"retry-after: {retry_after_value(retry_after)}\r\n".encode()
        return Answer(status, headers, body)

    def health(self, route: Route) -> Answer:
        if route.model is None:
            return Answer(200, b"", self._models)
        if route.model != self.model:
            return self.model_not_found(route.model)
        return Answer(200, b"", self._model)

    def headers(self, seq: int) -> bytes:
        return b"request-id: req_sim%d\r\n" % seq

    # quotas -------------------------------------------------------------

    def quota_headers(self, state: QuotaState) -> bytes:
        wall = time.time()
        lines = ""
        if state.rpm is not None:
            lines += (
                f"anthropic-ratelimit-requests-limit: {state.rpm}\r\n"
                f"anthropic-ratelimit-requests-remaining: {state.remaining_requests}\r\n"
                f"anthropic-ratelimit-requests-reset: {_rfc3339(wall + state.reset_requests)}\r\n"
            )
        if state.tpm is not None:
            lines += (
                f"anthropic-ratelimit-tokens-limit: {state.tpm}\r\n"
                f"anthropic-ratelimit-tokens-remaining: {state.remaining_tokens}\r\n"
                f"anthropic-ratelimit-tokens-reset: {_rfc3339(wall + state.reset_tokens)}\r\n"
            )
        return lines.encode()

    def quota_error(self, refusal: Refusal, state: QuotaState) -> Answer:
        unit = {"requests": "requests per minute", "tokens": "tokens per minute"}.get(
            refusal.kind, "requests per day"
        )
        message = (
            f"This request would exceed the rate limit for your organization of "
            f"{refusal.limit} {unit}. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits."
        )
        body = encode(
            {
                "type": "error",
                "error": {"type": "rate_limit_error", "message": message},
                "request_id": "req_sim",
            }
        )
        headers = f"retry-after: {math.ceil(refusal.wait)}\r\n".encode()
        return Answer(429, headers + self.quota_headers(state), body)

    def _stop(self, reply: Reply) -> str:
        if reply.tool_calls:
            return "tool_use"
        return "max_tokens" if reply.truncated else "end_turn"

    def _content(self, reply: Reply) -> list[dict[str, Any]]:
        if not reply.tool_calls:
            return [{"type": "text", "text": reply.text}]
        return [
            {
                "type": "tool_use",
                "id": self._call_id(reply, i),
                "name": c.name,
                "input": c.arguments,
            }
            for i, c in enumerate(reply.tool_calls)
        ]

    def _call_id(self, reply: Reply, index: int) -> str:
        return f"toolu_sim{self.tag}{reply.seq}x{index}"

    def whole(self, reply: Reply) -> bytes:
        return encode(
            {
                "id": reply.id,
                "type": "message",
                "role": "assistant",
                "model": reply.model,
                "content": self._content(reply),
                "stop_reason": self._stop(reply),
                "stop_sequence": None,
                "usage": {
                    "input_tokens": reply.prompt_tokens,
                    "output_tokens": reply.completion_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            }
        )

    def stream(self, reply: Reply, chat: ChatInput) -> StreamPlan:
        start = {
            "type": "message_start",
            "message": {
                "id": reply.id,
                "type": "message",
                "role": "assistant",
                "model": reply.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": reply.prompt_tokens,
                    "output_tokens": 1,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        }
        if reply.tool_calls:
            head, deltas = self._tool_events(reply, start)
        else:
            head = [_event("message_start", start), _BLOCK_START, _PING]
            deltas = [_DELTA + encode(piece) + b"}}\n\n" for piece in reply.pieces]
        tail = [
            _BLOCK_STOP,
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop(reply), "stop_sequence": None},
                    "usage": {"output_tokens": reply.completion_tokens},
                },
            ),
            _MESSAGE_STOP,
        ]
        return StreamPlan(
            head=head,
            deltas=deltas,
            tail=tail,
            error=_STREAM_ERROR,
            malformed=_MALFORMED,
            wrong_shape=_WRONG_SHAPE,
        )

    def _tool_events(self, reply: Reply, start: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
        """tool_use blocks: start (empty input), input_json_delta fragments, stop."""
        head = [_event("message_start", start)]
        deltas: list[bytes] = []
        last = len(reply.tool_calls) - 1
        for i, call in enumerate(reply.tool_calls):
            opening = _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {
                        "type": "tool_use",
                        "id": self._call_id(reply, i),
                        "name": call.name,
                        "input": {},
                    },
                },
            )
            (head if i == 0 else deltas).append(opening)
            for piece in split_text(call.arguments_json, reply.chunks):
                delta = {"type": "input_json_delta", "partial_json": piece}
                deltas.append(
                    _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": i, "delta": delta},
                    )
                )
            if i != last:  # the tail stops the last block
                deltas.append(
                    _event("content_block_stop", {"type": "content_block_stop", "index": i})
                )
        return head, deltas

    def wrong_shape(self, reply: Reply) -> bytes:
        return encode(
            {
                "id": reply.id,
                "type": "message",
                "role": "assistant",
                "model": reply.model,
                "content": "unexpected",
                "stop_reason": None,
            }
        )
