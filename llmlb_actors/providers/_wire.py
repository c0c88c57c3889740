"""Strictly private helpers shared by the built-in protocol adapters.

One JSON encoder, typed decoding that turns every malformed body into a
``protocol`` `LLMError`, the error-body fallback text, and the header hygiene
every adapter needs (credentials are `.._secrets.Secret`). Kept here so each
adapter module holds only its protocol's shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import msgspec

from .._errors import ConfigError, LLMError
from .._models import Usage

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._config import ProviderConfig
    from .._models import StreamChunk
    from .._sse import SSEEvent
    from ._adapter import StreamDecoder

__all__ = [
    "ENCODER",
    "body_text",
    "check_header_value",
    "decode",
    "feed_event",
    "header_list",
    "protocol_error",
    "truncated_error",
    "try_decode",
    "usage",
]

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
