"""Cohere Chat v2 as the simulator speaks it."""

from __future__ import annotations

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
from .openai import DONE

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CohereProtocol"]


class _ImageURL(msgspec.Struct):
    url: str


class _Part(msgspec.Struct):
    type: str = "text"
    text: str | None = None
    image_url: _ImageURL | None = None


class _CalledFunction(msgspec.Struct):
    name: str
    arguments: str


class _CallIn(msgspec.Struct):
    id: str
    function: _CalledFunction
    type: str = "function"


class _Message(msgspec.Struct):
    role: str
    content: str | list[_Part] | None = None
    tool_calls: list[_CallIn] | None = None
    tool_call_id: str | None = None


class _FunctionDef(msgspec.Struct):
    name: str
    parameters: dict[str, Any] = {}
    description: str | None = None


class _ToolDef(msgspec.Struct):
    function: _FunctionDef
    type: str = "function"


class _ResponseFormat(msgspec.Struct):
    type: str
    json_schema: dict[str, Any] | None = None


class _Request(msgspec.Struct):
    model: str
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    max_tokens: int | None = None
    tools: list[_ToolDef] | None = None
    tool_choice: str | None = None
    response_format: _ResponseFormat | None = None


_DECODER: Final = msgspec.json.Decoder(_Request)
_CHOICES: Final = {"REQUIRED": "required", "NONE": "none"}


def _check(messages: list[_Message]) -> bool:
    """Tool turns answer earlier calls; image parts have a URL. True if the last is a result."""
    called: set[str] = set()
    for i, message in enumerate(messages):
        if message.role not in ("system", "user", "assistant", "tool"):
            raise BadRequest(f"messages[{i}].role: invalid role {message.role!r}")
        for call in message.tool_calls or ():
            called.add(call.id)
        if message.role == "tool" and message.tool_call_id not in called:
            raise BadRequest(f"messages[{i}]: tool_call_id {message.tool_call_id!r} not found "
                             "in previous tool calls")  # fmt: skip
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if part.type == "image_url" and part.image_url is None:
                    raise BadRequest(f"messages[{i}].content[{j}].image_url is required")
    return messages[-1].role == "tool"


def _text(content: str | list[_Part] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(p.text for p in content if p.type == "text" and p.text is not None)


def _event(payload: dict[str, Any]) -> bytes:
    return sse(encode(payload), str(payload["type"]).encode())


_DELTA: Final = (
    b"event: content-delta\n"
    b'data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":'
)
_CONTENT_START: Final = _event(
    {
        "type": "content-start",
        "index": 0,
        "delta": {"message": {"content": {"type": "text", "text": ""}}},
    }
)
_CONTENT_END: Final = _event({"type": "content-end", "index": 0})
_STREAM_ERROR: Final = [
    _event(
        {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": DEFAULT_MESSAGES[500]}}
    ),
    DONE,
]
_MALFORMED: Final = (
    b'event: content-delta\ndata: {"type": "content-delta", "index": 0, "delta": {\n\n'
)
_WRONG_SHAPE: Final = _event({"type": "content-delta", "index": 0, "delta": "unexpected"})


class CohereProtocol(WireProtocol):
    """``POST /v2/chat``, ``GET /v1/models``; Bearer auth; errors are ``{"message": ...}``.

    Stream events carry an ``event:`` line equal to their ``type``; the stream
    ends with ``message-end`` and then ``data: [DONE]``.
    """

    id_prefix = "sim-chat-"

    def __init__(self, *, name: str, model: str, api_key: str | None, created: int) -> None:
        super().__init__(name=name, model=model, api_key=api_key, created=created)
        self._bearer = None if api_key is None else b"Bearer " + api_key.encode()
        model_obj = {
            "name": model,
            "endpoints": ["chat"],
            "finetuned": False,
            "context_length": 128000,
            "default_endpoints": ["chat"],
        }
        self._models = encode({"models": [model_obj], "next_page_token": None})
        self._model = encode(model_obj)
        self._check_key = encode(
            {"valid": True, "organization_id": "sim-org", "owner_id": "sim-owner"}
        )

    def route(self, method: bytes, path: str, query: str) -> Route:
        if path == "/v2/chat":
            return Route(CHAT) if method == b"POST" else Route(NOT_FOUND)
        if method == b"GET":
            if path == "/v1/models":
                return Route(HEALTH)
            if path.startswith("/v1/models/"):
                return Route(HEALTH, model=path[len("/v1/models/") :])
        if method == b"POST" and path == "/v1/check-api-key":
            return Route(HEALTH, model="")
        return Route(NOT_FOUND)

    def authorized(self, headers: Mapping[bytes, bytes], query: str) -> bool:
        return self._bearer is None or headers.get(b"authorization") == self._bearer

    def auth_error(self) -> Answer:
        return Answer(401, b"", b'{"message":"invalid api token"}')

    def parse_chat(self, route: Route, body: bytes) -> ChatInput:
        req = decode_body(_DECODER, body)
        words = 0
        topic = ""
        for message in req.messages:
            text = _text(message.content)
            words += len(text.split())
            if message.role in ("user", "tool"):
                topic = text
        after_result = _check(req.messages)
        tools = [(t.function.name, t.function.parameters) for t in req.tools or ()]
        fmt = req.response_format
        json_on = fmt is not None and fmt.type == "json_object"
        return ChatInput(
            model=req.model,
            tool=pick_tool(tools, _CHOICES.get(req.tool_choice or ""), after_result),
            json_schema=fmt.json_schema if fmt is not None and json_on else None,
            json_mode=json_on and fmt is not None and fmt.json_schema is None,
            stream=bool(req.stream),
            input_words=words,
            topic=topic_of(topic),
            max_tokens=req.max_tokens,
        )

    def _message(self, status: int, message: str, headers: bytes = b"") -> Answer:
        return Answer(status, headers, encode({"message": message}))

    def bad_request(self, exc: BadRequest) -> Answer:
        return self._message(400, f"invalid request: {exc.message}")

    def model_not_found(self, model: str) -> Answer:
        return self._message(
            404,
            f"model '{model}' not found, make sure the correct model ID was used and that you "
            "have access to the model.",
        )

    def not_found(self, method: bytes, path: str) -> Answer:
        return self._message(404, "Not Found")

    def error(self, status: int, retry_after: float) -> Answer:
        if status == 401:
            return self.auth_error()
        headers = b""
        if status == 429:
            headers = f"retry-after: {retry_after_value(retry_after)}\r\n".encode()
        return self._message(status, DEFAULT_MESSAGES.get(status, "Error."), headers)

    def health(self, route: Route) -> Answer:
        if route.model is None:
            return Answer(200, b"", self._models)
        if route.model == "":
            return Answer(200, b"", self._check_key)
        if route.model != self.model:
            return self.model_not_found(route.model)
        return Answer(200, b"", self._model)

    # answers ------------------------------------------------------------

    def _finish(self, reply: Reply) -> str:
        if reply.tool_calls:
            return "TOOL_CALL"
        return "MAX_TOKENS" if reply.truncated else "COMPLETE"

    def _call(self, reply: Reply, index: int) -> dict[str, Any]:
        call = reply.tool_calls[index]
        return {
            "id": f"{call.name}_sim{self.tag}{reply.seq}x{index}",
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json},
        }

    def _plan(self, reply: Reply) -> str:
        return f"I will use {reply.tool_calls[0].name}."

    def _usage(self, reply: Reply) -> dict[str, Any]:
        counts = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}
        return {"billed_units": counts, "tokens": dict(counts)}

    def whole(self, reply: Reply) -> bytes:
        return encode(
            {
                "id": reply.id,
                "message": (
                    {
                        "role": "assistant",
                        "tool_plan": self._plan(reply),
                        "tool_calls": [self._call(reply, i) for i in range(len(reply.tool_calls))],
                    }
                    if reply.tool_calls
                    else {"role": "assistant", "content": [{"type": "text", "text": reply.text}]}
                ),
                "finish_reason": self._finish(reply),
                "usage": self._usage(reply),
            }
        )

    def stream(self, reply: Reply, chat: ChatInput) -> StreamPlan:
        head = [
            _event(
                {
                    "id": reply.id,
                    "type": "message-start",
                    "delta": {
                        "message": {
                            "role": "assistant",
                            "content": [],
                            "tool_plan": "",
                            "tool_calls": [],
                            "citations": [],
                        }
                    },
                }
            ),
            _CONTENT_START,
        ]
        deltas = [_DELTA + encode(piece) + b"}}}}\n\n" for piece in reply.pieces]
        end = _CONTENT_END
        if reply.tool_calls:
            head[1:], deltas = self._tool_events(reply)
            end = _event({"type": "tool-call-end", "index": len(reply.tool_calls) - 1})
        tail = [
            end,
            _event(
                {
                    "type": "message-end",
                    "delta": {"finish_reason": self._finish(reply), "usage": self._usage(reply)},
                }
            ),
            DONE,
        ]
        return StreamPlan(
            head=head,
            deltas=deltas,
            tail=tail,
            error=_STREAM_ERROR,
            malformed=_MALFORMED,
            wrong_shape=_WRONG_SHAPE,
        )

    def _tool_events(self, reply: Reply) -> tuple[list[bytes], list[bytes]]:
        """tool-plan-delta, then per call: tool-call-start, argument deltas, tool-call-end."""
        plan = {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": self._plan(reply)}}}
        head = [_event(plan)]
        deltas: list[bytes] = []
        for i in range(len(reply.tool_calls)):
            call = self._call(reply, i)
            arguments = call["function"]["arguments"]
            call["function"] = dict(call["function"], arguments="")
            start = {
                "type": "tool-call-start",
                "index": i,
                "delta": {"message": {"tool_calls": call}},
            }
            deltas.append(_event(start))
            for piece in split_text(arguments, reply.chunks):
                fragment = {"tool_calls": {"function": {"arguments": piece}}}
                deltas.append(
                    _event({"type": "tool-call-delta", "index": i, "delta": {"message": fragment}})
                )
            if i != len(reply.tool_calls) - 1:
                deltas.append(_event({"type": "tool-call-end", "index": i}))
        return head, deltas

    def wrong_shape(self, reply: Reply) -> bytes:
        return encode({"id": reply.id, "message": "unexpected", "finish_reason": None})
