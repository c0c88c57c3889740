"""The Lua scripts' arithmetic against the in-process model, on a real redis-server.

Several stores (each a balancer with its own connection) interleave reservations and
settlements on one provider; one in-process `ProviderBudget` receiving the same
operations in the same order is the model: every grant, refusal and wait must match.
Time is virtual: trio's clock is a `MockClock` the test jumps, and the scripts are
given the same "now" (``RedisQuotaStore.clock_arg``) instead of the server's.
"""

from __future__ import annotations

import math
import uuid

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlb_actors._quota._budget import ProviderBudget
from llmlb_actors.quota import Cost, Hint, Limits, Observation, RedisQuotaStore

GUARD = 0.02
TIES = {"requests", "tokens", "input-tokens", "output-tokens", "tpm"}

limits_st = st.builds(
    Limits,
    rpm=st.one_of(st.none(), st.integers(60, 900)),
    tpm=st.one_of(st.none(), st.integers(50, 3000)),
    rpd=st.one_of(st.none(), st.integers(1, 40)),
    tpd=st.one_of(st.none(), st.integers(100, 5000)),
)

op_st = st.one_of(
    st.tuples(
        st.just("reserve"),
        st.integers(0, 2),  # client
        st.integers(0, 400),  # ms since the previous operation
        st.integers(0, 400),  # prompt tokens
        st.integers(0, 400),  # completion tokens reserved
    ),
    st.tuples(
        st.just("settle"),
        st.integers(0, 2),
        st.integers(0, 400),
        st.integers(0, 50),  # which outstanding reservation
        st.one_of(st.none(), st.tuples(st.integers(0, 500), st.integers(0, 500))),
    ),
    st.tuples(
        st.just("headers"),
        st.integers(0, 2),
        st.integers(0, 400),
        st.sampled_from(["requests", "tokens", "input_tokens", "output_tokens"]),
        st.tuples(
            st.one_of(st.none(), st.integers(1, 3000)),  # limit
            st.one_of(st.none(), st.integers(0, 3000)),  # remaining
            st.one_of(st.none(), st.integers(0, 90_000)),  # reset, ms
        ),
    ),
    st.tuples(
        st.just("retry-after"),
        st.integers(0, 2),
        st.integers(0, 400),
        st.integers(1, 3000),  # ms
        st.none(),
    ),
)


def _run_model(url: str, limits: Limits, ops: list[tuple[object, ...]]) -> None:
    clock = trio.testing.MockClock()
    prefix = f"t{uuid.uuid4().hex[:12]}"

    async def main() -> None:
        stores = [
            RedisQuotaStore(
                f"{url}?prefix={prefix}&timeout=3600&heartbeat=3600",
                window_guard=GUARD,
                balancer_id=f"b{i}",
            )
            for i in range(3)
        ]
        model = ProviderBudget(limits, trio.current_time(), window_guard=GUARD)
        outstanding: list[tuple[int, object, int]] = []  # (client, reservation, model id)
        async with trio.open_nursery() as nursery:
            for store in stores:
                store.clock_arg = lambda: str(round(trio.current_time() * 1e6))

                await nursery.start(store.run)
                assert store.shared
                store.configure("p", limits, trio.current_time())
            next_id = 1
            for kind, client, dt, a, b in ops:
                clock.jump(dt / 1000)
                now = trio.current_time()
                store = stores[client]  # type: ignore[index]
                if kind == "reserve":
                    cost = Cost(a, b)  # type: ignore[arg-type]
                    store.claim("p", cost, now)
                    got = await store.reserve("p", cost, now)
                    want = model.earliest(cost, now)
                    assert got.granted == want.admits(now), (got, want)
                    if got.granted:
                        model.reserve(cost, now, next_id)
                        outstanding.append((client, got.reservation, next_id))  # type: ignore[arg-type]
                        next_id += 1
                    else:
                        assert got.fits == want.fits, (got, want)
                        if want.fits and want.at < math.inf:
                            assert abs(got.at - want.at) < 3e-6, (got, want)
                        # Two buckets binding at the same instant may be named in either
                        # order (the model's is the order it created them in).
                        assert got.reason == want.reason or {got.reason, want.reason} <= TIES, (
                            got,
                            want,
                        )
                elif kind == "settle" and outstanding:
                    owner, reservation, model_id = outstanding.pop(a % len(outstanding))  # type: ignore[operator]
                    used = None if b is None else Cost(*b)  # type: ignore[misc]
                    await stores[owner].reconcile(reservation, used, now)  # type: ignore[arg-type]
                    model.reconcile(model_id, used, now)
                elif kind == "headers":
                    limit, remaining, reset = b  # type: ignore[misc]
                    hint = Hint(
                        limit=limit,
                        remaining=remaining,
                        reset=None if reset is None else reset / 1000,
                    )
                    observation = Observation(**{a: hint})  # type: ignore[arg-type]
                    await store.observe("p", observation, now)
                    model.observe(observation, now)
                elif kind == "retry-after":
                    observation = Observation(retry_after=a / 1000)  # type: ignore[operator]
                    await store.observe("p", observation, now)
                    model.observe(observation, now)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)


@settings(max_examples=120, deadline=None)
@given(limits=limits_st, ops=st.lists(op_st, min_size=1, max_size=40))
def test_scripts_match_the_in_process_model(redis_module, limits, ops):  # type: ignore[no-untyped-def]
    _run_model(redis_module.url, limits, ops)


def test_bookings_keep_every_window_within_the_cap(redis_module):  # type: ignore[no-untyped-def]
    """With a booking horizon, a full window's next slots are booked in time order (each
    caller is told when to send) and no window ever holds more than the cap."""
    clock = trio.testing.MockClock()
    prefix = f"t{uuid.uuid4().hex[:12]}"
    sends: list[float] = []

    async def main() -> None:
        stores = [
            RedisQuotaStore(
                f"{redis_module.url}?prefix={prefix}&timeout=3600&heartbeat=3600",
                window_guard=GUARD,
                balancer_id=f"b{i}",
            )
            for i in range(3)
        ]
        async with trio.open_nursery() as nursery:
            for store in stores:
                store.clock_arg = lambda: str(round(trio.current_time() * 1e6))
                await nursery.start(store.run)
                store.configure("p", Limits(rpm=300), trio.current_time())  # 5 a second
                store.booking_horizon = 1.0 + GUARD
            refused = 0
            for i in range(40):
                clock.jump(0.05)
                now = trio.current_time()
                got = await stores[i % 3].reserve("p", Cost(1, 1), now)
                if got.granted:
                    assert now <= got.at <= now + 1.0 + GUARD + 1e-6
                    sends.append(got.at)
                else:
                    refused += 1
                    assert got.at > now + 1.0 + GUARD - 1e-6  # beyond the horizon
            assert refused > 0
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
    assert sends == sorted(sends)
    for i, start in enumerate(sends):
        inside = [t for t in sends[i:] if t < start + 1.0 + GUARD - 1e-6]
        assert len(inside) <= 5, (start, inside)
    assert len(sends) >= 5 * 2  # the 2 s of traffic used its slots
