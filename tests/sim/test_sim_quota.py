"""Simulated quotas: the exact rules, and each protocol's real 429 and rate-limit headers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
import trio

from llmlb_actors.quota import parse_gemini_quota, parse_rate_limit_headers
from llmlb_actors.sim import Behaviour, SimProvider, Simulator, open_simulator
from llmlb_actors.sim._quota import DAY, SimQuota
from tests.sim.helpers import KEYS, MODELS, PROTOCOLS, chat_request
from tests.sim.helpers import client as make_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from trio.testing import MockClock

# -- the rules ---------------------------------------------------------------------------------


def test_request_window_is_ceil_rpm_over_60_in_any_rolling_second() -> None:
    quota = SimQuota(600, None, None, 0.0)
    for i in range(10):
        assert quota.admit(1, 0.05 * i) is None
    refusal = quota.admit(1, 0.5)
    assert refusal is not None
    assert refusal.kind == "requests"
    assert refusal.wait == pytest.approx(0.5)  # the first one leaves at 1.0
    assert quota.admit(1, 0.999) is not None
    assert quota.admit(1, 1.0) is None  # half-open: [0, 1) held ten, [1, 2) starts afresh
    assert quota.admit(1, 1.01) is not None  # 0.05 has not left yet
    assert quota.admit(1, 1.05) is None


def test_rpm_that_is_not_a_multiple_of_60_rounds_up() -> None:
    quota = SimQuota(61, None, None, 0.0)
    assert quota.admit(1, 0.0) is None
    assert quota.admit(1, 0.0) is None
    assert quota.admit(1, 0.0) is not None


def test_token_bucket_refills_per_minute() -> None:
    quota = SimQuota(None, 600, None, 0.0)  # ten tokens a second
    assert quota.admit(400, 0.0) is None
    refusal = quota.admit(300, 0.0)
    assert refusal is not None
    assert (refusal.kind, refusal.limit, refusal.requested) == ("tokens", 600, 300)
    assert refusal.wait == pytest.approx(10.0)
    assert quota.admit(300, 10.0) is None
    too_big = quota.admit(601, 100.0)
    assert too_big is not None
    assert too_big.kind == "tokens"
    state = quota.state(10.0)
    assert (state.tpm, state.remaining_tokens) == (600, 0)
    assert state.reset_tokens == pytest.approx(60.0)


def test_requests_per_day_from_the_first_request() -> None:
    quota = SimQuota(None, None, 2, 100.0)
    assert quota.admit(1, 100.0) is None
    assert quota.admit(1, 200.0) is None
    refusal = quota.admit(1, 300.0)
    assert refusal is not None
    assert refusal.kind == "day"
    assert refusal.wait == pytest.approx(DAY - 200.0)
    assert quota.admit(1, 100.0 + DAY) is None


def test_header_state_is_a_per_minute_bucket() -> None:
    quota = SimQuota(600, None, None, 0.0)
    for _ in range(10):
        quota.admit(1, 0.0)
    state = quota.state(0.0)
    assert (state.rpm, state.remaining_requests) == (600, 590)
    assert state.reset_requests == pytest.approx(1.0)  # ten requests refill in a second


def test_behaviour_refuses_bad_quotas() -> None:
    for field in ("rpm", "tpm", "rpd"):
        for value in (0, -1, 1.5, True, "10"):
            with pytest.raises(ValueError, match=field):
                Behaviour(**{field: value})  # type: ignore[arg-type]


# -- on the wire -------------------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(timeout=30) as c:
        yield c


def quota_providers(**behaviour: int) -> list[SimProvider]:
    return [
        SimProvider(
            name=p,
            protocol=p,  # type: ignore[arg-type]
            api_key=KEYS[p],
            model=MODELS[p],
            behaviour=Behaviour(latency=0.2, **behaviour),  # type: ignore[arg-type]
        )
        for p in PROTOCOLS
    ]


async def post(
    client: httpx.AsyncClient, sim: Simulator, protocol: str, *, stream: bool = False
) -> httpx.Response:
    url, headers, body = chat_request(sim, protocol, stream=stream)
    return await client.post(url, headers=headers, json=body)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_over_the_request_window_is_refused_at_once_with_the_protocols_429(
    client: httpx.AsyncClient, protocol: str, autojump_clock: MockClock
) -> None:
    async with open_simulator(quota_providers(rpm=120)) as sim:  # two a second
        start = trio.current_time()
        answers: list[httpx.Response] = []

        async def one() -> None:
            answers.append(await post(client, sim, protocol))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 200, 429]
        refused = next(a for a in answers if a.status_code == 429)
        ok = next(a for a in answers if a.status_code == 200)
        assert sim.stats(protocol).rate_limited == 1
        assert sim.stats(protocol).outcomes == {"ok": 2, "429": 1}

        if protocol == "gemini":
            observation = parse_gemini_quota(refused.content)
            assert observation is not None
            assert observation.retry_after == pytest.approx(1.0, abs=0.01)
            violation = refused.json()["error"]["details"][0]["violations"][0]
            assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
            assert "x-ratelimit-limit-requests" not in ok.headers
        else:
            observation = parse_rate_limit_headers(refused.headers)
            assert observation is not None
            assert observation.retry_after is not None
            assert observation.retry_after >= 1.0 - 1e-9  # never earlier than the window
        if protocol == "openai":
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.json()["error"]["type"] == "requests"
            assert refused.headers["retry-after-ms"] == "1000"
            learned = parse_rate_limit_headers(ok.headers)
            assert learned is not None
            assert learned.requests is not None
            assert learned.requests.limit == 120
            assert learned.requests.remaining in (118, 119)
            assert learned.requests.reset is not None
            assert 0 < learned.requests.reset <= 1.0
        if protocol == "anthropic":
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert refused.headers["retry-after"] == "1"
            learned = parse_rate_limit_headers(ok.headers)
            assert learned is not None
            assert learned.source == "anthropic"
            assert learned.requests is not None
            assert learned.requests.limit == 120
            assert learned.requests.reset is not None
            assert 0 <= learned.requests.reset <= 2.0  # whole seconds, rounded up

        # Refused on arrival: no simulated latency spent on it.
        assert trio.current_time() - start == pytest.approx(0.2)
        await trio.sleep(1.0)
        assert (await post(client, sim, protocol)).status_code == 200


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_token_quota_and_headers_on_streams_too(
    client: httpx.AsyncClient, protocol: str, autojump_clock: MockClock
) -> None:
    # Each request: 10 prompt words (system + prompt) + 13 reply words = 23 tokens.
    async with open_simulator(quota_providers(tpm=60)) as sim:
        first = await post(client, sim, protocol, stream=True)
        assert first.status_code == 200
        observation = parse_rate_limit_headers(first.headers)
        assert observation is not None
        assert observation.tokens is not None
        assert observation.tokens.limit == 60
        assert observation.tokens.remaining is not None
        assert observation.tokens.remaining <= 60 - 23 + 1
        assert (await post(client, sim, protocol)).status_code == 200
        refused = await post(client, sim, protocol)
        assert refused.status_code == 429
        if protocol == "openai":
            assert refused.json()["error"]["type"] == "tokens"
            wait = float(refused.headers["retry-after-ms"]) / 1000
            # 14 tokens left after two requests (plus refill): 9 more are a few seconds away.
            assert 0 < wait <= 9.0
            await trio.sleep(wait)
            assert (await post(client, sim, protocol)).status_code == 200


async def test_gemini_per_day_quota_names_a_per_day_quota_id(
    client: httpx.AsyncClient, autojump_clock: MockClock
) -> None:
    async with open_simulator(quota_providers(rpd=1)) as sim:
        assert (await post(client, sim, "gemini")).status_code == 200
        refused = await post(client, sim, "gemini")
        assert refused.status_code == 429
        violation = refused.json()["error"]["details"][0]["violations"][0]
        assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
        observation = parse_gemini_quota(refused.content)
        assert observation is not None
        assert observation.exhausted_for is not None
        assert 0 < observation.exhausted_for <= DAY
        assert observation.retry_after == pytest.approx(DAY - 0.2, abs=0.01)


async def test_changing_quotas_restarts_them(
    client: httpx.AsyncClient, autojump_clock: MockClock
) -> None:
    async with open_simulator(quota_providers(rpm=60)) as sim:
        assert (await post(client, sim, "openai")).status_code == 200
        assert (await post(client, sim, "openai")).status_code == 429
        sim.set_behaviour("openai", Behaviour(rpm=120))
        assert (await post(client, sim, "openai")).status_code == 200
        sim.set_behaviour("openai", Behaviour())
        response = await post(client, sim, "openai")
        assert response.status_code == 200
        assert "x-ratelimit-limit-requests" not in response.headers
        assert math.isclose(sim.stats("openai").rate_limited, 1)
