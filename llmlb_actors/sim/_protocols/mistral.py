"""Mistral chat completions: OpenAI-shaped, with its own streams and error bodies."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import msgspec

from ._base import (
    DEFAULT_MESSAGES,
    Answer,
    BadRequest,
    ChatInput,
    Reply,
    Route,
    StreamPlan,
    decode_body,
    encode,
    pick_tool,
    retry_after_value,
    sse,
    topic_of,
)
from .openai import (
    DONE,
    MALFORMED_CHUNK,
    WRONG_SHAPE_CHUNK,
    OpenAIProtocol,
    _Message,
    _NamedChoice,
    _ResponseFormat,
    _ToolDef,
    check_conversation,
    json_request,
    text_of_content,
)

__all__ = ["MistralProtocol"]


class _Request(msgspec.Struct):
    model: str
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    max_tokens: int | None = None
    tools: list[_ToolDef] | None = None
    tool_choice: str | _NamedChoice | None = None
    response_format: _ResponseFormat | None = None


_DECODER: Final = msgspec.json.Decoder(_Request)
_CALL_ID: Final = re.compile(r"^[a-zA-Z0-9]{9}$")


class InvalidToolCallId(BadRequest):
    """Mistral's own 400 for a tool-call id that is not nine letters or digits."""


_TYPES: Final = {
    400: "invalid_request_error",
    403: "forbidden",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "request_too_large",
    429: "rate_limited",
    431: "invalid_request_error",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
    529: "service_overloaded",
}

_STREAM_ERROR: Final = [
    sse(
        encode(
            {
                "object": "error",
                "message": DEFAULT_MESSAGES[500],
                "type": "internal_server_error",
                "param": None,
                "code": "500",
            }
        )
    )
]


class MistralProtocol(OpenAIProtocol):
    """``POST /v1/chat/completions`` on Mistral.

    Unlike OpenAI: usage always comes with ``finish_reason`` on the last
    content chunk (no separate usage chunk), 401 is ``{"detail": "Unauthorized"}``
    and invalid bodies are FastAPI 422s with a ``detail`` list.
    """

    owned_by = "mistralai"
    id_prefix = "cmpl-sim"

    def model_object(self, model: str, created: int) -> dict[str, Any]:
        # Mistral's model cards carry a ``type`` discriminator ("base" or "fine-tuned")
        # and ``capabilities``: its SDK rejects an OpenAI-shaped entry without them.
        return {
            "id": model,
            "object": "model",
            "created": created,
            "owned_by": self.owned_by,
            "capabilities": {
                "completion_chat": True,
                "completion_fim": False,
                "function_calling": True,
                "fine_tuning": False,
                "vision": False,
                "classification": False,
            },
            "name": model,
            "description": "Simulated model",
            "max_context_length": 32768,
            "aliases": [],
            "deprecation": None,
            "default_model_temperature": 0.3,
            "type": "base",
        }

    def parse_chat(self, route: Route, body: bytes) -> ChatInput:
        req = decode_body(_DECODER, body)
        words = 0
        topic = ""
        for message in req.messages:
            text = text_of_content(message.content)
            words += len(text.split())
            if message.role in ("user", "tool"):
                topic = text
            ids = [c.id for c in message.tool_calls or ()]
            if message.tool_call_id is not None:
                ids.append(message.tool_call_id)
            for call_id in ids:
                if not _CALL_ID.match(call_id):
                    raise InvalidToolCallId(
                        f"Tool call id was {call_id} but must be a-z, A-Z, 0-9, with a length of 9."
                    )
        after_result = check_conversation(req.messages)
        schema, json_mode = json_request(req.response_format)
        choice = req.tool_choice
        named = choice.function.name if isinstance(choice, _NamedChoice) else choice
        if named == "any":
            named = "required"  # Mistral's synonym
        tools = [(t.function.name, t.function.parameters) for t in req.tools or ()]
        return ChatInput(
            model=req.model,
            tool=pick_tool(tools, named, after_result),
            json_schema=schema,
            json_mode=json_mode,
            stream=bool(req.stream),
            input_words=words,
            topic=topic_of(topic),
            max_tokens=req.max_tokens,
        )

    def auth_error(self) -> Answer:
        return Answer(401, b"", b'{"detail":"Unauthorized"}')

    def bad_request(self, exc: BadRequest) -> Answer:
        if isinstance(exc, InvalidToolCallId):
            return self._mistral_error(400, exc.message, "invalid_request_message", "3230")
        loc: list[str | int] = ["body"]
        if exc.field:
            loc.extend(exc.field.replace("[", ".").replace("]", "").split("."))
        detail = {
            "type": "missing" if exc.missing else "value_error",
            "loc": [int(p) if isinstance(p, str) and p.isdigit() else p for p in loc],
            "msg": "Field required" if exc.missing else exc.message,
            "input": None,
        }
        return Answer(422, b"", encode({"detail": [detail]}))

    def model_not_found(self, model: str) -> Answer:
        # A 400 there, not the 404 of the other APIs.
        return self._mistral_error(400, f"Invalid model: {model}", "invalid_model", "1500")

    def not_found(self, method: bytes, path: str) -> Answer:
        return Answer(404, b"", b'{"detail":"Not Found"}')

    def error(self, status: int, retry_after: float) -> Answer:
        if status == 401:
            return self.auth_error()
        if status == 422:
            return Answer(
                422,
                b"",
                encode(
                    {
                        "detail": [
                            {
                                "type": "value_error",
                                "loc": ["body"],
                                "msg": DEFAULT_MESSAGES[422],
                                "input": None,
                            }
                        ]
                    }
                ),
            )
        answer = self._mistral_error(status, DEFAULT_MESSAGES.get(status, "Error."), None, None)
        if status == 429:
            headers = (
                f"retry-after: {retry_after_value(retry_after)}\r\n"
                "x-ratelimitbysize-limit-minute: 500000\r\n"
                "x-ratelimitbysize-remaining-minute: 0\r\n"
                f"ratelimitbysize-reset: {max(1, round(retry_after))}\r\n"
            ).encode()
            answer = answer._replace(headers=headers)
        return answer

    def _mistral_error(
        self, status: int, message: str, kind: str | None, code: str | None
    ) -> Answer:
        body = {
            "object": "error",
            "message": message,
            "type": kind or _TYPES.get(status, "error"),
            "param": None,
            "code": code if code is not None else str(status),
        }
        return Answer(status, b"", encode(body))

    def headers(self, seq: int) -> bytes:
        return b""

    def usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "prompt_tokens": reply.prompt_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "completion_tokens": reply.completion_tokens,
        }

    def whole(self, reply: Reply) -> bytes:
        return encode(
            {
                "id": reply.id,
                "object": "chat.completion",
                "created": self.created,
                "model": reply.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "" if reply.tool_calls else reply.text,
                            "tool_calls": self.tool_calls(reply) or None,
                            "prefix": False,
                        },
                        "finish_reason": self.finish(reply),
                    }
                ],
                "usage": self.usage(reply),
            }
        )

    def call_id(self, reply: Reply, index: int) -> str:
        return f"{self.tag}{reply.seq % 10**5:05d}{index % 10}"

    def stream(self, reply: Reply, chat: ChatInput) -> StreamPlan:
        prefix = self.chunk_prefix(reply)
        end = b',"finish_reason":null}]}\n\n'
        if reply.tool_calls:
            # Mistral streams tool calls whole, on the finishing chunk with the usage.
            last = (
                prefix
                + encode({"content": "", "tool_calls": self.tool_calls(reply)})
                + b',"finish_reason":"tool_calls"}],"usage":'
                + encode(self.usage(reply))
                + b"}\n\n"
            )
            return StreamPlan(
                head=[prefix + b'{"role":"assistant","content":""}' + end],
                deltas=[last],
                tail=[DONE],
                error=_STREAM_ERROR,
                malformed=MALFORMED_CHUNK,
                wrong_shape=WRONG_SHAPE_CHUNK,
            )
        deltas = [prefix + b'{"content":' + encode(piece) + b"}" + end for piece in reply.pieces]
        deltas[-1] = (
            prefix
            + b'{"content":'
            + encode(reply.pieces[-1])
            + b'},"finish_reason":"'
            + self.finish(reply).encode()
            + b'"}],"usage":'
            + encode(self.usage(reply))
            + b"}\n\n"
        )
        return StreamPlan(
            head=[prefix + b'{"role":"assistant","content":""}' + end],
            deltas=deltas,
            tail=[DONE],
            error=_STREAM_ERROR,
            malformed=MALFORMED_CHUNK,
            wrong_shape=WRONG_SHAPE_CHUNK,
        )
