"""The in-process `QuotaStore` through its interface, and the pacing guarantee on virtual time."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlb_actors._quota._bucket import EPSILON, TokenBucket
from llmlb_actors._quota._budget import requests_per_second
from llmlb_actors.quota import (
    Admission,
    Cost,
    Hint,
    InProcessQuotaStore,
    Limits,
    Observation,
    QuotaStore,
)

if TYPE_CHECKING:
    from trio.testing import MockClock


async def test_store_through_the_interface(autojump_clock: MockClock) -> None:
    store: QuotaStore = InProcessQuotaStore(window_guard=0.0)
    now = trio.current_time()
    store.configure("a", Limits(rpm=120, tpm=1200), now)
    store.configure("b", Limits(), now)
    assert store.providers() == ["a", "b"]
    changes: list[str] = []
    store.subscribe(lambda: changes.append("changed"))

    first = await store.reserve("a", Cost(100, 200), now)
    second = await store.reserve("a", Cost(100, 200), now)
    assert first.reservation is not None
    assert second.reservation is not None
    assert first.reservation.id != second.reservation.id
    refused = await store.reserve("a", Cost(100, 200), now)
    assert refused.reservation is None
    assert (refused.at, refused.reason) == (pytest.approx(now + 1.0), "rpm")
    assert store.earliest("a", Cost(100, 200), now) == Admission(at=refused.at, reason="rpm")

    await store.reconcile(first.reservation, Cost(80, 20), now)
    assert changes == ["changed"]
    assert store.view("a", now).remaining_tokens == 1200 - 300 - 100
    await store.reconcile(second.reservation, None, now)  # failed: the completion comes back
    assert store.view("a", now).remaining_tokens == 1200 - 100 - 100

    # An unlimited provider (and an unknown one) always admits.
    assert (await store.reserve("b", Cost(10**9), now)).granted
    assert (await store.reserve("nobody", Cost(1), now)).granted
    assert not store.view("b", now).limited

    await store.observe("b", Observation(retry_after=5.0), now)
    assert store.earliest("b", Cost(1), now).reason == "retry-after"
    await trio.sleep(5.0)
    assert store.earliest("b", Cost(1), trio.current_time()).admits(trio.current_time())

    store.forget("a")
    assert store.providers() == ["b"]
    assert len(changes) == 4  # reconcile x2, observe, forget
    await store.aclose()


async def test_reconcile_with_an_observation_caps_after_the_refund(
    autojump_clock: MockClock,
) -> None:
    store = InProcessQuotaStore(window_guard=0.0)
    now = trio.current_time()
    store.configure("a", Limits(tpm=6000), now)
    admission = store.reserve_nowait("a", Cost(100, 900), now)
    assert admission.reservation is not None
    # The provider counted 300 tokens (its own count wins over our refund of 700).
    observation = Observation(tokens=Hint(limit=6000, remaining=5700, reset=3.0))
    store.reconcile_nowait(admission.reservation, Cost(100, 200), now, observation)
    assert store.view("a", now).remaining_tokens == 5700


def test_remote_stores_leave_the_nowait_twins_raising() -> None:
    class Remote(QuotaStore):
        def configure(self, provider: str, limits: Limits, now: float, *, probe: bool = False):
            pass

        def forget(self, provider: str) -> None:
            pass

        def providers(self) -> list[str]:
            return []

        def earliest(self, provider: str, cost: Cost, now: float) -> Admission:
            return Admission(at=now)

        def view(self, provider: str, now: float):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        async def reserve(self, provider: str, cost: Cost, now: float) -> Admission:
            return Admission(at=now)

        async def reconcile(self, reservation, used, now, observation=None) -> None:  # type: ignore[no-untyped-def]
            pass

        async def observe(self, provider: str, observation: Observation, now: float) -> None:
            pass

    remote = Remote()
    assert not remote.local
    with pytest.raises(NotImplementedError):
        remote.reserve_nowait("a", Cost(1), 0.0)
    calls: list[int] = []
    remote.subscribe(lambda: calls.append(1))
    remote.notify()
    assert calls == [1]


def test_bad_window_guard() -> None:
    with pytest.raises(ValueError, match="window_guard"):
        InProcessQuotaStore(window_guard=-0.1)
    with pytest.raises(ValueError, match="window_guard"):
        InProcessQuotaStore(window_guard=math.nan)


# -- the pacing guarantee ----------------------------------------------------------------------


def _max_in_any_window(times: list[float], period: float = 1.0) -> int:
    """The most events in any half-open window [t, t + period) (one starting at an event)."""
    times = sorted(times)
    best = 0
    j = 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + period:
            j += 1
        best = max(best, j - i)
    return best


arrivals = st.lists(
    st.tuples(
        st.floats(0.0, 5.0, allow_nan=False),  # arrival time
        st.integers(1, 400),  # estimated prompt tokens
        st.integers(0, 400),  # reserved completion
        st.floats(0.0, 3.0, allow_nan=False),  # attempt duration
        st.floats(0.0, 1.5, allow_nan=False),  # used / reserved
        st.booleans(),  # failed
    ),
    min_size=1,
    max_size=60,
)


@settings(deadline=None)
@given(
    rpm=st.integers(1, 1200),
    tpm=st.one_of(st.none(), st.integers(800, 20_000)),
    guard=st.sampled_from([0.0, 0.05]),
    requests=arrivals,
)
def test_pacing_guarantee(
    rpm: int,
    tpm: int | None,
    guard: float,
    requests: list[tuple[float, int, int, float, float, bool]],
) -> None:
    """For any arrivals, sizes and limits: no 1-second window holds more than ceil(rpm/60)
    sends; an admission never takes the token bucket below zero; when estimates are upper
    bounds, a provider counting real usage at send time never goes below zero either."""
    cap = requests_per_second(rpm)
    sends: list[float] = []
    server = TokenBucket(tpm, 0.0) if tpm is not None else None
    store = InProcessQuotaStore(window_guard=guard)

    async def one(arrive: float, cost: Cost, duration: float, ratio: float, fail: bool) -> None:
        await trio.sleep_until(arrive)
        while True:
            now = trio.current_time()
            admission = store.reserve_nowait("p", cost, now)
            if admission.reservation is not None:
                break
            assert admission.fits
            await trio.sleep_until(admission.at)
        sends.append(now)
        budget = store.budget("p")
        assert budget is not None
        tokens = budget.buckets.get("tokens")
        if tokens is not None:
            assert tokens.level >= -EPSILON  # never taken below zero by an admission
        used = Cost(
            math.floor(cost.prompt_tokens * min(ratio, 1.0)),
            math.floor(cost.completion_tokens * min(ratio, 1.0)),
        )
        if server is not None:
            # A failed attempt is charged its prompt only (what the policy refunds assumes).
            charged = used.prompt_tokens if fail else used.tokens
            if ratio <= 1.0:
                assert server.earliest(charged, now) <= now  # the provider accepts it
            server.take(charged, now)
        await trio.sleep(duration)
        store.reconcile_nowait(admission.reservation, None if fail else used, trio.current_time())

    async def main() -> None:
        store.configure("p", Limits(rpm=rpm, tpm=tpm), trio.current_time())
        async with trio.open_nursery() as nursery:
            for arrive, prompt, completion, duration, ratio, fail in requests:
                if tpm is not None and prompt + completion > tpm:
                    continue
                cost = Cost(prompt, completion)
                nursery.start_soon(one, arrive, cost, duration, ratio, fail)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert _max_in_any_window(sends) <= cap
    budget = store.budget("p")
    assert budget is not None
    assert budget.reservations == 0


def test_pacing_reaches_the_limit_under_a_backlog() -> None:
    """2,000 requests at once against rpm=600: every second holds exactly 10 of them."""
    store = InProcessQuotaStore(window_guard=0.0)
    sends: list[float] = []

    async def main() -> None:
        # One admitter serving the waiting requests in arrival order, as the dispatcher does.
        store.configure("p", Limits(rpm=600), trio.current_time())
        for _ in range(2000):
            while True:
                now = trio.current_time()
                admission = store.reserve_nowait("p", Cost(10), now)
                if admission.reservation is not None:
                    sends.append(now)
                    break
                await trio.sleep_until(admission.at)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    per_second = Counter(math.floor(t + 1e-9) for t in sends)
    assert set(per_second.values()) == {10}
    assert max(sends) == pytest.approx(199.0)  # 200 windows of 10: the pooled rate exactly


def test_store_is_exact_against_a_random_model() -> None:
    """Random interleavings of reserve/reconcile/observe keep every reservation accounted."""
    rng = random.Random(7)
    store = InProcessQuotaStore(window_guard=0.0)
    now = 0.0
    store.configure("p", Limits(rpm=6000, tpm=10_000, tpd=1_000_000), now)
    open_reservations = []
    for _ in range(2000):
        now += rng.random() * 0.01
        op = rng.random()
        if op < 0.5:
            admission = store.reserve_nowait("p", Cost(rng.randint(1, 50), rng.randint(0, 50)), now)
            if admission.reservation is not None:
                open_reservations.append(admission.reservation)
        elif op < 0.9 and open_reservations:
            reservation = open_reservations.pop(rng.randrange(len(open_reservations)))
            store.reconcile_nowait(reservation, Cost(rng.randint(0, 60), rng.randint(0, 60)), now)
        else:
            store.observe_nowait(
                "p", Observation(tokens=Hint(remaining=rng.randint(0, 10_000))), now
            )
    budget = store.budget("p")
    assert budget is not None
    assert budget.reservations == len(open_reservations)
