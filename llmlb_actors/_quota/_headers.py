"""What providers say about their quota, read from response headers and Gemini's error body.

=====================  =======================================================================
family                 read
=====================  =======================================================================
OpenAI (and Azure,     ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; the reset is
OpenAI-compatible)     a Go duration (``6m0s``, ``1s``, ``12ms``, ``1m30.5s``): the time until
                       the budget is full again
Anthropic              ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-``
                       ``{limit,remaining,reset}``; the reset is an RFC 3339 time
any                    ``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date)
Gemini (429 body)      ``RetryInfo.retryDelay`` (``"45.8s"``); a ``QuotaFailure`` naming a
                       per-day quota means exhausted until midnight Pacific time, Google's
                       reset for daily quotas
=====================  =======================================================================

A value that cannot be parsed is ignored with a DEBUG line: it never raises
and never disables a provider. Values are parsed through small caches: a
provider sends the same limits, and mostly the same resets, on every answer.
Numbers are returned as sent; `sanitize` (in ``_budget``) clamps absurd ones.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import re
import time
from typing import TYPE_CHECKING, Final

import msgspec

from ..providers._status import parse_retry_after
from ._types import Hint, Observation

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "parse_gemini_quota",
    "parse_go_duration",
    "parse_rate_limit_headers",
    "parse_rfc3339",
    "seconds_to_pacific_midnight",
]

log = logging.getLogger("llmlb_actors.quota")

_GO_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DECIMAL: Final = frozenset("0123456789.")
_GO_DURATION: Final = re.compile(r"(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+")
_MAX_TEXT: Final = 64  # no header value we read is longer; longer ones are not parsed


@functools.lru_cache(maxsize=1024)
def parse_go_duration(text: str) -> float | None:
    """Seconds from a Go ``time.Duration`` string (``"6m0s"``, ``"1.5s"``, ``"12ms"``).

    A bare number is taken as seconds (OpenAI-compatible servers send those).
    Returns ``None`` for anything else.
    """
    text = text.strip()
    if not text or len(text) > _MAX_TEXT:
        return None
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
        if not text:
            return None
    last = text[-1]
    if last.isdigit() or last == ".":  # no unit: plain seconds
        number = _number(text)
        return None if number is None else sign * number
    # The usual shapes first, without a regex: "12ms", "1s", "1.5s".
    if last == "s" and len(text) > 1:
        if text[-2] == "m":
            head, scale = text[:-2], 0.001
        else:
            head, scale = text[:-1], 1.0
        if head and _DECIMAL.issuperset(head) and head.count(".") <= 1 and head != ".":
            return sign * float(head) * scale
    if _GO_DURATION.fullmatch(text) is None:
        return None
    total = 0.0
    for number_text, unit in _GO_PART.findall(text):
        total += float(number_text) * _GO_UNITS[unit]
    return sign * total if math.isfinite(total) else None


@functools.lru_cache(maxsize=1024)
def _number(text: str) -> float | None:
    if len(text) > _MAX_TEXT:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_rfc3339(text: str, *, wall: float | None = None) -> float | None:
    """Seconds from now (``wall``, epoch seconds) until an RFC 3339 time; ``None`` if malformed.

    The time must carry its offset (``Z`` or ``+hh:mm``): a local time means nothing here.
    """
    text = text.strip()
    if not text or len(text) > _MAX_TEXT:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if wall is None else wall
    return when.timestamp() - current


def _hint(
    headers: Mapping[str, str],
    names: tuple[str, str, str],
    reset_parser: str,
    wall: float | None,
) -> Hint | None:
    limit_name, remaining_name, reset_name = names
    raw_limit = headers.get(limit_name)
    raw_remaining = headers.get(remaining_name)
    raw_reset = headers.get(reset_name)
    if raw_limit is None and raw_remaining is None and raw_reset is None:
        return None
    limit = remaining = reset = None
    if raw_limit is not None:
        limit = _number(raw_limit)
        if limit is None:
            log.debug("ignored %s: not a number: %.64r", limit_name, raw_limit)
    if raw_remaining is not None:
        remaining = _number(raw_remaining)
        if remaining is None:
            log.debug("ignored %s: not a number: %.64r", remaining_name, raw_remaining)
    if raw_reset is not None:
        if reset_parser == "go":
            reset = parse_go_duration(raw_reset)
        else:
            reset = parse_rfc3339(raw_reset, wall=wall)
        if reset is None:
            log.debug("ignored %s: not a %s time: %.64r", reset_name, reset_parser, raw_reset)
    if limit is None and remaining is None and reset is None:
        return None
    return Hint(limit=limit, remaining=remaining, reset=reset)


_OPENAI: Final = {
    kind: (
        f"x-ratelimit-limit-{kind}",
        f"x-ratelimit-remaining-{kind}",
        f"x-ratelimit-reset-{kind}",
    )
    for kind in ("requests", "tokens")
}
_ANTHROPIC: Final = {
    kind: (
        f"anthropic-ratelimit-{kind}-limit",
        f"anthropic-ratelimit-{kind}-remaining",
        f"anthropic-ratelimit-{kind}-reset",
    )
    for kind in ("requests", "tokens", "input-tokens", "output-tokens")
}


_NAMES: Final = frozenset(
    [name for names in (*_OPENAI.values(), *_ANTHROPIC.values()) for name in names]
    + ["retry-after", "retry-after-ms"]
)


def parse_rate_limit_headers(
    headers: Mapping[str, str], *, wall: float | None = None
) -> Observation | None:
    """An `Observation` from one response's headers (names lower-case), or ``None``.

    Either header family is read, whatever the protocol: OpenAI-compatible
    servers and gateways send OpenAI's. An answer with OpenAI's is not searched
    for Anthropic's.
    ``wall`` (epoch seconds, default now) anchors Anthropic's RFC 3339 resets.
    """
    if _NAMES.isdisjoint(headers):
        return None  # most answers of most providers: one pass over the names
    requests = _hint(headers, _OPENAI["requests"], "go", wall)
    tokens = _hint(headers, _OPENAI["tokens"], "go", wall)
    source = "openai" if requests is not None or tokens is not None else ""
    input_tokens = output_tokens = None
    if not source:  # an API sends one family; OpenAI's is by far the commonest
        requests = _hint(headers, _ANTHROPIC["requests"], "rfc3339", wall)
        tokens = _hint(headers, _ANTHROPIC["tokens"], "rfc3339", wall)
        input_tokens = _hint(headers, _ANTHROPIC["input-tokens"], "rfc3339", wall)
        output_tokens = _hint(headers, _ANTHROPIC["output-tokens"], "rfc3339", wall)
        if requests or tokens or input_tokens or output_tokens:
            source = "anthropic"
    retry_after = parse_retry_after(headers, now=wall)
    if retry_after is None and ("retry-after" in headers or "retry-after-ms" in headers):
        log.debug("ignored an unparseable retry-after")
    observation = Observation(
        requests=requests,
        tokens=tokens,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        retry_after=retry_after,
        source=source or ("retry-after" if retry_after is not None else ""),
    )
    return None if observation.empty else observation


# ---- Gemini --------------------------------------------------------------------------------


class _Violation(msgspec.Struct, rename="camel"):
    quota_id: str = ""
    quota_metric: str = ""


class _Detail(msgspec.Struct, rename="camel"):
    type: str = msgspec.field(name="@type", default="")
    retry_delay: str = ""
    violations: list[_Violation] = []


class _Error(msgspec.Struct):
    details: list[_Detail] = []


class _Body(msgspec.Struct):
    error: _Error


_GEMINI_BODY: Final = msgspec.json.Decoder(_Body | list[_Body])
_PER_DAY: Final = re.compile(r"per_?day", re.IGNORECASE)


def _protobuf_duration(text: str) -> float | None:
    # google.protobuf.Duration in JSON is "<seconds>s"; accept Go-style too, to be lenient.
    return parse_go_duration(text)


def parse_gemini_quota(body: bytes, *, wall: float | None = None) -> Observation | None:
    """An `Observation` from a Gemini error body (``RetryInfo``, ``QuotaFailure``), or ``None``.

    A violation whose ``quotaId`` or ``quotaMetric`` names a per-day quota
    (``GenerateRequestsPerDayPerProjectPerModel-FreeTier``) marks the provider
    exhausted until the next midnight Pacific time.
    """
    try:
        decoded = _GEMINI_BODY.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(decoded, list):
        if not decoded:
            return None
        decoded = decoded[0]
    retry_after = None
    per_day = False
    for detail in decoded.error.details:
        if detail.type.endswith("google.rpc.RetryInfo") and detail.retry_delay:
            retry_after = _protobuf_duration(detail.retry_delay)
            if retry_after is None:
                log.debug("ignored RetryInfo.retryDelay: %.64r", detail.retry_delay)
        if detail.type.endswith("google.rpc.QuotaFailure"):
            per_day = per_day or any(
                _PER_DAY.search(v.quota_id) or _PER_DAY.search(v.quota_metric)
                for v in detail.violations
            )
    exhausted_for = seconds_to_pacific_midnight(wall) if per_day else None
    observation = Observation(retry_after=retry_after, exhausted_for=exhausted_for, source="gemini")
    return None if observation.empty else observation


def _pacific() -> dt.tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database on this machine: standard time is the later midnight
        return dt.timezone(dt.timedelta(hours=-8), "PST")


def seconds_to_pacific_midnight(wall: float | None = None) -> float:
    """Seconds from ``wall`` (epoch seconds, default now) to the next midnight in Mountain View."""
    current = time.time() if wall is None else wall
    zone = _pacific()
    local = dt.datetime.fromtimestamp(current, zone)
    tomorrow = (local + dt.timedelta(days=1)).date()
    midnight = dt.datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone)
    return max(0.0, midnight.timestamp() - current)
