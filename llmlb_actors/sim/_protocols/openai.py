"""OpenAI Chat Completions (and OpenAI-compatible servers) as the simulator speaks it."""

from __future__ import annotations

import math
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
    retry_after_value,
    split_text,
    sse,
    topic_of,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._quota import QuotaState, Refusal

__all__ = ["AzureOpenAIProtocol", "OpenAIProtocol", "go_duration", "text_of_content"]


class _ImageURL(msgspec.Struct):
    url: str


class _Part(msgspec.Struct):
    type: str = "text"
    text: str | None = None
    # Mistral also takes the URL as a bare string.
    image_url: _ImageURL | str | None = None


class _CalledFunction(msgspec.Struct):
    name: str
    arguments: str | dict[str, Any]


class _CallIn(msgspec.Struct):
    id: str
    function: _CalledFunction
    type: str = "function"


class _Message(msgspec.Struct):
    role: str
    content: str | list[_Part] | None = None
    tool_calls: list[_CallIn] | None = None
    tool_call_id: str | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _FunctionDef(msgspec.Struct):
    name: str
    parameters: dict[str, Any] = {}
    description: str | None = None


class _ToolDef(msgspec.Struct):
    function: _FunctionDef
    type: str = "function"


class _ChoiceFunction(msgspec.Struct):
    name: str


class _NamedChoice(msgspec.Struct):
    function: _ChoiceFunction
    type: str = "function"


class _JSONSchemaFormat(msgspec.Struct):
    name: str
    schema: dict[str, Any] = {}
    strict: bool | None = None


class _ResponseFormat(msgspec.Struct):
    type: str
    json_schema: _JSONSchemaFormat | None = None


class _Request(msgspec.Struct):
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    model: str = ""
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    tools: list[_ToolDef] | None = None
    tool_choice: str | _NamedChoice | None = None
    response_format: _ResponseFormat | None = None


_DECODER: Final = msgspec.json.Decoder(_Request)


def check_conversation(messages: list[_Message]) -> bool:
    """The rules the API enforces on tool turns and images; True if the last turn is a result.

    Raises `BadRequest` (the API's 400) for a tool message without an id, or one
    that answers no call of an earlier assistant message, and for an image part
    without a URL.
    """
    called: set[str] = set()
    for i, message in enumerate(messages):
        for call in message.tool_calls or ():
            called.add(call.id)
        if message.role == "tool":
            if not message.tool_call_id:
                raise BadRequest(
                    f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                    field=f"messages[{i}].tool_call_id",
                )
            if message.tool_call_id not in called:
                raise BadRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceding message with 'tool_calls'.",
                    field=f"messages[{i}].role",
                )
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if part.type == "image_url" and part.image_url is None:
                    raise BadRequest(
                        f"Missing required parameter: 'messages[{i}].content[{j}].image_url'.",
                        field=f"messages[{i}].content[{j}].image_url",
                    )
    return messages[-1].role == "tool"


def tools_of(req: _Request) -> list[tuple[str, dict[str, Any]]]:
    return [(t.function.name, t.function.parameters) for t in req.tools or ()]


def choice_of(req: _Request) -> str | None:
    choice = req.tool_choice
    return choice.function.name if isinstance(choice, _NamedChoice) else choice


def json_request(fmt: _ResponseFormat | None) -> tuple[dict[str, Any] | None, bool]:
    """``(schema, json_mode)`` from a ``response_format``."""
    if fmt is None or fmt.type == "text":
        return None, False
    if fmt.type == "json_schema":
        if fmt.json_schema is None:
            raise BadRequest(
                "Missing required parameter: 'response_format.json_schema'.",
                field="response_format.json_schema",
            )
        return fmt.json_schema.schema, False
    return None, fmt.type == "json_object"


def text_of_content(content: str | list[_Part] | None) -> str:
    """The text of a message whose content is a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(part.text for part in content if part.text is not None)


def go_duration(seconds: float) -> str:
    """A duration as OpenAI's rate-limit headers write it (``1s``, ``500ms``, ``6m0s``)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:g}s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text


_QUOTA_NAMES: Final = {
    "requests": "requests per min (RPM)",
    "tokens": "tokens per min (TPM)",
    "day": "requests per day (RPD)",
}

DONE: Final = sse(b"[DONE]")
MALFORMED_CHUNK: Final = b'data: {"id": "chatcmpl-sim", "choices": [{"delta": \n\n'
WRONG_SHAPE_CHUNK: Final = sse(
    encode({"id": "chatcmpl-sim", "object": "chat.completion.chunk", "choices": "unexpected"})
)

_ERRORS: Final[dict[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("server_error", "timeout", "Request timed out."),
    409: ("invalid_request_error", "conflict", DEFAULT_MESSAGES[409]),
    413: ("invalid_request_error", "request_too_large", DEFAULT_MESSAGES[413]),
    422: ("invalid_request_error", None, DEFAULT_MESSAGES[422]),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    431: ("invalid_request_error", None, DEFAULT_MESSAGES[431]),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", "server_is_overloaded", "The server is overloaded or not ready yet."),
    504: ("server_error", "timeout", "Gateway timeout."),
    529: ("server_error", "overloaded", "Overloaded."),
}

_STREAM_ERROR: Final = [
    sse(
        encode(
            {
                "error": {
                    "message": _ERRORS[500][2],
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        )
    )
]


class OpenAIProtocol(WireProtocol):
    """``POST /v1/chat/completions``, ``GET /v1/models``; Bearer auth.

    Streams carry no ``event:`` lines; usage comes in an extra chunk with
    ``choices: []`` only when ``stream_options.include_usage`` is true.
    """

    id_prefix = "chatcmpl-sim"

    chat_path = "/v1/chat/completions"
    owned_by = "llmlb-sim"

    def __init__(self, *, name: str, model: str, api_key: str | None, created: int) -> None:
        super().__init__(name=name, model=model, api_key=api_key, created=created)
        self._bearer = None if api_key is None else b"Bearer " + api_key.encode()
        model_obj = self.model_object(model, created)
        self._models = encode({"object": "list", "data": [model_obj]})
        self._model = encode(model_obj)
        self._errors: dict[tuple[int, float], Answer] = {}
        self._created = str(created).encode()

    def model_object(self, model: str, created: int) -> dict[str, Any]:
        """One entry of ``GET /v1/models`` (also the body of ``GET /v1/models/{id}``)."""
        return {"id": model, "object": "model", "created": created, "owned_by": self.owned_by}

    # routing and checks -------------------------------------------------

    def route(self, method: bytes, path: str, query: str) -> Route:
        if path == self.chat_path:
            return Route(CHAT) if method == b"POST" else Route(NOT_FOUND)
        if method == b"GET":
            if path == "/v1/models":
                return Route(HEALTH)
            if path.startswith("/v1/models/"):
                return Route(HEALTH, model=path[len("/v1/models/") :])
        return Route(NOT_FOUND)

    def authorized(self, headers: Mapping[bytes, bytes], query: str) -> bool:
        return self._bearer is None or headers.get(b"authorization") == self._bearer

    def auth_error(self) -> Answer:
        return self._error_answer(401, None)

    def parse_chat(self, route: Route, body: bytes) -> ChatInput:
        req = decode_body(_DECODER, body)
        if not req.model and route.model is None:  # Azure's deployment URLs name the model
            raise BadRequest("you must provide a model parameter", field="model", missing=True)
        words = 0
        topic = ""
        for message in req.messages:
            text = text_of_content(message.content)
            words += len(text.split())
            if message.role in ("user", "tool"):
                topic = text
        after_result = self.check_conversation(req.messages)
        schema, json_mode = json_request(req.response_format)
        options = req.stream_options
        return ChatInput(
            model=route.model or req.model,
            tool=pick_tool(tools_of(req), choice_of(req), after_result),
            json_schema=schema,
            json_mode=json_mode,
            stream=bool(req.stream),
            input_words=words,
            topic=topic_of(topic),
            max_tokens=(
                req.max_completion_tokens
                if req.max_completion_tokens is not None
                else req.max_tokens
            ),
            include_usage=bool(options is not None and options.include_usage),
        )

    def bad_request(self, exc: BadRequest) -> Answer:
        return self._error_answer(400, None, message=exc.message, param=exc.field)

    def model_not_found(self, model: str) -> Answer:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return self._error_answer(404, None, message=message)

    def not_found(self, method: bytes, path: str) -> Answer:
        message = (
            f"Unknown request URL: {method.decode('latin-1')} {path}. Please check the URL for "
            "typos, or see the docs at https://platform.openai.com/docs/api-reference/."
        )
        return self._error_answer(404, None, message=message, code="unknown_url")

    def error(self, status: int, retry_after: float) -> Answer:
        key = (status, retry_after)
        answer = self._errors.get(key)
        if answer is None:
            answer = self._errors[key] = self._error_answer(status, retry_after)
        return answer

    def _error_answer(
        self,
        status: int,
        retry_after: float | None,
        *,
        message: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> Answer:
        kind, default_code, default_message = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
        )
        body = encode(
            {
                "error": {
                    "message": message or default_message,
                    "type": kind,
                    "param": param,
                    "code": code or default_code,
                }
            }
        )
        return Answer(status, self._error_headers(status, retry_after), body)

    def _error_headers(self, status: int, retry_after: float | None) -> bytes:
        if status != 429 or retry_after is None:
            return b""
        # A scripted 429 (a fault, not a quota: see `quota_error`) claims no limits: a
        # client that learns limits from these headers must not learn invented ones.
        return (
            f"retry-after: {retry_after_value(retry_after)}\r\n"
            f"retry-after-ms: {round(retry_after * 1000)}\r\n"
            "x-ratelimit-remaining-requests: 0\r\n"
            f"x-ratelimit-reset-requests: {go_duration(retry_after)}\r\n"
        ).encode()

    def health(self, route: Route) -> Answer:
        if route.model is None:
            return Answer(200, b"", self._models)
        if route.model != self.model:
            return self.model_not_found(route.model)
        return Answer(200, b"", self._model)

    def headers(self, seq: int) -> bytes:
        return b"x-request-id: req_sim%d\r\nopenai-processing-ms: 1\r\n" % seq

    # quotas -------------------------------------------------------------

    def quota_headers(self, state: QuotaState) -> bytes:
        # OpenAI's meaning: remaining in a per-minute bucket, reset = until it is full.
        lines = ""
        if state.rpm is not None:
            lines += (
                f"x-ratelimit-limit-requests: {state.rpm}\r\n"
                f"x-ratelimit-remaining-requests: {state.remaining_requests}\r\n"
                f"x-ratelimit-reset-requests: {go_duration(state.reset_requests)}\r\n"
            )
        if state.tpm is not None:
            lines += (
                f"x-ratelimit-limit-tokens: {state.tpm}\r\n"
                f"x-ratelimit-remaining-tokens: {state.remaining_tokens}\r\n"
                f"x-ratelimit-reset-tokens: {go_duration(state.reset_tokens)}\r\n"
            )
        return lines.encode()

    def quota_error(self, refusal: Refusal, state: QuotaState) -> Answer:
        what = _QUOTA_NAMES[refusal.kind]
        message = (
            f"Rate limit reached for {self.model} in organization org-sim on {what}: "
            f"Limit {refusal.limit}, Requested {refusal.requested}. "
            f"Please try again in {go_duration(refusal.wait)}."
        )
        body = encode(
            {
                "error": {
                    "message": message,
                    "type": "tokens" if refusal.kind == "tokens" else "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
        )
        headers = (
            f"retry-after: {math.ceil(refusal.wait)}\r\n"
            f"retry-after-ms: {math.ceil(refusal.wait * 1000)}\r\n"
        ).encode()
        return Answer(429, headers + self.quota_headers(state), body)

    # answers ------------------------------------------------------------

    def check_conversation(self, messages: list[_Message]) -> bool:
        return check_conversation(messages)

    def finish(self, reply: Reply) -> str:
        if reply.tool_calls:
            return "tool_calls"
        return "length" if reply.truncated else "stop"

    def call_id(self, reply: Reply, index: int) -> str:
        """The id of a tool call in this protocol's format."""
        return f"call_sim{self.tag}{reply.seq}x{index}"

    def tool_calls(self, reply: Reply) -> list[dict[str, Any]]:
        return [
            {
                "id": self.call_id(reply, i),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for i, call in enumerate(reply.tool_calls)
        ]

    def usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
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
                        "message": self.message(reply),
                        "logprobs": None,
                        "finish_reason": self.finish(reply),
                    }
                ],
                "usage": self.usage(reply),
                "service_tier": "default",
                "system_fingerprint": None,
            }
        )

    def message(self, reply: Reply) -> dict[str, Any]:
        if reply.tool_calls:
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": self.tool_calls(reply),
                "refusal": None,
                "annotations": [],
            }
        return {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}

    def chunk_prefix(self, reply: Reply) -> bytes:
        """Bytes every chunk of this stream starts with, up to the ``delta`` value.

        Chunks are assembled from pre-encoded pieces: a stream is a dozen
        events per request, and encoding each one whole would dominate the
        simulator's cost in streaming benchmarks.
        """
        return (
            b'data: {"id":'
            + encode(reply.id)
            + b',"object":"chat.completion.chunk","created":'
            + self._created
            + b',"model":'
            + encode(reply.model)
            + b',"choices":[{"index":0,"delta":'
        )

    def stream(self, reply: Reply, chat: ChatInput) -> StreamPlan:
        prefix = self.chunk_prefix(reply)
        end = b',"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
        if not chat.include_usage:
            end = b',"logprobs":null,"finish_reason":null}]}\n\n'
        if reply.tool_calls:
            head, deltas = self._tool_deltas(reply, prefix, end)
        else:
            head = [prefix + b'{"role":"assistant","content":""}' + end]
            deltas = [
                prefix + b'{"content":' + encode(piece) + b"}" + end for piece in reply.pieces
            ]
        finish = end.replace(
            b'"finish_reason":null', b'"finish_reason":"%s"' % self.finish(reply).encode()
        )
        tail = [prefix + b"{}" + finish]
        if chat.include_usage:
            usage = {
                "id": reply.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": reply.model,
                "choices": [],
                "usage": self.usage(reply),
            }
            tail.append(sse(encode(usage)))
        tail.append(DONE)
        return StreamPlan(
            head=head,
            deltas=deltas,
            tail=tail,
            error=_STREAM_ERROR,
            malformed=MALFORMED_CHUNK,
            wrong_shape=WRONG_SHAPE_CHUNK,
        )

    def _tool_deltas(
        self, reply: Reply, prefix: bytes, end: bytes
    ) -> tuple[list[bytes], list[bytes]]:
        """Each call: a first delta with id and name, then its arguments in fragments."""
        head: list[bytes] = []
        deltas: list[bytes] = []
        for i, call in enumerate(reply.tool_calls):
            start = {
                "index": i,
                "id": self.call_id(reply, i),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            opening: dict[str, Any] = {"tool_calls": [start]}
            if i == 0:
                opening = {"role": "assistant", "content": None, "tool_calls": [start]}
            (head if i == 0 else deltas).append(prefix + encode(opening) + end)
            for piece in split_text(call.arguments_json, reply.chunks):
                fragment = {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                deltas.append(prefix + encode(fragment) + end)
        return head, deltas

    def wrong_shape(self, reply: Reply) -> bytes:
        # The legacy completions shape: plausible JSON with no `message` to read.
        return encode(
            {
                "id": reply.id,
                "object": "text_completion",
                "created": self.created,
                "model": reply.model,
                "choices": [{"index": 0, "text": reply.text, "finish_reason": "stop"}],
            }
        )


class OpenAICompatibleProtocol(OpenAIProtocol):
    """An OpenAI-compatible server (vLLM-like): also answers ``GET /health``."""

    def route(self, method: bytes, path: str, query: str) -> Route:
        if method == b"GET" and path == "/health":
            return Route(HEALTH, model="", public=True)
        return super().route(method, path, query)

    def health(self, route: Route) -> Answer:
        if route.model == "":
            return Answer(200, b"", b"{}")
        return super().health(route)


_AZURE_KEY_MESSAGE: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)


class AzureOpenAIProtocol(OpenAIProtocol):
    """Azure OpenAI: OpenAI's shapes on Azure's URLs, the key in ``api-key``.

    ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` (the
    deployment is the model; without ``api-version`` the route answers 404, as Azure
    does) and the v1 API ``POST /openai/v1/chat/completions``. Health: ``GET
    /openai/models?api-version=...`` and ``GET /openai/v1/models``. A Bearer token
    equal to the key is accepted too: ``openai.OpenAI`` sends one to the v1 API.
    """

    owned_by = "system"

    def __init__(self, *, name: str, model: str, api_key: str | None, created: int) -> None:
        super().__init__(name=name, model=model, api_key=api_key, created=created)
        self._key = None if api_key is None else api_key.encode()

    def route(self, method: bytes, path: str, query: str) -> Route:
        versioned = any(p.startswith("api-version=") and len(p) > 12 for p in query.split("&"))
        if path == "/openai/v1/chat/completions":
            return Route(CHAT) if method == b"POST" else Route(NOT_FOUND)
        if path.startswith("/openai/deployments/") and path.endswith("/chat/completions"):
            deployment = unquote(path[len("/openai/deployments/") : -len("/chat/completions")])
            if method != b"POST" or not versioned or not deployment or "/" in deployment:
                return Route(NOT_FOUND)
            return Route(CHAT, model=deployment)
        listing = path == "/openai/v1/models" or (path == "/openai/models" and versioned)
        return Route(HEALTH) if method == b"GET" and listing else Route(NOT_FOUND)

    def authorized(self, headers: Mapping[bytes, bytes], query: str) -> bool:
        if self._key is None:
            return True
        return headers.get(b"api-key") == self._key or headers.get(b"authorization") == (
            b"Bearer " + self._key
        )

    def _azure_error(self, status: int, code: str, message: str, headers: bytes = b"") -> Answer:
        return Answer(status, headers, encode({"error": {"code": code, "message": message}}))

    def auth_error(self) -> Answer:
        return self._azure_error(401, "401", _AZURE_KEY_MESSAGE)

    def model_not_found(self, model: str) -> Answer:
        return self._azure_error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment "
            "within the last 5 minutes, please wait a moment and try again.",
        )

    def not_found(self, method: bytes, path: str) -> Answer:
        return self._azure_error(404, "404", "Resource not found")

    def error(self, status: int, retry_after: float) -> Answer:
        if status == 401:
            return self.auth_error()
        if status != 429:
            return super().error(status, retry_after)
        headers = (
            f"retry-after: {retry_after_value(retry_after)}\r\n"
            f"retry-after-ms: {round(retry_after * 1000)}\r\n"
            "x-ratelimit-remaining-requests: 0\r\n"
            "x-ratelimit-remaining-tokens: 0\r\n"
        ).encode()
        message = (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            "2024-10-21 have exceeded call rate limit of your current OpenAI S0 pricing tier. "
            f"Please retry after {retry_after_value(retry_after)} second."
        )
        return self._azure_error(429, "429", message, headers)

    def headers(self, seq: int) -> bytes:
        return b"apim-request-id: sim-%d\r\nx-ms-region: Sim Region\r\n" % seq
