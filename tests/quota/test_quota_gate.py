"""The balancer's side of the seam (which providers admit a call) and the ``quota`` strategy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from llmlb_actors import LLMRequest, LoadBalancerError, ProviderConfig, RateLimitedError, Usage
from llmlb_actors._quota._gate import QuotaGate, Wait
from llmlb_actors._quota._observe import current, install
from llmlb_actors._quota._strategy import QuotaStrategy
from llmlb_actors.quota import Cost, Hint, InProcessQuotaStore, Observation, Reservation


@dataclass
class Cand:
    provider_config: ProviderConfig
    index: int = 0
    in_flight: int = 0

    @property
    def name(self) -> str:
        return self.provider_config.name


@dataclass
class FakeCall:
    request: LLMRequest
    reservation: Reservation | None = None
    costs: dict[tuple[str | None, int | None], Cost] | None = None
    log: list[str] = field(default_factory=list)


def cand(name: str, index: int = 0, **budget: int) -> Cand:
    return Cand(
        ProviderConfig(name=name, provider="openai", model="m", api_key="sk-test", **budget), index
    )


def test_unlimited_providers_skip_the_store_after_their_first_answer() -> None:
    gate = QuotaGate(InProcessQuotaStore(), probe=True)
    a = Cand(
        ProviderConfig(name="a", provider="gemini", model="m", api_key="sk-test")
    )  # not probed
    b = cand("b")  # openai, no limits: probed until its first answer
    gate.add(a.provider_config, 0.0)
    gate.add(b.provider_config, 0.0)
    call = FakeCall(LLMRequest(prompt="hi"))
    assert gate.admissible([a, b], call, 0.0) == [a, b]
    assert gate.reserve(b, call, 0.0)
    probe = call.reservation
    assert probe is not None
    other = FakeCall(LLMRequest(prompt="hi"))
    assert gate.admissible([b], other, 0.0) == Wait(math.inf, True, {"b": ("probe", math.inf)})
    gate.settle(
        call, Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3), None, 0.1, provider="b"
    )
    assert gate.admissible([b], other, 0.1) == [b]
    assert not gate.limited("b")  # its answer carried no rate-limit headers
    # A later answer that reports a budget makes it count again.
    gate.settle(other, None, Observation(requests=Hint(limit=60)), 0.2, provider="b")
    assert gate.limited("b")


def test_admissible_filters_and_explains() -> None:
    gate = QuotaGate(InProcessQuotaStore(window_guard=0.0))
    a, b = cand("a", 0, rpm=60), cand("b", 1, tpm=100)
    gate.add(a.provider_config, 0.0)
    gate.add(b.provider_config, 0.0)
    first = FakeCall(LLMRequest(prompt="x" * 200, max_tokens=20))  # 50 + 7 + 20 = 77 tokens
    assert gate.reserve(a, first, 0.0)
    assert gate.admissible([a, b], first, 0.0) == [b]
    assert gate.reserve(b, first, 0.0)
    wait = gate.admissible([a, b], FakeCall(LLMRequest(prompt="x" * 200, max_tokens=20)), 0.0)
    assert isinstance(wait, Wait)
    assert wait.fits
    assert wait.reasons["a"] == ("rpm", pytest.approx(1.0))
    assert wait.reasons["b"][0] == "tpm"
    assert wait.at == pytest.approx(1.0)
    error = gate.refusal(wait, 0.0, why="on_overload='fail'")
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == pytest.approx(1.0)
    assert error.budgets == {"a": "rpm", "b": "tpm"}
    assert "a: rpm refills in 1s" in str(error)


def test_too_large_everywhere_is_a_plain_load_balancer_error() -> None:
    gate = QuotaGate(InProcessQuotaStore())
    a = cand("a", tpm=50)
    gate.add(a.provider_config, 0.0)
    wait = gate.admissible([a], FakeCall(LLMRequest(prompt="x" * 400)), 0.0)
    assert isinstance(wait, Wait)
    assert not wait.fits
    error = gate.refusal(wait, 0.0, why="too large")
    assert type(error) is LoadBalancerError
    assert "can never fit" in str(error)


def test_cost_is_cached_per_model_and_completion_default() -> None:
    calls: list[str | None] = []

    def estimator(request: LLMRequest, model: str | None) -> int:
        calls.append(model)
        return 10

    gate = QuotaGate(InProcessQuotaStore(), estimator)
    call = FakeCall(LLMRequest(prompt="hi"))
    one = ProviderConfig(
        name="a", provider="openai", model="m1", api_key="sk-test", default_max_tokens=100
    )
    two = ProviderConfig(
        name="b", provider="openai", model="m1", api_key="sk-test", default_max_tokens=300
    )
    assert gate.cost(call, one) == Cost(10, 100)
    assert gate.cost(call, one) == Cost(10, 100)
    assert gate.cost(call, two) == Cost(10, 300)
    assert calls == ["m1", "m1"]
    with pytest.raises(TypeError, match="estimator"):
        QuotaGate(InProcessQuotaStore(), lambda r, m: 1.5).cost(  # type: ignore[arg-type,return-value]
            FakeCall(LLMRequest(prompt="hi")), one
        )


def test_settle_reconciles_with_usage_or_refunds_a_failure() -> None:
    store = InProcessQuotaStore()
    gate = QuotaGate(store)
    a = cand("a", tpm=1000)
    gate.add(a.provider_config, 0.0)
    call = FakeCall(LLMRequest(prompt="x" * 40, max_tokens=100))  # 17 + 100
    gate.reserve(a, call, 0.0)
    assert store.view("a", 0.0).remaining_tokens == 1000 - 117
    gate.settle(
        call,
        Usage(prompt_tokens=12, completion_tokens=30, total_tokens=42),
        None,
        0.0,
        provider="a",
    )
    assert store.view("a", 0.0).remaining_tokens == 1000 - 42
    failed = FakeCall(LLMRequest(prompt="x" * 40, max_tokens=100))
    gate.reserve(a, failed, 0.0)
    gate.settle(failed, None, None, 0.0, provider="a")
    assert store.view("a", 0.0).remaining_tokens == 1000 - 42 - 17


def test_observation_slot_is_per_task() -> None:
    assert current() is None  # outside a worker: no slot, so no headers are parsed
    import trio

    async def worker(results: list[Observation | None]) -> None:
        slot = install()
        assert current() is slot
        slot.observation = Observation(retry_after=2.0)
        results.append(slot.take())
        results.append(slot.take())

    results: list[Observation | None] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, results)
        assert current() is None  # the worker's slot stayed in its own task

    trio.run(main)
    assert results == [Observation(retry_after=2.0), None]


def test_quota_strategy_picks_most_headroom_then_least_busy() -> None:
    room = {"a": 0.5, "b": 0.9, "c": 0.9}
    strategy = QuotaStrategy(room.__getitem__)
    a, b, c = cand("a", 0), cand("b", 1), cand("c", 2)
    assert strategy.select([a, b, c]) is b
    b.in_flight = 3
    assert strategy.select([a, b, c]) is c
    assert QuotaStrategy().select([c, a]) is c  # unbound: the first candidate


def test_quota_strategy_spreads_in_proportion_to_quota() -> None:
    store = InProcessQuotaStore(window_guard=0.0)
    gate = QuotaGate(store)
    fast, slow = cand("fast", 0, rpm=1200), cand("slow", 1, rpm=600)  # 20 and 10 a second
    for c in (fast, slow):
        gate.add(c.provider_config, 0.0)
    strategy = QuotaStrategy(lambda name: store.view(name, 0.0).headroom)
    picks = []
    for _ in range(30):
        call = FakeCall(LLMRequest(prompt="hi"))
        pool = gate.admissible([fast, slow], call, 0.0)
        assert isinstance(pool, list)
        choice = strategy.select(pool)
        assert gate.reserve(choice, call, 0.0)
        picks.append(choice.name)
    assert picks.count("fast") == 20
    assert picks.count("slow") == 10
