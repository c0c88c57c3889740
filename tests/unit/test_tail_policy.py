"""Tail-latency policy as pure functions of time and state: peak-EWMA, P2C, budgets, hedge
delays, outlier ejection. Virtual time throughout: every ``now`` is a number we choose."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmlb_actors._hedge import HedgeDelay, hedge_quantile
from llmlb_actors._outlier import (
    BASE_EJECTION,
    MAX_EJECTION,
    Counts,
    Ejection,
    SuccessWindow,
    ejection_allowed,
    in_panic,
    is_outlier,
)
from llmlb_actors._p2c import power_of_two_choices
from llmlb_actors._peak_ewma import UNMEASURED_PENALTY, PeakEwma
from llmlb_actors._retry_budget import RETRY_FLOOR_PER_SECOND, WindowBudget

# -- peak-EWMA ---------------------------------------------------------------------------


def test_peak_ewma_jumps_to_a_slower_observation_at_once() -> None:
    ewma = PeakEwma(tau=10.0)
    assert ewma.cost(0.0) is None
    ewma.observe(0.05, now=1.0)
    assert ewma.cost(1.0) == 0.05
    ewma.observe(0.5, now=1.001)
    assert ewma.cost(1.001) == 0.5


def test_peak_ewma_decays_with_exp_minus_dt_over_tau() -> None:
    ewma = PeakEwma(tau=10.0)
    ewma.observe(0.5, now=0.0)
    # Without observations the cost decays toward zero (Finagle and tower decay on read).
    assert ewma.cost(10.0) == pytest.approx(0.5 * math.exp(-1.0))
    assert ewma.cost(23.0) == pytest.approx(0.5 * math.exp(-2.3))
    # A faster observation is a floor: the decayed cost never sinks below it.
    ewma.observe(0.05, now=10.0)
    assert ewma.cost(10.0) == pytest.approx(0.5 * math.exp(-1.0))
    ewma.observe(0.05, now=40.0)  # decayed to 0.5 e^-4 = 0.0092, below 0.05
    assert ewma.cost(40.0) == 0.05


def test_peak_ewma_tracks_the_recent_peak_of_steady_answers() -> None:
    rng = random.Random(3)
    ewma = PeakEwma(tau=10.0)
    now = 0.0
    for _ in range(2000):
        now += 0.004
        ewma.observe(0.04 + 0.02 * rng.random(), now)
    cost = ewma.cost(now)
    assert cost is not None
    assert 0.055 < cost <= 0.06  # peak-sensitive: near the top of 40-60 ms


def test_peak_ewma_after_a_slow_spell_returns_toward_fast_answers() -> None:
    ewma = PeakEwma(tau=10.0)
    ewma.observe(0.6, now=0.0)
    now = 0.0
    for _ in range(300):  # 30 s of 50 ms answers, ten a second
        now += 0.1
        ewma.observe(0.05, now)
    cost = ewma.cost(now)
    assert cost is not None
    assert cost == pytest.approx(max(0.05, 0.6 * math.exp(-3.0)))


def test_an_answer_under_the_cost_soon_after_an_update_changes_nothing_kept() -> None:
    ewma = PeakEwma(tau=10.0)
    ewma.observe(0.5, now=0.0)
    assert ewma.floor == 0.5
    assert ewma.due == pytest.approx(0.1)
    ewma.observe(0.4999, now=0.05)  # under the stored cost, before `due`: skipped
    assert ewma.cost(0.05) == pytest.approx(0.5 * math.exp(-0.005))
    ewma.observe(0.6, now=0.06)  # a slower answer always counts at once
    assert ewma.cost(0.06) == 0.6
    ewma.observe(0.59999, now=0.2)  # after `due`: the floor applies
    assert ewma.cost(0.2) == 0.59999


def test_failures_only_raise_the_cost() -> None:
    ewma = PeakEwma(tau=10.0)
    ewma.observe_at_least(0.002, now=0.0)  # a quick 503 before any answer: a lower bound
    assert ewma.cost(0.0) == 0.002
    ewma.observe(0.05, now=0.1)
    ewma.observe_at_least(0.001, now=0.2)  # a quick error says nothing about answers
    assert ewma.cost(0.2) == pytest.approx(0.05 * math.exp(-0.1 / 10.0))
    ewma.observe_at_least(30.0, now=0.3)  # a timeout after 30 s
    assert ewma.cost(0.3) == 30.0


def test_load_is_cost_times_pending_plus_one_and_unmeasured_get_one_probe() -> None:
    ewma = PeakEwma(tau=10.0)
    assert ewma.load(0.0, pending=0) == 0.0  # never answered, idle: try it
    assert ewma.load(0.0, pending=1) == UNMEASURED_PENALTY  # one probe at a time
    assert ewma.load(0.0, pending=2) == 2 * UNMEASURED_PENALTY
    ewma.observe(0.1, now=0.0)
    assert ewma.load(0.0, pending=0) == pytest.approx(0.1)
    assert ewma.load(0.0, pending=3) == pytest.approx(0.4)


def test_an_overtaken_attempt_keeps_the_cost_it_was_sent_at_and_stays_pending() -> None:
    ewma = PeakEwma(tau=10.0)
    ewma.observe(0.5, now=0.0)
    # Sent at 1.0 s at a cost of 0.5 e^-0.1, overtaken by a hedge at 1.11 s: the decay of
    # its 0.11 s is undone, and the provider is busy with it until 1.0 s + that cost.
    sent_at = 0.5 * math.exp(-0.1)
    ewma.abandon(started=1.0, now=1.11, overtaken=True)
    assert ewma.cost(1.11) == pytest.approx(sent_at)
    assert ewma.held(1.11) == 1
    assert ewma.load(1.11, pending=0) == pytest.approx(2 * sent_at)
    assert ewma.held(1.0 + sent_at - 1e-6) == 1
    assert ewma.cost(1.0 + sent_at) == pytest.approx(sent_at)  # no decay while held
    assert ewma.held(1.0 + sent_at + 1e-6) == 0
    assert ewma.load(2.0, pending=0) == pytest.approx(sent_at * math.exp(-(1.0 - sent_at) / 10))
    # A cancelled attempt that already ran longer than predicted raises the cost instead.
    ewma.abandon(started=3.0, now=4.0, overtaken=True)
    assert ewma.cost(4.0) == 1.0
    assert ewma.held(4.0) == 0
    # An answer observed after it was sent is newer news: only the time it ran counts.
    ewma.observe(0.05, now=30.0)
    ewma.abandon(started=29.9, now=30.01, overtaken=True)
    assert ewma.cost(30.01) == pytest.approx(max(0.11, 0.05))
    assert ewma.held(30.01) == 0


def test_a_copy_that_lost_to_an_earlier_attempt_is_only_held() -> None:
    ewma = PeakEwma(tau=10.0)
    ewma.observe(0.5, now=0.0)
    ewma.abandon(started=5.0, now=5.01, overtaken=False)  # a hedge copy, 10 ms old
    cost = 0.5 * math.exp(-0.501)
    assert ewma.cost(5.01) == pytest.approx(cost)  # the decay goes on
    assert ewma.held(5.01) == 1
    assert ewma.cost(5.2) == pytest.approx(0.5 * math.exp(-0.52))


@given(
    st.lists(
        st.tuples(st.floats(0.0, 5.0), st.floats(1e-4, 60.0), st.booleans()),
        min_size=1,
        max_size=50,
    )
)
def test_peak_ewma_is_bounded_by_the_peak_and_never_below_the_last_answer(
    steps: list[tuple[float, float, bool]],
) -> None:
    ewma = PeakEwma(tau=10.0)
    now = 0.0
    peak = 0.0
    for gap, latency, success in steps:
        now += gap
        if success:
            ewma.observe(latency, now)
            cost = ewma.cost(now)
            assert cost is not None
            # An answer just under the cost, within tau/100 of the last update, is
            # folded into the next update: meanwhile the cost may sit 1 % below it.
            assert cost >= latency * (1 - 1e-2)
        else:
            ewma.observe_at_least(latency, now)
            cost = ewma.cost(now)
            assert cost is not None
            assert cost >= latency
        peak = max(peak, latency)
        assert cost <= peak


# -- power of two choices -------------------------------------------------------------------


@given(
    loads=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=8),
    admissible=st.lists(st.booleans(), min_size=8, max_size=8),
    seed=st.integers(0, 2**32),
)
def test_p2c_never_picks_outside_the_candidates(
    loads: list[float], admissible: list[bool], seed: int
) -> None:
    providers = list(range(len(loads)))
    candidates = [p for p in providers if admissible[p]] or [providers[0]]
    rng = random.Random(seed)
    for _ in range(20):
        pick = power_of_two_choices(candidates, lambda p: loads[p], rng)
        assert pick in candidates


@given(loads=st.lists(st.floats(0.0, 100.0), min_size=2, max_size=8), seed=st.integers(0, 2**32))
def test_p2c_never_picks_the_heaviest_of_distinct_loads(loads: list[float], seed: int) -> None:
    heaviest = max(range(len(loads)), key=lambda i: loads[i])
    if sorted(loads)[-2] == loads[heaviest]:
        return  # a tie for the top: either may be picked
    rng = random.Random(seed)
    for _ in range(20):
        assert power_of_two_choices(list(range(len(loads))), lambda i: loads[i], rng) != heaviest


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_p2c_with_equal_loads_spreads_evenly(n: int) -> None:
    rng = random.Random(11)
    picks = Counter(power_of_two_choices(list(range(n)), lambda _: 1.0, rng) for _ in range(30_000))
    expected = 30_000 / n
    for i in range(n):
        assert abs(picks[i] - expected) < 5 * math.sqrt(expected), picks


def test_p2c_with_two_picks_the_lighter_every_time() -> None:
    rng = random.Random(5)
    loads = {"fast": 0.05, "slow": 0.5}
    picks = {power_of_two_choices(["slow", "fast"], loads.__getitem__, rng) for _ in range(100)}
    assert picks == {"fast"}


def test_p2c_prefers_an_idle_unmeasured_provider_and_probes_it_once() -> None:
    rng = random.Random(2)
    fresh, known = PeakEwma(10.0), PeakEwma(10.0)
    known.observe(0.05, now=0.0)
    pending = {"fresh": 0, "known": 5}
    ewmas = {"fresh": fresh, "known": known}

    def load(name: str) -> float:
        return ewmas[name].load(0.0, pending[name])

    assert power_of_two_choices(["fresh", "known"], load, rng) == "fresh"
    pending["fresh"] = 1  # its probe is out: everything else goes elsewhere until it answers
    assert {power_of_two_choices(["fresh", "known"], load, rng) for _ in range(50)} == {"known"}


# -- budgets ---------------------------------------------------------------------------------


def test_retry_budget_is_a_fraction_of_recent_requests_plus_a_floor() -> None:
    budget = WindowBudget(0.2, floor_per_second=RETRY_FLOOR_PER_SECOND)
    assert budget.reserve == 100.0
    # No requests at all: the floor alone allows 100 retries per 10 s window.
    assert sum(budget.try_spend(0.5) for _ in range(150)) == 100
    assert budget.refused == 50
    # 1,000 requests buy 200 more.
    budget.deposit(1.0, 1000)
    assert sum(budget.try_spend(1.5) for _ in range(300)) == 200
    # Ten seconds later the window has moved past all of it: the floor is back.
    assert budget.balance(11.0) == pytest.approx(100.0 + 0.2 * 1000 - 200)
    assert budget.balance(12.0) == pytest.approx(100.0)


def test_hedge_budget_has_no_floor() -> None:
    budget = WindowBudget(0.05)
    assert not budget.try_spend(0.0)
    budget.deposit(0.0, 19)
    assert not budget.try_spend(0.1)
    budget.deposit(0.2)
    assert budget.try_spend(0.3)  # 20 x 0.05 = exactly one token
    assert not budget.try_spend(0.3)
    assert budget.spent == 1
    assert budget.refused == 3


@given(
    events=st.lists(
        st.tuples(st.floats(0.0, 2.0), st.integers(0, 30), st.integers(0, 10)),
        min_size=1,
        max_size=60,
    ),
    ratio=st.sampled_from([0.05, 0.2, 1.0]),
    floor=st.sampled_from([0.0, 1.0, 10.0]),
)
def test_budget_spends_never_exceed_the_window_allowance(
    events: list[tuple[float, int, int]], ratio: float, floor: float
) -> None:
    """At every spend: spends in its window <= floor x 10 + ratio x deposits in that window."""
    budget = WindowBudget(ratio, floor_per_second=floor)
    now = 0.0
    log: list[tuple[int, int, int]] = []  # (second, deposits, spends)
    for gap, deposits, attempts in events:
        now += gap
        second = math.floor(now)
        budget.deposit(now, deposits)
        spends = sum(budget.try_spend(now) for _ in range(attempts))
        log.append((second, deposits, spends))
        if not spends:
            continue  # the bound holds at each spend; later, its funding may have expired
        window = [e for e in log if e[0] > second - 10]
        allowed = floor * 10 + ratio * sum(e[1] for e in window)
        assert sum(e[2] for e in window) <= allowed + 1e-6


def test_budget_over_a_long_run_stays_within_its_ratio() -> None:
    """An outage: 100 requests a second, each asking for 3 retries, for a minute."""
    budget = WindowBudget(0.2, floor_per_second=RETRY_FLOOR_PER_SECOND)
    requests = retries = 0
    for tick in range(600):
        now = tick / 10
        budget.deposit(now, 10)
        requests += 10
        retries += sum(budget.try_spend(now) for _ in range(30))
    assert retries <= 0.2 * requests + RETRY_FLOOR_PER_SECOND * 60 + 100
    assert retries >= 0.2 * requests  # and it is not stingier than promised


# -- hedge delay -----------------------------------------------------------------------------


def test_hedge_quantile_parses_percentiles() -> None:
    assert hedge_quantile("p95") == 0.95
    assert hedge_quantile("p50") == 0.5
    assert hedge_quantile(0.25) is None


def test_hedge_delay_is_the_percentile_across_providers_once_there_are_enough() -> None:
    delay = HedgeDelay("p95", refresh=1)
    for i in range(19):
        delay.observe(0.040 + i * 0.001)
        assert delay.delay() is None  # too few samples for a 95th percentile
    delay.observe(0.500)  # one slow provider's answer among 20
    assert delay.delay() == pytest.approx(0.058)  # nearest rank: the 19th of 20
    p99 = HedgeDelay("p99", refresh=1)
    for _ in range(99):
        p99.observe(0.05)
    assert p99.delay() is None
    p99.observe(0.05)
    assert p99.delay() == 0.05


def test_hedge_delay_follows_recent_samples_only() -> None:
    delay = HedgeDelay("p50", window=100, refresh=10)
    for _ in range(100):
        delay.observe(1.0)
    assert delay.delay() == 1.0
    for _ in range(100):
        delay.observe(0.1)
    assert delay.delay() == 0.1


def test_fixed_hedge_delay_needs_no_samples() -> None:
    delay = HedgeDelay(0.3)
    assert delay.delay() == 0.3
    delay.observe(5.0)
    assert delay.delay() == 0.3


# -- outlier ejection ----------------------------------------------------------------------


def test_a_30_percent_503_provider_is_an_outlier_against_healthy_ones() -> None:
    assert is_outlier(Counts(14, 6), Counts(40, 0))
    assert is_outlier(Counts(70, 30), Counts(195, 5))


def test_no_outlier_below_the_minimum_volume_or_gap() -> None:
    assert not is_outlier(Counts(13, 6), Counts(40, 0))  # 19 attempts: too few to judge
    assert not is_outlier(Counts(14, 6), Counts(19, 0))  # the others have too few
    assert not is_outlier(Counts(183, 17), Counts(200, 0))  # 8.5 % worse: below the 10-point gap
    # Two unlucky failures in 20 against a clean record: 10 points, but not significant.
    assert not is_outlier(Counts(18, 2), Counts(40, 0))


def test_when_everyone_fails_alike_no_one_is_an_outlier() -> None:
    assert not is_outlier(Counts(0, 50), Counts(0, 100))
    assert not is_outlier(Counts(35, 15), Counts(70, 30))


@given(
    mine=st.tuples(st.integers(0, 300), st.integers(0, 300)),
    others=st.tuples(st.integers(0, 300), st.integers(0, 300)),
)
def test_a_provider_at_least_as_good_as_the_others_is_never_an_outlier(
    mine: tuple[int, int], others: tuple[int, int]
) -> None:
    mine_c, others_c = Counts(*mine), Counts(*others)
    if (
        mine_c.total
        and others_c.total
        and mine_c.successes / mine_c.total >= others_c.successes / others_c.total
    ):
        assert not is_outlier(mine_c, others_c)


def test_ejection_time_grows_with_each_ejection_and_is_capped() -> None:
    ejection = Ejection()
    now = 0.0
    durations = []
    for _ in range(12):
        durations.append(ejection.eject(now, "success rate"))
        assert ejection.active(now)
        assert not ejection.active(ejection.until)
        now = ejection.until  # ejected again the moment it is back
    assert durations[:4] == [30.0, 60.0, 90.0, 120.0]
    assert max(durations) == MAX_EJECTION
    assert ejection.ejections == 12
    assert ejection.reason == "success rate; out for 300 s"


def test_time_back_in_rotation_forgives_ejections() -> None:
    ejection = Ejection()
    ejection.eject(0.0, "x")
    ejection.eject(30.0, "x")  # back at 30 s, out again at once: 60 s
    assert ejection.until == 90.0
    # Back at 90 s; two base periods in rotation forgive both ejections.
    assert ejection.eject(90.0 + 2 * BASE_EJECTION, "x") == BASE_EJECTION


@pytest.mark.parametrize(
    ("admissible", "total", "allowed"),
    [(1, 1, False), (2, 2, True), (1, 2, False), (3, 3, True), (2, 3, False), (4, 4, True),
     (3, 4, True), (2, 4, False), (5, 5, True), (4, 5, True), (3, 5, False)],
)  # fmt: skip
def test_ejections_keep_at_least_half_and_never_the_last(
    admissible: int, total: int, allowed: bool
) -> None:
    assert ejection_allowed(admissible, total) is allowed


def test_panic_below_half_admissible() -> None:
    assert not in_panic(2, 4)
    assert in_panic(1, 3)
    assert in_panic(0, 1)
    assert not in_panic(1, 1)


def test_success_window_counts_the_last_interval_from_cumulative_counters() -> None:
    window = SuccessWindow()
    # A long healthy past: the first failure starts a fresh window (no dilution).
    totals = {"a": Counts(10_000, 1), "b": Counts(10_000, 0)}
    counts = window.on_failure(500.0, "a", totals)
    assert counts == {"a": Counts(0, 1), "b": Counts(0, 0)}
    totals = {"a": Counts(10_070, 30), "b": Counts(10_100, 0)}
    counts = window.on_failure(505.5, "a", totals)
    assert counts == {"a": Counts(70, 30), "b": Counts(100, 0)}
    # Failures keep coming: the window slides to start about 10 s ago.
    totals = {"a": Counts(10_140, 60), "b": Counts(10_200, 0)}
    counts = window.on_failure(515.2, "a", totals)
    # From just before the failure at 505.5 s, which is inside the window.
    assert counts == {"a": Counts(70, 31), "b": Counts(100, 0)}
    window.forget("b")
    counts = window.on_failure(515.4, "a", {"a": Counts(10_140, 61), "c": Counts(5, 0)})
    assert counts["c"] == Counts(5, 0)  # a provider added later counts from its start
