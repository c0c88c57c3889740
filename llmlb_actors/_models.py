"""Requests, responses and stream chunks: the data that crosses the public API."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, cast

import msgspec

__all__ = [
    "FinishReason",
    "LLMRequest",
    "LLMResponse",
    "Message",
    "StreamChunk",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "other"]
"""The one vocabulary every adapter maps its provider's stop reasons into."""

Role = Literal["system", "user", "assistant"]


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One chat turn."""

    role: Role
    content: str


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
        if msg.role not in ("system", "user", "assistant"):
            raise _bad(f"messages[{i}].role", "expected 'system', 'user' or 'assistant'")
        if not isinstance(msg.content, str):
            raise _bad(f"messages[{i}].content", "expected a string")
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


def _check_messages(messages: tuple[Message, ...]) -> None:
    for i, msg in enumerate(messages):
        # Message objects are not validated when built: check them here too.
        if msg.role not in ("system", "user", "assistant"):
            raise _bad(f"messages[{i}].role", "expected 'system', 'user' or 'assistant'")
        if not isinstance(msg.content, str):
            raise _bad(f"messages[{i}].content", "expected a string")
        _check_text(f"messages[{i}].content", msg.content)


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

    def __post_init__(self) -> None:
        set_ = msgspec.structs.force_setattr
        if self.prompt is None and self.messages is None:
            raise _bad("prompt", "give either prompt or messages")
        if self.prompt is not None and self.messages is not None:
            raise _bad("prompt", "give either prompt or messages, not both")
        if self.prompt is not None:
            if not isinstance(self.prompt, str):
                raise _bad("prompt", f"expected a string, got {type(self.prompt).__name__}")
            _check_text("prompt", self.prompt)
        if self.messages is not None:
            if not (
                isinstance(self.messages, tuple) and all(type(m) is Message for m in self.messages)
            ):
                set_(self, "messages", _coerce_messages(self.messages))
            _check_messages(cast("tuple[Message, ...]", self.messages))
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
            set_(self, "stop", stop)
        if not isinstance(self.stream, bool):
            raise _bad("stream", "expected a boolean")
        if self.id is not None:
            if not isinstance(self.id, str):
                raise _bad("id", "expected a string")
            _check_text("id", self.id)

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
    """Token counts as the provider reported them (0 when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


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


# gc=False: a stream in flight holds a read's worth of chunks (a 64-delta answer is
# often one read), and tracked chunks made the garbage collector run ~6x as often
# (17-29 % of a stream's CPU at 64-512 in flight). Chunks hold only strings and
# `Usage`, so they can never be part of a reference cycle.
class StreamChunk(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A piece of a streamed answer.

    ``delta`` is the new text. The last chunk of a stream carries
    ``finish_reason`` and, where the API reports it, ``usage``.
    """

    delta: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    model: str = ""
    provider: str = ""
