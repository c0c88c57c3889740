"""Google Gemini generateContent / streamGenerateContent as the simulator speaks it."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Annotated, Any, Final
from urllib.parse import unquote

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
    sse,
    topic_of,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._quota import QuotaState, Refusal

__all__ = ["GeminiProtocol"]


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: dict[str, Any] | None = None


class _FunctionResponse(msgspec.Struct):
    name: str = ""
    response: dict[str, Any] | None = None


class _Blob(msgspec.Struct, rename="camel"):
    mime_type: str = ""
    data: str = ""


class _FileData(msgspec.Struct, rename="camel"):
    file_uri: str = ""
    mime_type: str | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool | None = None
    function_call: _FunctionCall | None = None
    function_response: _FunctionResponse | None = None
    inline_data: _Blob | None = None
    file_data: _FileData | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []
    role: str | None = None


class _GenerationConfig(msgspec.Struct, rename="camel"):
    max_output_tokens: int | None = None
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    response_json_schema: dict[str, Any] | None = None


class _Declaration(msgspec.Struct, rename="camel"):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class _Tool(msgspec.Struct, rename="camel"):
    function_declarations: list[_Declaration] = []


class _CallingConfig(msgspec.Struct, rename="camel"):
    mode: str = "AUTO"
    allowed_function_names: list[str] | None = None


class _ToolConfig(msgspec.Struct, rename="camel"):
    function_calling_config: _CallingConfig | None = None


class _Request(msgspec.Struct, rename="camel"):
    contents: Annotated[list[_Content], msgspec.Meta(min_length=1)]
    system_instruction: _Content | None = None
    generation_config: _GenerationConfig | None = None
    tools: list[_Tool] | None = None
    tool_config: _ToolConfig | None = None


_DECODER: Final = msgspec.json.Decoder(_Request)

# Proto3 JSON: the API takes snake_case field names as well as camelCase, and the SDK
# mixes them (``inlineData: {mime_type, data}``, ``parameters_json_schema``). Such a
# body is rewritten to camelCase first, leaving the caller's own objects untouched.
_SNAKE_KEY: Final = re.compile(rb'"[a-z][a-z0-9]*_[a-z0-9_]*"\s*:')
_OPAQUE: Final = frozenset(
    {"args", "response", "parameters", "parametersJsonSchema", "responseSchema",
     "responseJsonSchema", "default", "example", "enum"}
)  # fmt: skip


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _camel_keys(value: Any) -> Any:
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        name = _camel(key) if isinstance(key, str) else key
        out[name] = item if name in _OPAQUE else _camel_keys(item)
    return out


def _decode(body: bytes) -> _Request:
    if not _SNAKE_KEY.search(body):
        return decode_body(_DECODER, body)
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return decode_body(_DECODER, body)  # the same 400 as any broken body
    return decode_body(_DECODER, msgspec.json.encode(_camel_keys(raw)))


def _check(req: _Request) -> bool:
    """The API's rules on parts and declarations; True if the last turn is function results."""
    for i, content in enumerate(req.contents):
        if content.role not in (None, "user", "model", "function"):
            raise BadRequest(f"Please use a valid role: user, model. (contents[{i}].role)")
        for j, part in enumerate(content.parts):
            where = f"contents[{i}].parts[{j}]"
            if part.function_response is not None and not part.function_response.name:
                raise BadRequest(f"* GenerateContentRequest.{where}.function_response.name: "
                                 "Name cannot be empty.")  # fmt: skip
            if part.function_call is not None and not part.function_call.name:
                raise BadRequest(f"* GenerateContentRequest.{where}.function_call.name: "
                                 "Name cannot be empty.")  # fmt: skip
            blob = part.inline_data
            if blob is not None and (not blob.mime_type or not blob.data):
                raise BadRequest(f"* GenerateContentRequest.{where}.inline_data: "
                                 "mime_type and data are required.")  # fmt: skip
    for tool in req.tools or ():
        for d in tool.function_declarations:
            if d.parameters is not None and d.parameters_json_schema is not None:
                raise BadRequest(f"function_declarations[{d.name}]: parameters and "
                                 "parameters_json_schema are mutually exclusive")  # fmt: skip
    last = req.contents[-1]
    return any(p.function_response is not None for p in last.parts)


def _choice(req: _Request) -> str | None:
    config = req.tool_config.function_calling_config if req.tool_config is not None else None
    if config is None:
        return None
    if config.mode == "NONE":
        return "none"
    if config.mode in ("ANY", "VALIDATED"):
        names = config.allowed_function_names or []
        return names[0] if len(names) == 1 else "required"
    return "auto"


_STATUSES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    431: "INVALID_ARGUMENT",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    529: "UNAVAILABLE",
}

_MESSAGES: Final = {
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}

_VERSIONS: Final = ("/v1beta/", "/v1/")
_KEY_MESSAGE: Final = "API key not valid. Please pass a valid API key."


def _text(content: _Content | None) -> str:
    if content is None:
        return ""
    out = []
    for p in content.parts:
        if p.text is not None and not p.thought:
            out.append(p.text)
        elif p.function_response is not None:
            out.append(encode(p.function_response.response or {}).decode())
    return " ".join(out)


_QUOTA_IDS: Final = {
    "requests": ("generate_requests_per_model", "GenerateRequestsPerMinutePerProjectPerModel"),
    "tokens": ("generate_content_input_token_count", "GenerateContentInputTokensPerModelPerMinute"),
    "day": ("generate_requests_per_model_per_day", "GenerateRequestsPerDayPerProjectPerModel"),
}


def _delay(seconds: float) -> str:
    """A google.protobuf.Duration in JSON: ``27s`` or ``3.700s``."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:.3f}s"


_STREAM_ERROR: Final = [
    sse(encode({"error": {"code": 500, "message": _MESSAGES[500], "status": "INTERNAL"}}))
]
_MALFORMED: Final = b'data: {"candidates": [{"content": {"parts": [{"text": \n\n'
_WRONG_SHAPE: Final = sse(encode({"candidates": "unexpected", "responseId": "sim"}))


class GeminiProtocol(WireProtocol):
    """``POST /{v1beta,v1}/models/{model}:generateContent`` and ``:streamGenerateContent``.

    Auth is ``x-goog-api-key`` or ``?key=``; a bad key is a 400
    ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``, as on the real API.
    Streams (``alt=sse``) are complete responses per event and end by the
    body ending, with no sentinel; without ``alt=sse`` they are a JSON array.
    """

    id_prefix = "sim-resp-"

    content_type = b"application/json; charset=UTF-8"

    def __init__(self, *, name: str, model: str, api_key: str | None, created: int) -> None:
        super().__init__(name=name, model=model, api_key=api_key, created=created)
        # The API names no tool call: adapters make ids from the response id, which is
        # unique on the real API, so it is unique per simulated provider here too.
        self.id_prefix = f"sim-resp-{self.tag}-"
        self._key = None if api_key is None else api_key.encode()
        self._query_key = None if api_key is None else f"key={api_key}"
        model_obj = {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "description": "Simulated model",
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }
        self._models = encode({"models": [model_obj]})
        self._model = encode(model_obj)
        self._errors: dict[tuple[int, float], Answer] = {}
        self._auth_error = self._error_answer(
            400,
            _KEY_MESSAGE,
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": _KEY_MESSAGE,
                },
            ],
        )

    def route(self, method: bytes, path: str, query: str) -> Route:
        for version in _VERSIONS:
            if path.startswith(version):
                rest = path[len(version) :]
                break
        else:
            return Route(NOT_FOUND)
        if rest == "models":
            return Route(HEALTH) if method == b"GET" else Route(NOT_FOUND)
        if not rest.startswith("models/"):
            return Route(NOT_FOUND)
        target = unquote(rest[len("models/") :])
        model, sep, verb = target.partition(":")
        if not sep:
            return Route(HEALTH, model=model) if method == b"GET" else Route(NOT_FOUND)
        if method != b"POST":
            return Route(NOT_FOUND)
        if verb == "generateContent":
            return Route(CHAT, model=model)
        if verb == "streamGenerateContent":
            return Route(CHAT, model=model, stream=True, sse="alt=sse" in query.split("&"))
        return Route(NOT_FOUND)

    def authorized(self, headers: Mapping[bytes, bytes], query: str) -> bool:
        if self._key is None:
            return True
        return headers.get(b"x-goog-api-key") == self._key or (
            bool(query) and self._query_key in query.split("&")
        )

    def auth_error(self) -> Answer:
        return self._auth_error

    def parse_chat(self, route: Route, body: bytes) -> ChatInput:
        req = _decode(body)
        words = len(_text(req.system_instruction).split())
        topic = ""
        for content in req.contents:
            text = _text(content)
            words += len(text.split())
            if content.role in (None, "user"):
                topic = text
        config = req.generation_config
        after_result = _check(req)
        tools = [
            (d.name, d.parameters_json_schema or d.parameters or {})
            for tool in req.tools or ()
            for d in tool.function_declarations
        ]
        json_schema = None
        json_mode = False
        if config is not None and config.response_mime_type == "application/json":
            json_schema = config.response_json_schema or config.response_schema
            json_mode = json_schema is None
        return ChatInput(
            model=route.model or "",
            tool=pick_tool(tools, _choice(req), after_result),
            json_schema=json_schema,
            json_mode=json_mode,
            stream=route.stream,
            input_words=words,
            topic=topic_of(topic),
            max_tokens=None if config is None else config.max_output_tokens,
        )

    def bad_request(self, exc: BadRequest) -> Answer:
        message = (
            f"* GenerateContentRequest.{exc.field}: required field is not set"
            if exc.missing and exc.field
            else f"Invalid JSON payload received. {exc.message}"
        )
        return self._error_answer(400, message, [])

    def model_not_found(self, model: str) -> Answer:
        message = (
            f"models/{model} is not found for API version v1beta, or is not supported for "
            "generateContent. Call ListModels to see the list of available models and their "
            "supported methods."
        )
        return self._error_answer(404, message, [])

    def not_found(self, method: bytes, path: str) -> Answer:
        return self._error_answer(404, f"Method not found: {path}", [])

    def error(self, status: int, retry_after: float) -> Answer:
        key = (status, retry_after)
        answer = self._errors.get(key)
        if answer is None:
            details: list[dict[str, Any]] = []
            if status == 429:
                details = [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/"
                                "generate_content_free_tier_requests",
                                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                                "quotaDimensions": {"model": self.model, "location": "global"},
                                "quotaValue": "10",
                            }
                        ],
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.Help",
                        "links": [
                            {
                                "description": "Learn more about Gemini API quotas",
                                "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                            }
                        ],
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": _delay(retry_after),
                    },
                ]
            message = _MESSAGES.get(status, DEFAULT_MESSAGES.get(status, "Error."))
            answer = self._errors[key] = self._error_answer(status, message, details)
        return answer

    def quota_error(self, refusal: Refusal, state: QuotaState) -> Answer:
        metric, quota_id = _QUOTA_IDS[refusal.kind]
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
                        "quotaId": quota_id,
                        "quotaDimensions": {"model": self.model, "location": "global"},
                        "quotaValue": str(refusal.limit),
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": _delay(math.ceil(refusal.wait * 1000) / 1000),
            },
        ]
        return self._error_answer(429, _MESSAGES[429], details)

    def _error_answer(self, status: int, message: str, details: list[dict[str, Any]]) -> Answer:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _STATUSES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"),
        }
        if details:
            error["details"] = details
        return Answer(status, b"", encode({"error": error}))

    def health(self, route: Route) -> Answer:
        if route.model is None:
            return Answer(200, b"", self._models)
        if route.model != self.model:
            return self.model_not_found(route.model)
        return Answer(200, b"", self._model)

    # answers ------------------------------------------------------------

    def _response(self, reply: Reply, text: str, tokens: int, finish: bool) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": text}]
        if reply.tool_calls:
            # Like the API before it gave call ids: name and args only.
            parts = [
                {"functionCall": {"name": c.name, "args": c.arguments}} for c in reply.tool_calls
            ]
        candidate: dict[str, Any] = {
            "content": {"parts": parts, "role": "model"},
        }
        if finish:
            candidate["finishReason"] = "MAX_TOKENS" if reply.truncated else "STOP"
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": reply.prompt_tokens,
                "candidatesTokenCount": tokens,
                "totalTokenCount": reply.prompt_tokens + tokens,
            },
            "modelVersion": reply.model,
            "responseId": reply.id,
        }

    def whole(self, reply: Reply) -> bytes:
        return encode(self._response(reply, reply.text, reply.completion_tokens, True))

    def _chunks(self, reply: Reply) -> list[dict[str, Any]]:
        last = len(reply.pieces) - 1
        return [
            self._response(reply, piece, reply.cumulative[i], i == last)
            for i, piece in enumerate(reply.pieces)
        ]

    def stream(self, reply: Reply, chat: ChatInput) -> StreamPlan:
        if reply.tool_calls:
            # Function calls come whole, in one event.
            whole = self._response(reply, "", reply.completion_tokens, True)
            return StreamPlan(
                head=[],
                deltas=[sse(encode(whole))],
                tail=[],
                error=_STREAM_ERROR,
                malformed=_MALFORMED,
                wrong_shape=_WRONG_SHAPE,
            )
        pieces = reply.pieces
        cumulative = reply.cumulative
        prompt = reply.prompt_tokens
        suffix = b',"modelVersion":' + encode(reply.model) + b',"responseId":' + encode(reply.id)
        finish = b',"finishReason":"' + (b"MAX_TOKENS" if reply.truncated else b"STOP") + b'"'
        last = len(pieces) - 1
        deltas = [
            b'data: {"candidates":[{"content":{"parts":[{"text":'
            + encode(piece)
            + b'}],"role":"model"}'
            + (finish if i == last else b"")
            + b',"index":0}],"usageMetadata":{"promptTokenCount":%d,"candidatesTokenCount":%d,'
            b'"totalTokenCount":%d}'
            % (prompt, cumulative[i], prompt + cumulative[i])
            + suffix
            + b"}\n\n"
            for i, piece in enumerate(pieces)
        ]
        return StreamPlan(
            head=[],
            deltas=deltas,
            tail=[],
            error=_STREAM_ERROR,
            malformed=_MALFORMED,
            wrong_shape=_WRONG_SHAPE,
        )

    def json_array(self, reply: Reply, chat: ChatInput) -> bytes:
        if reply.tool_calls:
            return encode([self._response(reply, "", reply.completion_tokens, True)])
        return encode(self._chunks(reply))

    def wrong_shape(self, reply: Reply) -> bytes:
        return encode(
            {"candidates": [{"content": "unexpected", "index": 0}], "responseId": reply.id}
        )
