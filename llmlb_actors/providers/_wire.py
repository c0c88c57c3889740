"""Strictly private helpers shared by the built-in protocol adapters.

One JSON encoder, typed decoding that turns every malformed body into a
``protocol`` `LLMError`, the error-body fallback text, and the header hygiene
every adapter needs (credentials are `.._secrets.Secret`). Kept here so each
adapter module holds only its protocol's shapes.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec

from .._chat import ToolCall
from .._errors import ConfigError, LLMError
from .._models import LLMRequest, Message, Usage

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .._config import ProviderConfig
    from .._models import StreamChunk
    from .._sse import SSEEvent
    from ._adapter import StreamDecoder

__all__ = [
    "ENCODER",
    "ToolCallAssembler",
    "body_text",
    "check_header_value",
    "decode",
    "decode_event",
    "dropped",
    "feed_event",
    "header_list",
    "is_plain",
    "json_text",
    "merge_extra_body",
    "parse_arguments",
    "protocol_error",
    "safe_id",
    "stable_id",
    "tool_call",
    "truncated_error",
    "try_decode",
    "usage",
]

log = logging.getLogger("llmlb_actors")

T = TypeVar("T")

ENCODER = msgspec.json.Encoder()
"""The one encoder every adapter uses for request bodies (reused, per msgspec's perf tips)."""

_ERROR_TEXT_LIMIT = 300
_FORBIDDEN = ("\r", "\n", "\0")


def check_header_value(config: ProviderConfig, field: str, value: str) -> None:
    """Refuse CR, LF or NUL in a value that becomes a header (header injection).

    The message names the field but never shows the value: it may be a key.
    """
    if any(c in value for c in _FORBIDDEN):
        raise ConfigError(
            f"provider {config.name!r}: {field} must not contain CR, LF or NUL", field=field
        )


def header_list(
    ours: Iterable[tuple[str, str]], extra: Iterable[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """Our headers plus the user's extra ones; a user header replaces ours of the same name."""
    merged = dict(ours)
    merged.update(extra)
    return tuple(merged.items())


def protocol_error(provider: str, protocol: str, detail: str) -> LLMError:
    """A retryable ``protocol`` error: the answer did not have the documented shape."""
    return LLMError(
        f"malformed {protocol} answer from provider {provider!r}: {detail}",
        provider=provider,
        retryable=True,
        kind="protocol",
    )


def truncated_error(provider: str, protocol: str) -> LLMError:
    """The stream closed before its terminal marker: retryable, like a dropped connection."""
    return LLMError(
        f"{protocol} stream from provider {provider!r} was truncated "
        "(ended without its terminal event)",
        provider=provider,
        retryable=True,
        kind="protocol",
    )


def decode(decoder: msgspec.json.Decoder[T], data: bytes | str, provider: str, protocol: str) -> T:
    """Decode ``data`` into the view type, or raise a ``protocol`` `LLMError`.

    msgspec raises ``UnicodeDecodeError`` (not ``DecodeError``) for invalid
    UTF-8 inside strings, so both are caught: no raw decoding exception leaks.
    """
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        # RecursionError: JSON nested thousands deep (a hostile or broken upstream).
        raise protocol_error(provider, protocol, str(exc) or type(exc).__name__) from None


def decode_event(
    decoder: msgspec.json.Decoder[T], data: bytes, provider: str, protocol: str
) -> T | None:
    """A stream event the fast ``decoder.decode(data)`` refused, decoded the slow way.

    ``None`` for a blank event (a keep-alive); invalid UTF-8 reads as the
    replacement character, as the SSE layer reads it; anything else raises a
    ``protocol`` `LLMError`.
    """
    if not data.strip():
        return None
    return decode(decoder, data.decode("utf-8", "replace"), provider, protocol)


def feed_event(decoder: StreamDecoder, event: SSEEvent) -> list[StreamChunk]:
    """`StreamDecoder.feed` of a decoder that reads only ``data``: its `feed_data`."""
    out: list[StreamChunk] = []
    decoder.feed_data([event.data.encode()], out)
    return out


def body_text(body: bytes) -> str:
    """A short printable excerpt of an error body we could not interpret."""
    text = body[: _ERROR_TEXT_LIMIT * 4].decode("utf-8", "replace").strip()
    if len(text) > _ERROR_TEXT_LIMIT:
        text = text[: _ERROR_TEXT_LIMIT - 1] + "…"
    return text


def try_decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T | None:
    """Decode an error body leniently: ``None`` when it is not the documented shape."""
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None


def usage(prompt: int, completion: int, total: int | None = None) -> Usage:
    """A `Usage`, computing the total when the API leaves it out."""
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion if total is None else total,
    )


# ---- the richer chat surface: tools, parts, pass-through ------------------------------------


def is_plain(request: LLMRequest) -> bool:
    """Text only: no tools, parts, tool turns, output format, seed or extra body.

    Adapters build these with their original (and fastest) body, byte for byte.
    """
    if (
        request.tools is not None
        or request.response_format is not None
        or request.seed is not None
        or request.extra_body is not None
    ):
        return False
    messages = request.messages
    if messages is None:
        return True
    for m in cast("tuple[Message, ...]", messages):
        if type(m.content) is not str or m.tool_calls or m.role == "tool":
            return False
    return True


def dropped(provider: str, protocol: str, feature: str) -> None:
    """One DEBUG line for a request feature this protocol cannot express (never a 400)."""
    log.debug(
        "provider %r (%s) cannot express %s: dropped from the request", provider, protocol, feature
    )


def json_text(value: object) -> str:
    """Compact JSON text (tool-call arguments travel as strings on OpenAI-shaped APIs)."""
    return ENCODER.encode(value).decode("utf-8")


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            _merge(old, value)
        else:
            into[key] = value


def merge_extra_body(body: bytes, extra: Mapping[str, Any] | None) -> bytes:
    """``body`` with ``extra`` merged in last: nested objects merge, anything else replaces."""
    if not extra:
        return body
    data = msgspec.json.decode(body)
    _merge(data, extra)
    return ENCODER.encode(data)


def parse_arguments(raw: object, provider: str, label: str, name: str) -> dict[str, Any]:
    """Tool-call arguments as a dict (from a JSON string or an object), or a typed `LLMError`."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}  # a call without arguments: some servers send "" or nothing
    try:
        value = msgspec.json.decode(raw) if isinstance(raw, str | bytes) else raw
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        value = exc
    if not isinstance(value, dict):
        detail = str(value) if isinstance(value, Exception) else f"a JSON {type(value).__name__}"
        raise LLMError(
            f"{label} provider {provider!r} called tool {name!r} with arguments that are not "
            f"a JSON object ({detail})",
            provider=provider,
            retryable=True,
            kind="protocol",
        )
    return value


def tool_call(id: str, name: str, arguments: dict[str, Any], provider: str, label: str) -> ToolCall:
    """A `ToolCall` from a provider's answer; a nameless or id-less one is a protocol error."""
    if not name:
        raise protocol_error(provider, label, "a tool call without a name")
    try:
        return ToolCall(id=id, name=name, arguments=arguments)
    except ValueError as exc:
        raise protocol_error(provider, label, str(exc)) from None


_SAFE_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _digest_id(value: str, length: int) -> str:
    number = int.from_bytes(hashlib.sha256(value.encode("utf-8")).digest()[:16], "big")
    out = []
    for _ in range(length):
        number, digit = divmod(number, len(_ALNUM))
        out.append(_ALNUM[digit])
    return "".join(out)


def stable_id(*parts: str) -> str:
    """A tool-call id made from what identifies the call (for APIs that give none)."""
    return "call_" + _digest_id("\x1f".join(parts), 22)


def safe_id(value: str, pattern: re.Pattern[str] = _SAFE_ID, length: int = 24) -> str:
    """``value`` if it matches ``pattern``, else a stable hash of it that does.

    A tool call and the result that answers it carry the same id, so both map
    to the same replacement: a conversation keeps its pairs across protocols.
    """
    if pattern.match(value):
        return value
    return _digest_id(value, length)


class ToolCallAssembler:
    """Tool calls streamed in fragments, keyed by the protocol's index; whole when finished."""

    __slots__ = ("_label", "_open", "_provider")

    def __init__(self, provider: str, label: str) -> None:
        self._provider = provider
        self._label = label
        self._open: dict[int, list[str]] = {}  # index -> [id, name, argument fragments...]

    def start(self, index: int, id: str | None, name: str | None) -> None:
        entry = self._open.get(index)
        if entry is None:
            self._open[index] = [id or "", name or ""]
            return
        if id:
            entry[0] = id
        if name:
            entry[1] = name

    def add(self, index: int, fragment: str) -> None:
        entry = self._open.get(index)
        if entry is None:
            entry = self._open[index] = ["", ""]
        entry.append(fragment)

    def __bool__(self) -> bool:
        return bool(self._open)

    def finish(self, index: int) -> list[ToolCall]:
        entry = self._open.pop(index, None)
        return [] if entry is None else [self._whole(entry)]

    def finish_before(self, index: int) -> list[ToolCall]:
        """Close every call with a lower index (a later one has started: they are complete)."""
        done = sorted(i for i in self._open if i < index)
        return [self._whole(self._open.pop(i)) for i in done]

    def finish_all(self) -> list[ToolCall]:
        calls = [self._whole(self._open[i]) for i in sorted(self._open)]
        self._open.clear()
        return calls

    def _whole(self, entry: list[str]) -> ToolCall:
        id_, name = entry[0], entry[1]
        arguments = parse_arguments("".join(entry[2:]), self._provider, self._label, name)
        if not id_:
            raise protocol_error(self._provider, self._label, f"tool call {name!r} without an id")
        return tool_call(id_, name, arguments, self._provider, self._label)
