"""Pure policy pieces: backoff, the circuit breaker, status classification, Retry-After."""

from __future__ import annotations

import random

import pytest

from llmlb_actors._backoff import compute_backoff
from llmlb_actors._circuit import Circuit
from llmlb_actors.providers._status import classify_status, parse_retry_after
from llmlb_actors.testing import ZeroJitter


def test_backoff_doubles_and_caps() -> None:
    rng = ZeroJitter()
    assert [compute_backoff(n, 1.0, 5.0, rng) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert compute_backoff(0, 1.0, 5.0, rng) == 0.0
    assert compute_backoff(3, 0.0, 5.0, rng) == 0.0


def test_backoff_full_jitter_stays_in_range() -> None:
    rng = random.Random(7)
    waits = [compute_backoff(3, 0.5, 30.0, rng) for _ in range(1000)]
    assert all(0.0 < w <= 2.0 for w in waits)
    assert min(waits) < 0.2 and max(waits) > 1.8  # noqa: PT018 - the spread is the point


def test_circuit_opens_after_threshold_then_half_open_trial() -> None:
    c = Circuit(threshold=3, cooldown=10.0)
    for t in (1.0, 2.0):
        c.record_failure(t, "x")
    assert c.state == "closed"
    c.record_failure(3.0, "x")
    assert c.state == "open"
    assert not c.available(12.9)
    assert c.available(13.0)
    c.on_dispatch(13.0)
    assert c.state == "half-open"
    assert not c.available(13.0)  # one trial at a time
    c.record_failure(14.0, "x")
    assert c.state == "open"
    assert c.open_until == 24.0
    c.on_dispatch(24.0)
    c.record_success()
    assert c.state == "closed"
    assert c.failures == 0


def test_success_resets_consecutive_failures() -> None:
    c = Circuit(threshold=2, cooldown=1.0)
    c.record_failure(0.0, "x")
    c.record_success()
    c.record_failure(1.0, "x")
    assert c.state == "closed"


@pytest.mark.parametrize(
    ("status", "retryable", "disables"),
    [
        (400, False, False),
        (401, False, True),
        (403, False, True),
        (404, False, True),
        (408, True, False),
        (409, True, False),
        (422, False, False),
        (429, True, False),
        (500, True, False),
        (502, True, False),
        (503, True, False),
        (504, True, False),
        (529, True, False),
        (307, False, False),
    ],
)
def test_status_classification(status: int, retryable: bool, disables: bool) -> None:
    assert classify_status(status) == (retryable, disables)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # 07:28:00 GMT that day
    assert parse_retry_after(headers, now=now) == expected
