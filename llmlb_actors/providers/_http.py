"""Shared HTTP rules: which statuses retry, Retry-After parsing, transport error mapping.

Every adapter classifies statuses through `classify_status` and every
transport failure becomes an `LLMError` in `map_transport_errors`, so the
retry policy lives in one place.
"""

from __future__ import annotations

import email.utils
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._errors import LLMError
from .._transport._base import (
    ContentEncodingError,
    ProxyError,
    RemoteProtocolError,
    ResponseTooLarge,
    TLSError,
    TransportError,
    TransportTimeout,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "classify_status",
    "error_for_status",
    "map_transport_errors",
    "parse_retry_after",
    "transport_error",
]

_RETRYABLE_4XX = frozenset({408, 409, 429})
_DISABLING = frozenset({401, 403, 404})


def classify_status(status: int) -> tuple[bool, bool]:
    """``(retryable, disables_provider)`` for an HTTP error status.

    Retryable: 408, 409, 429, every 5xx (529 included). 401/403/404 mean the
    provider is misconfigured: not retried there, but it leaves rotation and
    the request fails over. Anything else (400, 422, ...) is the request's
    fault and fails fast.
    """
    if status in _RETRYABLE_4XX or 500 <= status <= 599:
        return True, False
    if status in _DISABLING:
        return False, True
    return False, False


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP-date).

    Header names must be lower-case (as transports deliver them). Returns
    ``None`` when absent or unparseable; negative values become 0.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value == value and value >= 0 and value != float("inf"):
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    if seconds != seconds or seconds == float("inf"):
        return None
    return max(0.0, seconds)


def error_for_status(
    provider: str,
    status: int,
    message: str,
    headers: Mapping[str, str],
    *,
    retryable: bool | None = None,
) -> LLMError:
    """An `LLMError` for an error response, classified by `classify_status`.

    ``retryable`` overrides the status rule where a body says more (a quota
    that will not come back, say).
    """
    default_retryable, disables = classify_status(status)
    if 300 <= status < 400:
        message = f"redirect to {headers.get('location', '?')!r} not followed: {message}"
    return LLMError(
        message or f"HTTP {status}",
        provider=provider,
        status=status,
        retryable=default_retryable if retryable is None else retryable,
        kind="http",
        retry_after=parse_retry_after(headers),
        disables_provider=disables,
    )


def transport_error(provider: str, exc: TransportError) -> LLMError:
    """The retryable (or not) `LLMError` for a transport exception, in one place.

    Transport messages already say what happened in words (``connection
    refused (https://host:443)``); they are used as they are. A certificate
    failure (kind ``tls``), a proxy refusing us (kind ``proxy``, 403/407) and
    a content coding we cannot decode are misconfigurations: not retried on
    the same provider, which leaves rotation as after a 401.
    """
    message = str(exc) or type(exc).__name__
    if isinstance(exc, TransportTimeout):
        return LLMError(message, provider=provider, retryable=True, kind="timeout")
    if isinstance(exc, TLSError):
        return LLMError(
            message, provider=provider, retryable=False, kind="tls", disables_provider=True
        )
    if isinstance(exc, ProxyError):
        refused = exc.status is not None and exc.status < 500
        return LLMError(
            message,
            provider=provider,
            retryable=not refused,
            kind="proxy",
            disables_provider=refused,
        )
    if isinstance(exc, ResponseTooLarge):
        return LLMError(
            f"response too large: {message}", provider=provider, retryable=False, kind="protocol"
        )
    if isinstance(exc, ContentEncodingError):
        return LLMError(
            message, provider=provider, retryable=False, kind="protocol", disables_provider=True
        )
    if isinstance(exc, RemoteProtocolError):
        return LLMError(
            f"protocol error: {message}", provider=provider, retryable=True, kind="protocol"
        )
    return LLMError(message, provider=provider, retryable=True, kind="connection")


@contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """Raise `transport_error` for a transport exception inside the block."""
    try:
        yield
    except TransportError as exc:
        raise transport_error(provider, exc) from exc
