"""The contract every simulated wire protocol fulfils, and the helpers they share.

A protocol is sans-I/O: it routes a request line, checks the key, decodes the
body and renders answers as bytes. The server decides *when* to send what
(latency, faults, pacing), so every protocol gets every fault for free.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

import msgspec

from .._schema import sample

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._behaviour import Behaviour
    from .._quota import QuotaState, Refusal

__all__ = [
    "CHAT",
    "DEFAULT_MESSAGES",
    "HEALTH",
    "NOT_FOUND",
    "Answer",
    "BadRequest",
    "ChatInput",
    "Reply",
    "Route",
    "SimToolCall",
    "StreamPlan",
    "WireProtocol",
    "decode_body",
    "encode",
    "make_reply",
    "pick_tool",
    "reply_words",
    "retry_after_value",
    "split_reply",
    "split_text",
    "sse",
    "topic_of",
]

CHAT: Final = 0
HEALTH: Final = 1
NOT_FOUND: Final = 2

encode = msgspec.json.Encoder().encode

_T = TypeVar("_T")


class Route(NamedTuple):
    """Where a request goes. ``model`` comes from the path (Gemini, model lookups).

    ``public`` health routes need no key (vLLM's root ``/health``).
    """

    kind: int
    model: str | None = None
    stream: bool = False
    sse: bool = True
    public: bool = False


class Answer(NamedTuple):
    """A whole answer: status, extra pre-encoded header lines, JSON body."""

    status: int
    headers: bytes
    body: bytes


class StreamPlan(NamedTuple):
    """A stream as SSE event frames; the server paces and cuts them.

    ``head`` goes before the text, ``deltas`` hold one text delta each, ``tail``
    ends the stream properly. ``error`` replaces the tail on ``stream_error``;
    ``malformed`` and ``wrong_shape`` are single events for those faults.
    """

    head: list[bytes]
    deltas: list[bytes]
    tail: list[bytes]
    error: list[bytes]
    malformed: bytes
    wrong_shape: bytes


class ChatInput:
    """What the simulator needs from a chat request body. Strictly private.

    ``tool`` is the ``(name, parameters schema)`` the answer calls (see `pick_tool`);
    ``json_schema`` / ``json_mode`` ask for a JSON answer.
    """

    __slots__ = (
        "include_usage",
        "input_words",
        "json_mode",
        "json_schema",
        "max_tokens",
        "model",
        "stream",
        "tool",
        "topic",
    )

    def __init__(
        self,
        *,
        model: str,
        stream: bool,
        input_words: int,
        topic: str,
        max_tokens: int | None,
        include_usage: bool = False,
        tool: tuple[str, dict[str, Any]] | None = None,
        json_schema: dict[str, Any] | None = None,
        json_mode: bool = False,
    ) -> None:
        self.model = model
        self.stream = stream
        self.input_words = input_words
        self.topic = topic
        self.max_tokens = max_tokens
        self.include_usage = include_usage
        self.tool = tool
        self.json_schema = json_schema
        self.json_mode = json_mode


def pick_tool(
    tools: list[tuple[str, dict[str, Any]]], choice: str | None, after_tool_result: bool
) -> tuple[str, dict[str, Any]] | None:
    """The tool a deterministic model calls: none without tools or with choice ``none``;
    after a tool result only when a call is forced; the named tool, else the first."""
    if not tools or choice == "none":
        return None
    forced = choice not in (None, "auto")
    if after_tool_result and not forced:
        return None
    if forced and choice != "required":
        for name, schema in tools:
            if name == choice:
                return name, schema
        raise BadRequest(f"tool_choice names {choice!r}, which is not among the tools")
    return tools[0]


class SimToolCall(NamedTuple):
    """A call in a simulated answer; each protocol gives it an id in its own format."""

    name: str
    arguments: dict[str, Any]
    arguments_json: str


class Reply:
    """The generated answer with exact word-count usage; split for streams on demand."""

    __slots__ = (
        "_split",
        "chunks",
        "completion_tokens",
        "id",
        "model",
        "prompt_tokens",
        "text",
        "tool_calls",
        "truncated",
    )

    def __init__(
        self,
        *,
        id: str,
        model: str,
        text: str,
        chunks: int,
        prompt_tokens: int,
        completion_tokens: int,
        truncated: bool,
        tool_calls: tuple[SimToolCall, ...] = (),
    ) -> None:
        self.id = id
        self.model = model
        self.text = text
        self.chunks = chunks
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.truncated = truncated
        self.tool_calls = tool_calls
        self._split: tuple[list[str], list[int]] | None = None

    @property
    def seq(self) -> int:
        """The number at the end of the reply id (unique per simulated provider)."""
        digits = ""
        for c in reversed(self.id):
            if not c.isdigit():
                break
            digits = c + digits
        return int(digits or 0)

    def _pieces(self) -> tuple[list[str], list[int]]:
        if self._split is None:
            self._split = split_reply(self.text, self.chunks)
        return self._split

    @property
    def pieces(self) -> list[str]:
        """The stream's text deltas; they join back to ``text``."""
        return self._pieces()[0]

    @property
    def cumulative(self) -> list[int]:
        """Completion tokens (words) sent once each delta is out; the last is the total."""
        return self._pieces()[1]


class BadRequest(Exception):
    """The request body is not JSON or misses a required field."""

    def __init__(self, message: str, *, field: str | None = None, missing: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.missing = missing


_PATH_IN_ERROR = re.compile(r"at `\$\.?([^`]*)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def decode_body(decoder: msgspec.json.Decoder[_T], body: bytes) -> _T:
    """Decode a request body, turning msgspec's errors into `BadRequest`."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        missing = _MISSING_FIELD.search(text)
        where = _PATH_IN_ERROR.search(text)
        field = where.group(1) if where else None
        if missing:
            field = f"{field}.{missing.group(1)}" if field else missing.group(1)
        raise BadRequest(text, field=field, missing=missing is not None) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None


def sse(data: bytes, event: bytes | None = None) -> bytes:
    """One server-sent event: optional ``event:`` line, ``data: `` with one space."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event + b"\ndata: " + data + b"\n\n"


_TOKEN = re.compile(r"\s*\S+")


def split_text(text: str, parts: int) -> list[str]:
    """Split ``text`` into ``parts`` deltas (fewer if it is shorter) that join back to it.

    Splits at word boundaries when there are enough words, so the cumulative
    word counts a stream reports are exact at every step; otherwise splits
    inside words, as subword tokens do.
    """
    if not text:
        return [""]
    tokens = _TOKEN.findall(text)
    if len(tokens) >= parts:
        size, extra = divmod(len(tokens), parts)
        out: list[str] = []
        start = 0
        for k in range(parts):
            end = start + size + (1 if k < extra else 0)
            out.append("".join(tokens[start:end]))
            start = end
    else:
        parts = min(parts, len(text))
        bounds = [len(text) * k // parts for k in range(parts + 1)]
        out = [text[bounds[k] : bounds[k + 1]] for k in range(parts)]
    joined = sum(len(piece) for piece in out)
    if joined < len(text):  # trailing whitespace the token pattern does not cover
        out[-1] += text[joined:]
    return out


_SPLIT_CACHE: dict[tuple[str, int], tuple[list[str], list[int]]] = {}
_SPLIT_CACHE_SIZE: Final = 4096


def split_reply(text: str, parts: int) -> tuple[list[str], list[int]]:
    """`split_text` plus cumulative word counts, memoised (fixed replies repeat a lot).

    The lists are shared between requests: treat them as read-only.
    """
    key = (text, parts)
    cached = _SPLIT_CACHE.get(key)
    if cached is not None:
        return cached
    pieces = split_text(text, parts)
    total = len(text.split())
    cumulative: list[int] = []
    prefix = ""
    for piece in pieces:
        prefix += piece
        cumulative.append(min(len(prefix.split()), total))
    cumulative[-1] = total
    if len(_SPLIT_CACHE) >= _SPLIT_CACHE_SIZE:
        _SPLIT_CACHE.clear()
    _SPLIT_CACHE[key] = (pieces, cumulative)
    return pieces, cumulative


def reply_words(chat: ChatInput, behaviour: Behaviour, provider: str) -> int:
    """The completion tokens `make_reply` will report, known before the answer is made."""
    return _answer(chat, behaviour, provider)[1]


def _answer(
    chat: ChatInput, behaviour: Behaviour, provider: str
) -> tuple[str, int, bool, tuple[SimToolCall, ...]]:
    """``(text, completion tokens, truncated, tool calls)`` of the answer to ``chat``.

    A request that offers tools gets a call of the picked tool with arguments
    made from its schema; one that asks for JSON gets JSON valid for its schema
    (neither is cut by ``max_tokens``: a cut one would not parse).
    """
    if chat.tool is not None:
        name, schema = chat.tool
        arguments = sample(schema)
        if not isinstance(arguments, dict):
            arguments = {}
        arguments_json = encode(arguments).decode()
        call = SimToolCall(name, arguments, arguments_json)
        return "", len(arguments_json.split()), False, (call,)
    if chat.json_schema is not None or chat.json_mode:
        default = behaviour.reply or f"Simulated reply from {provider} to: {chat.topic}"
        value = sample(chat.json_schema) if chat.json_schema is not None else {"answer": default}
        answer = encode(value).decode()
        return answer, len(answer.split()), False, ()
    text = behaviour.reply
    if text is None:
        text = f"Simulated reply from {provider} to: {chat.topic}"
    words = text.split()
    completion = len(words)
    truncated = False
    if chat.max_tokens is not None and completion > chat.max_tokens:
        completion = max(chat.max_tokens, 0)
        text = " ".join(words[:completion])
        truncated = True
    return text, completion, truncated, ()


def make_reply(
    *,
    chat: ChatInput,
    behaviour: Behaviour,
    provider: str,
    reply_id: str,
) -> Reply:
    """The deterministic answer to ``chat`` (see `_answer`)."""
    text, completion, truncated, calls = _answer(chat, behaviour, provider)
    return Reply(
        id=reply_id,
        model=chat.model,
        text=text,
        chunks=behaviour.chunks,
        prompt_tokens=chat.input_words,
        completion_tokens=completion,
        truncated=truncated,
        tool_calls=calls,
    )


def topic_of(text: str, words: int = 8) -> str:
    """The first words of the prompt, echoed in the default reply."""
    return " ".join(text.split()[:words])


def retry_after_value(seconds: float) -> str:
    """Retry-After as servers write it: whole seconds when possible."""
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"


DEFAULT_MESSAGES: Final = {
    400: "Invalid request.",
    401: "Invalid API key.",
    403: "Permission denied.",
    404: "Not found.",
    408: "Request timed out.",
    409: "Conflict: the request collided with another one.",
    413: "Request too large.",
    422: "Unprocessable request.",
    429: "Rate limit exceeded, please retry later.",
    431: "Request header fields too large.",
    500: "Internal server error.",
    502: "Bad gateway.",
    503: "Service unavailable, the server is overloaded.",
    504: "Gateway timeout.",
    529: "Overloaded",
}


_ALNUM: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def id_tag(name: str) -> str:
    """Three letters or digits that stand for a provider's name in the ids it makes.

    Real tool-call ids are unique everywhere; ids from a counter per provider are not
    (two providers' first calls would share one), so they carry this tag too. Stable
    across runs, so tests see the same ids every time.
    """
    number = int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big")
    out = []
    for _ in range(3):
        number, digit = divmod(number, len(_ALNUM))
        out.append(_ALNUM[digit])
    return "".join(out)


class WireProtocol(ABC):
    """One wire protocol, bound to one simulated provider (name, model, key).

    Subclasses precompute what they can in ``__init__``; methods are called on
    the hot path once per request.
    """

    content_type: bytes = b"application/json"
    """Content-Type of whole answers and errors."""
    id_prefix: str = "sim-"
    """Prefix of reply ids (``chatcmpl-``, ``msg_``...)."""

    def __init__(self, *, name: str, model: str, api_key: str | None, created: int) -> None:
        self.name = name
        self.model = model
        self.api_key = api_key
        self.created = created
        self.tag = id_tag(name)

    # routing and checks -------------------------------------------------

    @abstractmethod
    def route(self, method: bytes, path: str, query: str) -> Route:
        """Classify a request line."""

    @abstractmethod
    def authorized(self, headers: Mapping[bytes, bytes], query: str) -> bool:
        """Whether the request carries the provider's key (always, if it has none)."""

    @abstractmethod
    def auth_error(self) -> Answer:
        """The protocol's answer to a wrong or missing key."""

    def precheck(self, headers: Mapping[bytes, bytes]) -> Answer | None:
        """A protocol-level rejection before the body is read (e.g. a required header)."""
        return None

    @abstractmethod
    def parse_chat(self, route: Route, body: bytes) -> ChatInput:
        """Decode a chat body; raises `BadRequest`."""

    @abstractmethod
    def bad_request(self, exc: BadRequest) -> Answer:
        """The protocol's answer to a body that is not JSON or misses fields."""

    @abstractmethod
    def model_not_found(self, model: str) -> Answer:
        """The protocol's answer to a model this provider does not serve."""

    @abstractmethod
    def not_found(self, method: bytes, path: str) -> Answer:
        """The protocol's answer to an unknown path."""

    @abstractmethod
    def error(self, status: int, retry_after: float) -> Answer:
        """A scripted HTTP error in the protocol's shape and headers."""

    @abstractmethod
    def health(self, route: Route) -> Answer:
        """The answer to a health probe (model listing or lookup)."""

    # quotas -------------------------------------------------------------

    def quota_headers(self, state: QuotaState) -> bytes:
        """Rate-limit header lines on every chat answer of a provider with quotas."""
        return b""

    def quota_error(self, refusal: Refusal, state: QuotaState) -> Answer:
        """The protocol's 429 for a request over quota (not cached: every wait differs)."""
        answer = self.error(429, refusal.wait)
        return answer._replace(headers=answer.headers + self.quota_headers(state))

    # answers ------------------------------------------------------------

    def headers(self, seq: int) -> bytes:
        """Extra header lines on every answer (request ids and the like)."""
        return b""

    @abstractmethod
    def whole(self, reply: Reply) -> bytes:
        """A complete non-streaming answer body."""

    @abstractmethod
    def stream(self, reply: Reply, chat: ChatInput) -> StreamPlan:
        """The SSE events of a streamed answer."""

    @abstractmethod
    def wrong_shape(self, reply: Reply) -> bytes:
        """Valid JSON that a client of this protocol cannot use."""

    def json_array(self, reply: Reply, chat: ChatInput) -> bytes:
        """A stream delivered as one JSON array (Gemini without ``alt=sse``)."""
        raise NotImplementedError
