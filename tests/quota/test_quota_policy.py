"""The pure budget arithmetic: rolling window, token bucket, daily budget, one provider's budget."""

from __future__ import annotations

import math

import pytest

from llmlb_actors._quota._bucket import TokenBucket
from llmlb_actors._quota._budget import ProviderBudget, requests_per_second, sanitize
from llmlb_actors._quota._daily import DailyBudget
from llmlb_actors._quota._window import RollingWindow
from llmlb_actors.quota import Cost, Hint, Limits, Observation

# -- rolling window ------------------------------------------------------------------------


def test_window_admits_cap_then_waits_for_the_oldest_to_leave() -> None:
    window = RollingWindow(3, 1.0)
    for t in (0.0, 0.1, 0.2):
        assert window.earliest(t) == t
        window.add(t)
    assert window.earliest(0.3) == pytest.approx(1.0)  # the event at 0.0 leaves at 1.0
    assert window.remaining(0.3) == 0
    assert window.earliest(1.0) == 1.0
    window.add(1.0)
    assert window.earliest(1.0) == pytest.approx(1.1)


def test_window_edges_are_half_open() -> None:
    window = RollingWindow(1, 1.0)
    window.add(5.0)
    assert window.count(5.999) == 1
    assert window.count(6.0) == 0  # an event leaves at exactly its time + period


def test_window_shrinking_cap_counts_every_event_still_inside() -> None:
    window = RollingWindow(4, 1.0)
    for t in (0.0, 0.25, 0.5, 0.75):
        window.add(t)
    window.cap = 2
    # Three of the four must leave before one more fits.
    assert window.earliest(0.8) == pytest.approx(1.5)


def test_requests_per_second_is_the_ceiling_of_rpm_over_60() -> None:
    assert requests_per_second(600) == 10
    assert requests_per_second(601) == 11
    assert requests_per_second(1) == 1
    assert requests_per_second(60) == 1
    assert requests_per_second(3500) == 59


# -- token bucket --------------------------------------------------------------------------


def test_bucket_refills_continuously_and_waits_exactly() -> None:
    bucket = TokenBucket(600, 0.0)  # 10 tokens a second
    bucket.take(600, 0.0)
    assert bucket.earliest(50, 0.0) == pytest.approx(5.0)
    assert bucket.earliest(50, 5.0) == 5.0
    assert bucket.remaining(30.0) == pytest.approx(300)
    assert bucket.time_to_full(30.0) == pytest.approx(30.0)


def test_bucket_never_admits_more_than_its_capacity() -> None:
    assert TokenBucket(100, 0.0).earliest(101, 0.0) == math.inf


def test_bucket_reconcile_refunds_and_charges() -> None:
    bucket = TokenBucket(1000, 0.0, period=math.inf)  # no refill: exact arithmetic
    bucket.take(300, 0.0)
    bucket.reconcile(300, 120, 1.0)
    assert bucket.level == pytest.approx(880)
    bucket.take(800, 1.0)
    bucket.reconcile(800, 900, 2.0)  # a reply longer than reserved is charged after the fact
    assert bucket.level == pytest.approx(-20)
    assert bucket.earliest(1, 2.0) == math.inf  # no refill rate and no reset: never


def test_bucket_observed_remaining_only_lowers_and_reset_fills() -> None:
    bucket = TokenBucket(math.inf, 0.0)  # limit unknown: no refill rate
    bucket.observe(40, 10.0, 0.0)
    assert bucket.earliest(30, 0.0) == 0.0
    assert bucket.earliest(50, 0.0) == 10.0  # waits for the provider's reset
    bucket.observe(90, 10.0, 1.0)  # a higher count never raises our level
    assert bucket.remaining(1.0) == 40
    assert bucket.earliest(50, 10.0) == 10.0
    assert bucket.remaining(10.0) == math.inf


# -- daily budget --------------------------------------------------------------------------


def test_daily_budget_is_a_rolling_day_counted_in_minute_slots() -> None:
    day = DailyBudget(3)
    for t in (10.0, 70.0, 130.0):
        day.take(1, t)
    assert day.remaining(200.0) == 0
    # The first slot (0-60 s) leaves 24 h after it ends.
    assert day.earliest(1, 200.0) == pytest.approx(60.0 + 86_400.0)
    assert day.earliest(2, 200.0) == pytest.approx(120.0 + 86_400.0)
    assert day.earliest(4, 200.0) == math.inf
    assert day.remaining(86_460.0) == 1


def test_daily_budget_adjust_refunds_into_the_same_slot() -> None:
    day = DailyBudget(1000)
    slot = day.take(600, 30.0)
    day.take(100, 100.0)
    day.adjust(slot, -400, 200.0)
    assert day.remaining(200.0) == pytest.approx(700)
    day.adjust(slot, +50, 200.0)
    assert day.remaining(200.0) == pytest.approx(650)


# -- one provider ----------------------------------------------------------------------------


def test_budget_rpm_and_tpm_bind_in_turn() -> None:
    budget = ProviderBudget(Limits(rpm=120, tpm=600), 0.0)  # 2 a second, 10 tokens a second
    cost = Cost(100, 50)
    assert budget.earliest(cost, 0.0).admits(0.0)
    budget.reserve(cost, 0.0, 1)
    budget.reserve(cost, 0.0, 2)
    verdict = budget.earliest(cost, 0.0)
    assert verdict.reason == "rpm"
    assert verdict.at == pytest.approx(1.0)
    for i in range(3, 5):
        budget.reserve(cost, 1.0 + i, i)
    verdict = budget.earliest(cost, 4.0)
    assert verdict.reason == "tpm"  # 600 capacity: four 150-token reservations leave 0 + refill


def test_budget_refuses_forever_what_is_larger_than_a_whole_budget() -> None:
    budget = ProviderBudget(Limits(tpm=1000), 0.0)
    verdict = budget.earliest(Cost(900, 200), 0.0)
    assert not verdict.fits
    assert verdict.reason == "tpm"
    assert not ProviderBudget(Limits(tpd=10), 0.0).earliest(Cost(11), 0.0).fits


def test_failed_attempt_refunds_its_completion_reservation() -> None:
    budget = ProviderBudget(Limits(tpm=6000), 0.0)
    budget.reserve(Cost(100, 400), 0.0, 7)
    tokens = budget.buckets["tokens"]
    assert tokens.remaining(0.0) == pytest.approx(5500)
    budget.reconcile(7, None, 0.0)
    assert tokens.remaining(0.0) == pytest.approx(5900)  # the prompt stays spent
    budget.reconcile(7, None, 0.0)  # settling twice changes nothing
    assert tokens.remaining(0.0) == pytest.approx(5900)


def test_success_is_reconciled_with_real_usage() -> None:
    budget = ProviderBudget(Limits(tpm=6000, tpd=10_000), 0.0)
    budget.reserve(Cost(100, 400), 0.0, 1)
    budget.reconcile(1, Cost(90, 30), 0.0)
    assert budget.buckets["tokens"].remaining(0.0) == pytest.approx(6000 - 120)
    assert budget.day_tokens is not None
    assert budget.day_tokens.remaining(0.0) == pytest.approx(10_000 - 120)


def test_learned_limits_combine_with_configured_ones_stricter_wins() -> None:
    budget = ProviderBudget(Limits(rpm=600, tpm=100_000), 0.0)
    budget.observe(
        Observation(requests=Hint(limit=300), tokens=Hint(limit=200_000)), 0.0
    )  # requests stricter than configured, tokens looser
    assert budget.window is not None
    assert budget.window.cap == 5
    assert budget.buckets["tokens"].capacity == 100_000
    view = budget.view(0.0)
    assert (view.learned_rpm, view.learned_tpm) == (300, 200_000)


def test_remaining_zero_without_limits_keeps_the_provider_out_until_its_reset() -> None:
    budget = ProviderBudget(Limits(), 0.0)
    budget.observe(Observation(requests=Hint(remaining=0, reset=6.0)), 0.0)
    verdict = budget.earliest(Cost(10), 1.0)
    assert (verdict.at, verdict.reason) == (6.0, "requests")
    assert budget.earliest(Cost(10), 6.0).admits(6.0)


def test_remaining_with_a_known_limit_refills_at_the_limit_rate() -> None:
    budget = ProviderBudget(Limits(), 0.0)
    budget.observe(Observation(tokens=Hint(limit=6000, remaining=0, reset=60.0)), 0.0)
    assert budget.earliest(Cost(100), 0.0).at == pytest.approx(1.0)  # 100 a second


def test_retry_after_and_daily_exhaustion_hold_the_provider() -> None:
    budget = ProviderBudget(Limits(), 0.0)
    budget.observe(Observation(retry_after=2.5), 0.0)
    assert budget.earliest(Cost(1), 0.0).reason == "retry-after"
    assert budget.earliest(Cost(1), 2.5).admits(2.5)
    budget.observe(Observation(exhausted_for=30_000.0), 3.0)
    verdict = budget.earliest(Cost(1), 4.0)
    assert (verdict.at, verdict.reason) == (30_003.0, "daily-quota")


def test_probe_admits_one_at_a_time_until_an_answer() -> None:
    budget = ProviderBudget(Limits(), 0.0, probe=True)
    assert budget.earliest(Cost(1), 0.0).admits(0.0)
    budget.reserve(Cost(1), 0.0, 1)
    verdict = budget.earliest(Cost(1), 0.0)
    assert (verdict.at, verdict.fits, verdict.reason) == (math.inf, True, "probe")
    budget.reconcile(1, None, 0.5)  # a failure teaches nothing: still probing, one at a time
    budget.reserve(Cost(1), 0.5, 2)
    assert budget.earliest(Cost(1), 0.5).reason == "probe"
    budget.reconcile(2, Cost(1, 1), 1.0)  # an answer: probing ends
    budget.reserve(Cost(1), 1.0, 3)
    assert budget.earliest(Cost(1), 1.0).admits(1.0)


def test_observation_with_limits_ends_a_probe() -> None:
    budget = ProviderBudget(Limits(), 0.0, probe=True)
    budget.reserve(Cost(1), 0.0, 1)
    budget.observe(Observation(requests=Hint(limit=600, remaining=599, reset=0.1)), 0.2)
    assert not budget.probing
    assert budget.earliest(Cost(1), 0.2).admits(0.2)


def test_sanitize_clamps_absurd_numbers() -> None:
    obs = sanitize(
        Observation(
            requests=Hint(limit=-1, remaining=-1, reset=0.0),  # Azure's placeholders
            tokens=Hint(limit=1000, remaining=-5, reset=365 * 86_400.0),
            retry_after=-3.0,
            exhausted_for=10 * 86_400.0,
        )
    )
    assert obs.requests == Hint(reset=0.0)
    assert obs.tokens == Hint(limit=1000, remaining=0.0, reset=86_400.0)
    assert obs.retry_after == 0.0
    assert obs.exhausted_for == 86_400.0
    assert sanitize(Observation(tokens=Hint(limit=10, remaining=50))).tokens == Hint(
        limit=10, remaining=10
    )


def test_absurd_reset_is_clamped_to_a_day() -> None:
    budget = ProviderBudget(Limits(), 0.0)
    budget.observe(Observation(requests=Hint(remaining=0, reset=1e12)), 0.0)
    assert budget.earliest(Cost(1), 0.0).at == pytest.approx(86_400.0)


def test_view_reports_limits_remaining_refill_and_headroom() -> None:
    budget = ProviderBudget(Limits(rpm=600, tpm=6000, rpd=1000), 0.0)
    for i in range(10):
        budget.reserve(Cost(30, 0), 0.0, i)
    view = budget.view(0.0)
    assert view.remaining_requests == 0
    assert view.remaining_tokens == 5700
    assert view.refill_in == pytest.approx(1.0)
    assert view.reason == "rpm"
    assert view.headroom == 0.0
    assert budget.view(1.0).headroom == pytest.approx(5700 / 6000 + 100 / 6000, abs=0.02)


def test_reconfigure_keeps_usage() -> None:
    budget = ProviderBudget(Limits(rpm=600), 0.0)
    for i in range(10):
        budget.reserve(Cost(1), 0.0, i)
    budget.reconfigure(Limits(rpm=1200), 0.0)
    assert budget.window is not None
    assert budget.window.remaining(0.0) == 10
    budget.reconfigure(Limits(), 0.0)
    assert budget.window is None


def test_window_counts_send_times_not_admission_times() -> None:
    # Ten admitted at 0 go out at 0.3 (a connection was being set up): the next ten may
    # only start at 1.3, or the provider would see twenty within one second.
    budget = ProviderBudget(Limits(rpm=600), 0.0)
    for i in range(10):
        budget.reserve(Cost(1), 0.0, i)
    for i in range(10):
        budget.sent(i, 0.3)
    assert budget.earliest(Cost(1), 0.5).at == pytest.approx(1.3)
    budget.sent(99, 0.4)  # unknown reservations are ignored
    budget.reconcile(0, Cost(1, 1), 2.0)
    budget.sent(0, 2.1)  # and so are settled ones
    assert budget.window is not None
    assert budget.window.count(1.31) == 0


def test_a_limit_learned_later_counts_requests_already_sent() -> None:
    budget = ProviderBudget(Limits(), 0.0, probe=True)
    budget.reserve(Cost(1), 0.0, 1)
    budget.sent(1, 0.2)
    budget.observe(Observation(requests=Hint(limit=60)), 0.5)  # one a second
    assert budget.earliest(Cost(1), 0.5).at == pytest.approx(1.2)
