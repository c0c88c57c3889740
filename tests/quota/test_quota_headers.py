"""Rate-limit signals as each provider writes them: headers, Retry-After, Gemini's error body."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmlb_actors.quota import (
    Hint,
    parse_gemini_quota,
    parse_go_duration,
    parse_rate_limit_headers,
    parse_rfc3339,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("12ms", 0.012),
        ("1m30.5s", 90.5),
        ("2h0m0s", 7200.0),
        ("500us", 0.0005),
        ("500\u00b5s", 0.0005),
        ("250ns", 2.5e-7),
        ("0", 0.0),
        ("0s", 0.0),
        (".5s", 0.5),
        ("1.5", 1.5),  # a bare number: seconds, as OpenAI-compatible servers send
        ("-1s", -1.0),  # parsed as sent; clamping is the budget's business
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "1m30", "abc", "1s junk", "nan", "inf", "9" * 80])
def test_malformed_go_durations_are_none(text: str) -> None:
    assert parse_go_duration(text) is None


@given(st.text(max_size=40))
def test_go_duration_never_raises(text: str) -> None:
    parse_go_duration(text)


def test_openai_headers_on_every_response() -> None:
    obs = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-limit-tokens": "160000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-remaining-tokens": "159976",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert obs is not None
    assert obs.source == "openai"
    assert obs.requests == Hint(limit=5000, remaining=4999, reset=pytest.approx(0.012))
    assert obs.tokens == Hint(limit=160000, remaining=159976, reset=360.0)
    assert obs.retry_after is None


def test_retry_after_ms_wins_over_retry_after() -> None:
    obs = parse_rate_limit_headers({"retry-after-ms": "1500", "retry-after": "20"})
    assert obs is not None
    assert obs.retry_after == pytest.approx(1.5)
    obs = parse_rate_limit_headers({"retry-after": "20"})
    assert obs is not None
    assert obs.retry_after == 20.0
    obs = parse_rate_limit_headers({"retry-after-ms": "soon", "retry-after": "3"})
    assert obs is not None
    assert obs.retry_after == 3.0


def test_anthropic_headers_with_rfc3339_resets() -> None:
    wall = dt.datetime(2025, 10, 25, 12, 0, 0, tzinfo=dt.UTC).timestamp()
    obs = parse_rate_limit_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2025-10-25T12:00:02Z",
            "anthropic-ratelimit-tokens-limit": "50000",
            "anthropic-ratelimit-tokens-remaining": "49000",
            "anthropic-ratelimit-tokens-reset": "2025-10-25T12:01:00+00:00",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "40000",
            "anthropic-ratelimit-input-tokens-reset": "2025-10-25T12:00:00.500Z",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "7000",
            "anthropic-ratelimit-output-tokens-reset": "2025-10-25T13:00:00+01:00",
            "retry-after": "2",
        },
        wall=wall,
    )
    assert obs is not None
    assert obs.source == "anthropic"
    assert obs.requests == Hint(limit=50, remaining=49, reset=2.0)
    assert obs.tokens == Hint(limit=50000, remaining=49000, reset=60.0)
    assert obs.input_tokens == Hint(limit=40000, remaining=40000, reset=0.5)
    assert obs.output_tokens == Hint(limit=8000, remaining=7000, reset=0.0)
    assert obs.retry_after == 2.0


def test_rfc3339_needs_an_offset() -> None:
    assert parse_rfc3339("2025-10-25T12:00:00", wall=0) is None
    assert parse_rfc3339("yesterday", wall=0) is None
    assert parse_rfc3339("1970-01-01T00:00:10Z", wall=4.0) == 6.0


def test_no_rate_limit_headers_is_none() -> None:
    assert parse_rate_limit_headers({"content-type": "application/json"}) is None


def test_malformed_values_are_ignored_with_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llmlb_actors.quota")
    obs = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "many",
            "x-ratelimit-remaining-requests": "12",
            "x-ratelimit-reset-requests": "soon",
            "x-ratelimit-limit-tokens": "1e999",
            "anthropic-ratelimit-requests-reset": "not a date",
            "retry-after": "whenever",
        }
    )
    assert obs is not None
    assert obs.requests == Hint(remaining=12)
    assert obs.tokens is None
    assert obs.retry_after is None
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("x-ratelimit-limit-requests" in m for m in debug)
    assert any("x-ratelimit-reset-requests" in m for m in debug)
    assert any("retry-after" in m for m in debug)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
                "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-requests-remaining",
                "retry-after",
                "retry-after-ms",
            ]
        ),
        st.text(max_size=70),
    )
)
def test_header_parsing_never_raises(headers: dict[str, str]) -> None:
    parse_rate_limit_headers(headers, wall=0.0)


def _gemini_429(*violations: str, retry: str | None = "45.837906927s") -> bytes:
    details: list[dict[str, object]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/"
                    "generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"},
                    "quotaValue": "10",
                }
                for quota_id in violations
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
    ]
    if retry is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry})
    error = {
        "code": 429,
        "message": "You exceeded your current quota.",
        "status": "RESOURCE_EXHAUSTED",
    }
    return json.dumps({"error": {**error, "details": details}}).encode()


def test_gemini_retry_info() -> None:
    obs = parse_gemini_quota(_gemini_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"))
    assert obs is not None
    assert obs.retry_after == pytest.approx(45.837906927)
    assert obs.exhausted_for is None


def test_gemini_per_day_quota_exhausts_until_midnight_pacific() -> None:
    # 2025-06-01 20:00 UTC is 13:00 PDT: eleven hours to midnight in Mountain View.
    wall = dt.datetime(2025, 6, 1, 20, 0, tzinfo=dt.UTC).timestamp()
    body = _gemini_429(
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        retry="20s",
    )
    obs = parse_gemini_quota(body, wall=wall)
    assert obs is not None
    assert obs.retry_after == 20.0
    assert obs.exhausted_for == pytest.approx(11 * 3600.0)


def test_gemini_body_as_a_json_array_and_garbage() -> None:
    body = b"[" + _gemini_429("GenerateRequestsPerMinutePerProjectPerModel", retry="3s") + b"]"
    obs = parse_gemini_quota(body)
    assert obs is not None
    assert obs.retry_after == 3.0
    assert parse_gemini_quota(b"not json") is None
    assert parse_gemini_quota(b"[]") is None
    assert parse_gemini_quota(b'{"error": {"code": 500}}') is None
    assert parse_gemini_quota(_gemini_429("x", retry="later")) is None
