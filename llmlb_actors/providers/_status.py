"""Shared HTTP status rules: which statuses retry, which disable a provider, Retry-After.

Every adapter classifies error statuses through `classify_status` (via
`error_for_status`), so the retry policy of an HTTP answer lives in one place.
Sans-I/O: pure functions of status, headers and text.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING

from .._errors import LLMError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["classify_status", "error_for_status", "parse_retry_after"]

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
