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
and never disables a provider. Numbers are returned as sent; `sanitize`
(in ``_budget``) clamps absurd ones.
"""

from __future__ import annotations

import datetime as dt
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
_MAX_TEXT: Final = 64  # no header value we read is longer; longer ones are not parsed


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
    if text == "0":
        return 0.0
    number = _number(text)
    if number is not None:
        return sign * number
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _GO_PART.match(text, pos)
        if match is None:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    return sign * total if math.isfinite(total) else None


def _number(text: str) -> float | None:
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
    values: dict[str, float | None] = {}
    for field, name in (("limit", limit_name), ("remaining", remaining_name)):
        raw = headers.get(name)
        value = None if raw is None or len(raw) > _MAX_TEXT else _number(raw.strip())
        if raw is not None and value is None:
            log.debug("ignored %s: not a number: %.64r", name, raw)
        values[field] = value
    raw = headers.get(reset_name)
    reset = None
    if raw is not None:
        go = reset_parser == "go"
        reset = parse_go_duration(raw) if go else parse_rfc3339(raw, wall=wall)
        if reset is None:
            log.debug("ignored %s: not a %s time: %.64r", reset_name, reset_parser, raw)
    hint = Hint(limit=values["limit"], remaining=values["remaining"], reset=reset)
    return None if hint.empty else hint


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


def parse_rate_limit_headers(
    headers: Mapping[str, str], *, wall: float | None = None
) -> Observation | None:
    """An `Observation` from one response's headers (names lower-case), or ``None``.

    Both header families are read, whatever the protocol: OpenAI-compatible
    servers and gateways send OpenAI's. Where both are present, Anthropic's win.
    ``wall`` (epoch seconds, default now) anchors Anthropic's RFC 3339 resets.
    """
    requests = _hint(headers, _OPENAI["requests"], "go", wall)
    tokens = _hint(headers, _OPENAI["tokens"], "go", wall)
    source = "openai" if requests is not None or tokens is not None else ""
    a_requests = _hint(headers, _ANTHROPIC["requests"], "rfc3339", wall)
    a_tokens = _hint(headers, _ANTHROPIC["tokens"], "rfc3339", wall)
    input_tokens = _hint(headers, _ANTHROPIC["input-tokens"], "rfc3339", wall)
    output_tokens = _hint(headers, _ANTHROPIC["output-tokens"], "rfc3339", wall)
    if a_requests or a_tokens or input_tokens or output_tokens:
        requests = a_requests or requests
        tokens = a_tokens or tokens
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
