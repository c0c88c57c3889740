"""Strategy properties: rotation order and weighted proportions, under membership changes."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlb_actors import BalancerConfig, ProviderConfig
from llmlb_actors._actors._call import Call
from llmlb_actors._actors.dispatcher import Dispatcher
from llmlb_actors._actors.provider import ProviderActor
from llmlb_actors._models import LLMRequest
from llmlb_actors.strategies import (
    LeastBusyStrategy,
    RoundRobinStrategy,
    StrategyOptions,
    WeightedStrategy,
    make_strategy,
)
from llmlb_actors.testing import Script

if TYPE_CHECKING:
    from llmlb_actors._config import ProviderState


@dataclass
class Fake:
    name: str
    index: int
    weight: float = 1.0
    in_flight: int = 0
    latency_ewma: float | None = None

    def snapshot(self) -> ProviderState:  # pragma: no cover - not used by these strategies
        raise NotImplementedError


ops = st.lists(
    st.one_of(
        st.tuples(st.just("pick"), st.integers(1, 12)),
        st.tuples(st.just("add"), st.integers(1, 5)),
        st.tuples(st.just("remove"), st.integers(0, 10)),
        st.tuples(st.just("sick"), st.integers(0, 10)),
        st.tuples(st.just("well"), st.integers(0, 10)),
    ),
    max_size=40,
)


@given(n=st.integers(1, 8), rounds=st.integers(1, 5))
def test_round_robin_visits_each_in_config_order(n: int, rounds: int) -> None:
    providers = [Fake(f"p{i}", i) for i in range(n)]
    rr = RoundRobinStrategy()
    picks = [rr.select(providers).name for _ in range(n * rounds)]
    assert picks == [p.name for p in providers] * rounds


@given(ops)
def test_round_robin_is_strict_rotation_under_changes(operations: list[tuple[str, int]]) -> None:
    providers = [Fake(f"p{i}", i) for i in range(3)]
    sick: set[str] = set()
    next_index = 3
    rr = RoundRobinStrategy()
    last: Fake | None = None
    for op, arg in operations:
        if op == "add":
            providers.append(Fake(f"p{next_index}", next_index, weight=arg))
            next_index += 1
        elif op == "remove" and providers:
            providers.pop(arg % len(providers))
        elif op == "sick" and providers:
            sick.add(providers[arg % len(providers)].name)
        elif op == "well" and providers:
            sick.discard(providers[arg % len(providers)].name)
        elif op == "pick":
            candidates = [p for p in providers if p.name not in sick]
            for _ in range(arg):
                if not candidates:
                    break
                chosen = rr.select(candidates)
                assert chosen in candidates
                if last is not None:
                    after = [c for c in candidates if c.index > last.index]
                    expected = after[0] if after else candidates[0]
                    assert chosen is expected, "the next healthy provider after the last pick"
                last = chosen


@given(weights=st.lists(st.integers(1, 6), min_size=1, max_size=6), periods=st.integers(2, 4))
def test_weighted_every_window_matches_weights(weights: list[int], periods: int) -> None:
    providers = [Fake(f"p{i}", i, weight=w) for i, w in enumerate(weights)]
    wrr = WeightedStrategy()
    total = sum(weights)
    picks = [wrr.select(providers).name for _ in range(total * periods)]
    expected = {p.name: int(p.weight) for p in providers}
    for start in range(len(picks) - total + 1):
        assert Counter(picks[start : start + total]) == expected


@given(
    weights=st.lists(st.integers(1, 5), min_size=2, max_size=5),
    sick=st.integers(0, 4),
    periods=st.integers(1, 3),
)
def test_weighted_proportions_among_healthy_after_a_change(
    weights: list[int], sick: int, periods: int
) -> None:
    providers = [Fake(f"p{i}", i, weight=w) for i, w in enumerate(weights)]
    wrr = WeightedStrategy()
    for _ in range(7):  # some history before the change
        wrr.select(providers)
    gone = providers[sick % len(providers)]
    healthy = [p for p in providers if p is not gone]
    wrr.forget(gone.name)
    total = int(sum(p.weight for p in healthy))
    picks = Counter(wrr.select(healthy).name for _ in range(total * periods * 4))
    for p in healthy:
        share = picks[p.name] / (total * periods * 4)
        # Smooth WRR converges: the carried-over scores shift each count by at most len(providers).
        assert abs(picks[p.name] - p.weight * periods * 4) <= len(providers), (share, p)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=8))
def test_least_busy_picks_fewest_in_flight_first_in_order(loads: list[int]) -> None:
    providers = [Fake(f"p{i}", i, in_flight=load) for i, load in enumerate(loads)]
    chosen = LeastBusyStrategy().select(providers)
    assert chosen.in_flight == min(loads)
    assert chosen.index == loads.index(min(loads))


Scripted = Script().provider


def _actors(names: list[str], settings_: BalancerConfig) -> list[ProviderActor]:
    return [
        ProviderActor(
            ProviderConfig(name=n, provider=Scripted, max_concurrency=1, mailbox_size=1000),
            i,
            settings_,
            lambda cfg: Scripted(cfg),
            random.Random(0),
            lambda: None,
        )
        for i, n in enumerate(names)
    ]


@settings(max_examples=60, deadline=None)
@given(ops)
async def test_dispatcher_round_robin_skips_unhealthy_and_removed(
    operations: list[tuple[str, int]],
) -> None:
    cfg = BalancerConfig(providers=[ProviderConfig(name="x", provider=Scripted)])
    dispatcher = Dispatcher(make_strategy("round-robin"), 10)
    actors = _actors(["a", "b", "c"], cfg)
    dispatcher.set_rotation(actors)
    made = 3
    last_index = -1
    for op, arg in operations:
        rotation = dispatcher.rotation
        if op == "add":
            rotation = [*rotation, *_actors([f"n{made}"], cfg)]
            rotation[-1].index = made
            made += 1
        elif op == "remove" and rotation:
            rotation = [a for i, a in enumerate(rotation) if i != arg % len(rotation)]
        elif op in ("sick", "well") and rotation:
            actor = rotation[arg % len(rotation)]
            if op == "sick":
                actor.circuit.trip(trio.current_time(), "test", cooldown=1e9)
            else:
                actor.circuit.reset()
        dispatcher.set_rotation(rotation)
        if op != "pick":
            continue
        for _ in range(arg):
            call = Call(LLMRequest(prompt="x"))
            choice = dispatcher.route(call, trio.current_time())
            healthy = [a for a in rotation if a.circuit.state == "closed"]
            if not rotation:
                assert choice is None
                continue
            assert isinstance(choice, ProviderActor)
            if not healthy:
                # Nobody healthy: the least recently failed one is still tried (and the
                # rotation moves past it: the strategy picked it).
                assert choice is min(rotation, key=lambda a: (a.circuit.last_failure_time, a.index))
                last_index = choice.index
                continue
            after = [a for a in healthy if a.index > last_index]
            assert choice is (after[0] if after else healthy[0])
            last_index = choice.index


@pytest.mark.parametrize("name", ["round-robin", "failover", "weighted", "least-busy", "latency"])
def test_every_named_strategy_exists(name: str) -> None:
    assert make_strategy(name).name == name


_STATE = st.sampled_from(["ok", "open", "retry-after", "ejected", "full"])


@settings(max_examples=200, deadline=None)
@given(
    states=st.lists(_STATE, min_size=1, max_size=6),
    costs=st.lists(st.one_of(st.none(), st.floats(0.001, 5.0)), min_size=6, max_size=6),
    tried=st.sets(st.integers(0, 5)),
    seed=st.integers(0, 2**16),
)
async def test_latency_routing_never_picks_an_inadmissible_provider(
    states: list[str], costs: list[float | None], tried: set[int], seed: int
) -> None:
    """P2C over peak-EWMA through the dispatcher: only admissible providers with room.

    Ejections count unless fewer than half are admissible (the panic threshold);
    with none admissible, the least recently failed provider is the fallback.
    """
    cfg = BalancerConfig(providers=[ProviderConfig(name="x", provider=Scripted)])
    options = StrategyOptions(rng=random.Random(seed))
    dispatcher = Dispatcher(make_strategy("latency", options=options), 10)
    actors = _actors([f"p{i}" for i in range(len(states))], cfg)
    now = trio.current_time()
    for i, (actor, state) in enumerate(zip(actors, states, strict=True)):
        cost = costs[i]
        if cost is not None:
            actor.peak.observe(cost, now)
        if state == "open":
            actor.circuit.trip(now - i, "test", cooldown=1e9)
        elif state == "retry-after":
            actor.retry_after_until = actor.not_before = now + 5
        elif state == "ejected":
            dispatcher.note_ejection(actor.eject(now, "test"))
        elif state == "full":
            actor.queued = actor.mailbox_size
    dispatcher.set_rotation(actors)
    ejected = {a.name for a, s in zip(actors, states, strict=True) if s == "ejected"}
    admissible = [a for a, s in zip(actors, states, strict=True) if s in ("ok", "full")]
    panic = 2 * len(admissible) < len(actors)
    usable = [
        a
        for a, s in zip(actors, states, strict=True)
        if s in ("ok", "full") or (panic and s == "ejected")
    ]
    for retry in (False, True):
        call = Call(LLMRequest(prompt="x"))
        if retry:
            for i in tried:
                if i < len(actors):
                    call.assign(actors[i].name)
        for _ in range(10):
            choice = dispatcher.route(call, trio.current_time())
            if usable:
                # Untried providers first (a retry waits for one rather than go back).
                pool = [a for a in usable if not call.attempts_at(a.name)] or usable
                with_room = [a for a in pool if a.queued < a.mailbox_size]
                if not with_room:
                    assert choice is not None
                    assert not isinstance(choice, ProviderActor)  # saturated: wait for room
                    continue
                assert isinstance(choice, ProviderActor)
                assert choice in with_room, (choice.name, states)
                if choice.name in ejected:
                    assert panic
            else:
                # Nothing admissible: the least recently failed is still tried (if it has room).
                assert choice is not None
