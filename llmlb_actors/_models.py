"""Requests, responses and stream chunks: the data that crosses the public API."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import msgspec

from ._chat import (
    ImagePart,
    JSONSchema,
    Part,
    TextPart,
    Tool,
    ToolCall,
    check_json,
    check_unicode,
)

__all__ = [
    "FinishReason",
    "LLMRequest",
    "LLMResponse",
    "Message",
    "StreamChunk",
    "ToolChoice",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "other"]
"""The one vocabulary every adapter maps its provider's stop reasons into."""

Role = Literal["system", "user", "assistant", "tool"]
_ROLES = ("system", "user", "assistant", "tool")
_TEXT_ROLES = frozenset({"system", "user", "assistant"})
_PART_TYPES = (TextPart, ImagePart)

ToolChoice = Literal["auto", "none", "required"] | str
"""``"auto"``, ``"none"``, ``"required"`` or the name of one of the request's tools."""
_TOOL_CHOICES = ("auto", "none", "required")


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One chat turn.

    Attributes:
        role: ``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``.
        content: text, or a list of `TextPart` / `ImagePart` (images in user turns only).
        tool_calls: on an assistant turn, the calls the model asked for.
        tool_call_id: on a tool turn, the id of the `ToolCall` it answers (required).
        name: on a tool turn, the tool's name (found from the call when omitted).
    """

    role: Role
    content: str | tuple[Part, ...]
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    # No __post_init__: adapters build a Message per request on the hot path, and a
    # Python-level hook per construction costs more than the whole check of a text turn.
    # `LLMRequest` checks (and normalises) every Message it is given instead.

    @property
    def text(self) -> str:
        """The turn's text: ``content`` itself, or its text parts joined."""
        content = self.content
        if type(content) is str:
            return content
        return "".join([p.text for p in content if type(p) is TextPart])


def _message_error(field: str, why: str) -> ValueError:
    return ValueError(f"Message.{field}: {why}")


def _check_message(msg: Message) -> None:
    """Everything but the plain text turn: roles, parts, tool calls and ids."""
    set_ = msgspec.structs.force_setattr
    role = msg.role
    if role not in _ROLES:
        raise _message_error("role", f"expected one of {', '.join(_ROLES)}, got {role!r}")
    content: Any = msg.content
    if not isinstance(content, str):
        if isinstance(content, bytes | dict) or not hasattr(content, "__iter__"):
            raise _message_error("content", "expected a string or a list of parts")
        parts: list[Part] = []
        for i, part in enumerate(content):
            if isinstance(part, dict):
                try:
                    part = msgspec.convert(part, Part)
                except msgspec.ValidationError as exc:
                    raise _message_error(f"content[{i}]", str(exc)) from None
            if not isinstance(part, _PART_TYPES):
                raise _message_error(
                    f"content[{i}]", f"expected a TextPart or ImagePart, got {type(part).__name__}"
                )
            if type(part) is ImagePart and role != "user":
                raise _message_error(f"content[{i}]", "images belong in user messages only")
            parts.append(part)
        if not parts:
            raise _message_error("content", "a list of parts must not be empty")
        set_(msg, "content", tuple(parts))
    calls: Any = msg.tool_calls
    if calls:
        if role != "assistant":
            raise _message_error("tool_calls", "only assistant messages carry tool calls")
        if isinstance(calls, str | bytes | dict) or not hasattr(calls, "__iter__"):
            raise _message_error("tool_calls", "expected a list of ToolCall")
        checked: list[ToolCall] = []
        for i, call in enumerate(calls):
            if isinstance(call, dict):
                try:
                    call = msgspec.convert(call, ToolCall)
                except msgspec.ValidationError as exc:
                    raise _message_error(f"tool_calls[{i}]", str(exc)) from None
            if not isinstance(call, ToolCall):
                raise _message_error(f"tool_calls[{i}]", "expected a ToolCall")
            checked.append(call)
        set_(msg, "tool_calls", tuple(checked))
    if role == "tool":
        if not isinstance(msg.tool_call_id, str) or not msg.tool_call_id:
            raise _message_error("tool_call_id", "a tool message needs the id of its tool call")
        check_unicode("Message.tool_call_id", msg.tool_call_id)
        if msg.name is not None and (not isinstance(msg.name, str) or not msg.name):
            raise _message_error("name", "expected a non-empty string")
    else:
        if msg.tool_call_id is not None:
            raise _message_error("tool_call_id", "only tool messages carry a tool_call_id")
        if msg.name is not None:
            raise _message_error("name", "only tool messages carry a name")


def _bad(field: str, why: str) -> ValueError:
    return ValueError(f"LLMRequest.{field}: {why}")


def _coerce_messages(value: object) -> tuple[Message, ...]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise _bad("messages", "expected a list of {role, content} messages")
    out: list[Message] = []
    for i, item in enumerate(value):
        if isinstance(item, Message):
            msg = item
        elif isinstance(item, dict):
            try:
                msg = msgspec.convert(item, Message)
            except msgspec.ValidationError as exc:
                raise _bad(f"messages[{i}]", str(exc)) from None
        else:
            raise _bad(f"messages[{i}]", "expected a Message or a {role, content} dict")
        out.append(msg)
    if not out:
        raise _bad("messages", "must not be empty")
    if all(m.role == "system" for m in out):
        raise _bad("messages", "needs at least one user or assistant message")
    return tuple(out)


def _check_text(field: str, value: str) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate, as broken JSON or JS produce).

    It cannot be encoded as UTF-8, so every adapter's JSON encoder would raise
    inside the provider actor: a crash, then another at the next provider.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _bad(
                field, f"is not valid Unicode: a lone surrogate at index {exc.start}"
            ) from None


def _check_messages(messages: tuple[Message, ...]) -> bool:
    """Check each turn; True when every one is plain text (no parts, tools or ids)."""
    plain = True
    for i, msg in enumerate(messages):
        content = msg.content
        if (
            type(content) is str
            and msg.role in _TEXT_ROLES
            and not msg.tool_calls
            and msg.tool_call_id is None
            and msg.name is None
        ):
            _check_text(f"messages[{i}].content", content)
            continue
        try:
            _check_message(msg)
        except ValueError as exc:
            raise _bad(f"messages[{i}]", str(exc)) from None
        if type(msg.content) is str:
            _check_text(f"messages[{i}].content", msg.content)
        plain = False
    if not plain:
        _check_tool_turns(messages)
    return plain


def _check_tool_turns(messages: tuple[Message, ...]) -> None:
    """Every tool result answers a call an earlier assistant turn made (all APIs insist)."""
    called: dict[str, str] = {}
    for i, msg in enumerate(messages):
        for call in msg.tool_calls:
            called[call.id] = call.name
        if msg.role == "tool":
            if msg.tool_call_id not in called:
                raise _bad(
                    f"messages[{i}].tool_call_id",
                    f"{msg.tool_call_id!r} answers no tool call of an earlier assistant message",
                )
            if msg.name is not None and msg.name != called[msg.tool_call_id]:
                raise _bad(
                    f"messages[{i}].name",
                    f"{msg.name!r} is not the name of call {msg.tool_call_id!r}",
                )


def _tuple_of(field: str, value: object, kind: type[Any]) -> tuple[Any, ...]:
    if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
        raise _bad(field, f"expected a list of {kind.__name__}")
    out = []
    for i, item in enumerate(cast("Sequence[object]", value)):
        if isinstance(item, dict):
            try:
                item = msgspec.convert(item, kind)
            except msgspec.ValidationError as exc:
                raise _bad(f"{field}[{i}]", str(exc)) from None
        if not isinstance(item, kind):
            raise _bad(f"{field}[{i}]", f"expected a {kind.__name__}, got {type(item).__name__}")
        out.append(item)
    return tuple(out)


def _string_map(field: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad(field, "expected a mapping of strings to strings")
    return dict(value)


def _check_number(field: str, value: object, lo: float, hi: float, lo_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise _bad(field, f"expected a number, got {type(value).__name__}")
    if (value <= lo if lo_open else value < lo) or value > hi:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise _bad(field, f"must be in {interval}, got {value!r}")


class LLMRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One prompt for the balancer.

    Give either ``prompt`` (one user turn) or ``messages`` (a conversation),
    not both. Every field is checked when the request is built, so a bad value
    raises ``ValueError`` naming the field before anything is sent.

    Attributes:
        prompt: a single user message.
        messages: the conversation, as `Message` objects or ``{"role", "content"}`` dicts.
        system: a system prompt (each adapter puts it where its API wants it).
        max_tokens: upper bound on generated tokens (> 0).
        temperature: sampling temperature in [0, 2].
        top_p: nucleus sampling in (0, 1].
        stop: one stop sequence or several.
        stream: informational; use `Balancer.stream` to stream.
        id: an optional caller id, carried into batch results.
        tools: functions the model may call (`Tool`).
        tool_choice: ``"auto"``, ``"none"``, ``"required"`` or one tool's name.
        response_format: ``"json"`` (any JSON object) or a `JSONSchema` to follow.
        seed: a sampling seed, where the provider supports one.
        extra_body: merged last into the provider's JSON body (nested objects
            merge), for parameters this model does not name.
        metadata: strings kept on the response, never sent.
    """

    prompt: str | None = None
    messages: Sequence[Message] | None = None
    """Normalised to a tuple of `Message` (dicts are accepted and converted)."""
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | Sequence[str] | None = None
    """Normalised to a tuple of strings; read it through `stop_sequences`."""
    stream: bool = False
    id: str | None = None
    tools: Sequence[Tool] | None = None
    """Normalised to a tuple of `Tool` (dicts are accepted and converted)."""
    tool_choice: ToolChoice | None = None
    response_format: Literal["json"] | JSONSchema | None = None
    seed: int | None = None
    extra_body: Mapping[str, Any] | None = None
    """Copied into a dict when the request is built."""
    metadata: Mapping[str, str] | None = None
    """Copied into a dict when the request is built; returned on `LLMResponse.metadata`."""

    def __post_init__(self) -> None:
        # Runs once per request on the hot path: locals over repeated attribute loads,
        # and the Unicode check only for non-ASCII text.
        prompt = self.prompt
        messages = self.messages
        if prompt is not None:
            if messages is not None:
                raise _bad("prompt", "give either prompt or messages, not both")
            if not isinstance(prompt, str):
                raise _bad("prompt", f"expected a string, got {type(prompt).__name__}")
            if not prompt.isascii():
                _check_text("prompt", prompt)
        elif messages is None:
            raise _bad("prompt", "give either prompt or messages")
        else:
            if not (isinstance(messages, tuple) and all(type(m) is Message for m in messages)):
                messages = _coerce_messages(messages)
                msgspec.structs.force_setattr(self, "messages", messages)
            _check_messages(messages)
        if (
            self.tools is not None
            or self.tool_choice is not None
            or self.response_format is not None
            or self.seed is not None
            or self.extra_body is not None
            or self.metadata is not None
        ):
            self._check_extras()
        if self.system is not None:
            if not isinstance(self.system, str):
                raise _bad("system", "expected a string")
            _check_text("system", self.system)
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or self.max_tokens <= 0
        ):
            raise _bad("max_tokens", f"must be a positive integer, got {self.max_tokens!r}")
        if self.temperature is not None:
            _check_number("temperature", self.temperature, 0.0, 2.0, lo_open=False)
        if self.top_p is not None:
            _check_number("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        if self.stop is not None:
            stop: Any = self.stop
            if isinstance(stop, str):
                stop = (stop,)
            elif isinstance(stop, list | tuple):
                stop = tuple(stop)
            else:
                raise _bad("stop", "expected a string or a list of strings")
            if not all(isinstance(s, str) and s for s in stop):
                raise _bad("stop", "every stop sequence must be a non-empty string")
            for i, sequence in enumerate(stop):
                _check_text(f"stop[{i}]", sequence)
            msgspec.structs.force_setattr(self, "stop", stop)
        if not isinstance(self.stream, bool):
            raise _bad("stream", "expected a boolean")
        if self.id is not None:
            if not isinstance(self.id, str):
                raise _bad("id", "expected a string")
            _check_text("id", self.id)

    def _check_extras(self) -> None:
        set_ = msgspec.structs.force_setattr
        if self.tools is not None:
            tools = _tuple_of("tools", self.tools, Tool)
            names = [t.name for t in tools]
            if len(set(names)) != len(names):
                raise _bad("tools", "tool names must be unique")
            set_(self, "tools", tools)
        choice = self.tool_choice
        if choice is not None:
            if not isinstance(choice, str):
                raise _bad("tool_choice", "expected 'auto', 'none', 'required' or a tool's name")
            if choice not in _TOOL_CHOICES or choice == "required":
                names = [t.name for t in self.tools or ()]
                if not names:
                    raise _bad("tool_choice", f"{choice!r} needs tools")
                if choice != "required" and choice not in names:
                    raise _bad(
                        "tool_choice",
                        f"{choice!r} is not 'auto', 'none', 'required' or one of the tools "
                        f"({', '.join(names)})",
                    )
        fmt: Any = self.response_format
        if fmt is not None and fmt != "json":
            if isinstance(fmt, dict):
                try:
                    fmt = msgspec.convert(fmt, JSONSchema)
                except msgspec.ValidationError as exc:
                    raise _bad("response_format", str(exc)) from None
                set_(self, "response_format", fmt)
            elif not isinstance(fmt, JSONSchema):
                raise _bad("response_format", "expected 'json' or a JSONSchema")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not -(2**63) <= self.seed < 2**63
        ):
            raise _bad("seed", f"expected a 64-bit integer, got {self.seed!r}")
        if self.extra_body is not None:
            extra = self.extra_body
            if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
                raise _bad("extra_body", "expected a mapping with string keys")
            extra = dict(extra)
            try:
                check_json("extra_body", extra)
            except ValueError as exc:
                raise _bad("extra_body", str(exc).removeprefix("extra_body: ")) from None
            set_(self, "extra_body", extra)
        if self.metadata is not None:
            set_(self, "metadata", _string_map("metadata", self.metadata))

    def as_messages(self) -> tuple[Message, ...]:
        """The conversation without the ``system`` field: ``prompt`` becomes one user turn."""
        if self.messages is not None:
            return cast("tuple[Message, ...]", self.messages)
        return (Message(role="user", content=self.prompt or ""),)

    @property
    def stop_sequences(self) -> tuple[str, ...] | None:
        """``stop`` as the tuple `__post_init__` made of it."""
        return cast("tuple[str, ...] | None", self.stop)

    def __repr__(self) -> str:
        text = self.prompt if self.prompt is not None else f"<{len(self.messages or ())} messages>"
        shown = text if len(text) <= 60 else text[:57] + "..."
        return f"LLMRequest({shown!r}, id={self.id!r})"


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts as the provider reported them (0 when it did not).

    ``cached_tokens`` are prompt tokens read from the provider's prompt cache;
    ``reasoning_tokens`` are completion tokens spent thinking.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class LLMResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A whole answer.

    Providers fill ``content``, ``model``, ``finish_reason`` and ``usage``;
    the balancer fills ``provider``, ``latency`` and ``attempts``.
    """

    content: str
    model: str = ""
    provider: str = ""
    usage: Usage = msgspec.field(default_factory=Usage)
    finish_reason: FinishReason | None = None
    latency: float = 0.0
    """Seconds from submission to the answer, retries and backoff included."""
    attempts: int = 1
    """How many attempts it took (1 when the first one answered)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls the model asked for (``finish_reason == "tool_calls"``); empty when none."""
    metadata: dict[str, str] | None = None
    """The request's ``metadata``, handed back untouched."""


# gc=False: a stream in flight holds a read's worth of chunks (a 64-delta answer is
# often one read), and tracked chunks made the garbage collector run ~6x as often
# (17-29 % of a stream's CPU at 64-512 in flight). Chunks hold only strings and
# `Usage`, so they can never be part of a reference cycle.
class StreamChunk(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A piece of a streamed answer.

    ``delta`` is the new text. The last chunk of a stream carries
    ``finish_reason`` and, where the API reports it, ``usage``. A tool call
    arrives once, whole, in ``tool_calls`` of the chunk where it was finished.
    """

    delta: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    model: str = ""
    provider: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls the provider finished in this chunk, each whole (never fragments)."""
