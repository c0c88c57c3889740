"""OpenAI Chat Completions (and OpenAI-compatible servers) as the simulator speaks it."""

from __future__ import annotations

import math
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
    retry_after_value,
    sse,
    topic_of,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._quota import QuotaState, Refusal

__all__ = ["OpenAIProtocol", "go_duration", "text_of_content"]


class _Part(msgspec.Struct):
    type: str = "text"
    text: str | None = None


class _Message(msgspec.Struct):
    role: str
    content: str | list[_Part] | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _Request(msgspec.Struct):
    model: str
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


_DECODER: Final = msgspec.json.Decoder(_Request)


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
        words = 0
        topic = ""
        for message in req.messages:
            text = text_of_content(message.content)
            words += len(text.split())
            if message.role == "user":
                topic = text
        options = req.stream_options
        return ChatInput(
            model=req.model,
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

    def finish(self, reply: Reply) -> str:
        return "length" if reply.truncated else "stop"

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
                        "message": {
                            "role": "assistant",
                            "content": reply.text,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": self.finish(reply),
                    }
                ],
                "usage": self.usage(reply),
                "service_tier": "default",
                "system_fingerprint": None,
            }
        )

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
        head = [prefix + b'{"role":"assistant","content":""}' + end]
        deltas = [prefix + b'{"content":' + encode(piece) + b"}" + end for piece in reply.pieces]
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
