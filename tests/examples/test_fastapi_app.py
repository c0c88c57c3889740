"""``examples/fastapi_app.py`` forwards requests through the balancer: an ASGI test client
drives the app (its lifespan opens and closes the balancer) against the simulator."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

import llmlb_actors as llmlb
from examples.fastapi_app import create_app
from llmlb_actors.sim import Behaviour, SimProvider, SimulatorThread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    providers = [
        SimProvider(name="claude", protocol="anthropic"),
        SimProvider(name="gemini", protocol="gemini"),
        # Still dripping when the client leaves, however late (200 deltas, 50 ms apart).
        SimProvider(
            name="drip",
            protocol="openai",
            behaviour=Behaviour(token_delay=0.05, chunks=200, reply=" ".join(["drip"] * 200)),
        ),
    ]
    with SimulatorThread(providers) as running:
        yield running


def client_for(sim: SimulatorThread, *names: str, **options: Any) -> TestClient:
    config = llmlb.BalancerConfig(
        strategy="failover",
        providers=[sim.provider_config(n) for n in names],
        retry_delay=0.001,
        health_check_interval=None,
        **options,
    )
    return TestClient(create_app(lambda: config))


def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_chat_forwards_through_the_balancer(sim: SimulatorThread) -> None:
    sim.script("claude", ["529"])
    with client_for(sim, "claude", "gemini") as client:
        got = client.post("/v1/chat", json={"prompt": "Hello", "max_tokens": 20})
        assert got.status_code == 200
        body = got.json()
        assert (body["provider"], body["attempts"]) == ("gemini", 2)
        assert body["content"].startswith("Simulated reply from gemini")
        assert body["usage"]["total_tokens"] > 0
        stats = client.get("/v1/stats").json()
        assert stats["providers"]["claude"]["failed_requests"] == 1
        assert stats["totals"]["succeeded"] == 1
        assert client.get("/v1/health").json() == {"claude": True, "gemini": True}


def test_errors_become_status_codes(sim: SimulatorThread) -> None:
    sim.script("claude", ["500"] * 4)
    with client_for(sim, "claude") as client:
        failed = client.post("/v1/chat", json={"prompt": "Hello"})
        assert failed.status_code == 502
        assert "All providers failed after 4 attempts" in failed.json()["detail"]
        assert client.post("/v1/chat", json={"prompt": "Hi", "temperature": 7}).status_code == 422
        sim.script("claude", ["500"] * 4)
        assert client.post("/v1/chat/stream", json={"prompt": "Hi"}).status_code == 502


def test_stream_fails_over_before_the_first_chunk(sim: SimulatorThread) -> None:
    sim.script("claude", ["529"])
    with client_for(sim, "claude", "gemini") as client:
        got = client.post("/v1/chat/stream", json={"prompt": "A story"})
    assert got.status_code == 200
    assert got.text.startswith("Simulated reply from gemini")
    assert sim.stats("claude").requests == 1


def test_stream_broken_after_the_first_chunk_says_so(sim: SimulatorThread) -> None:
    sim.script("claude", ["cut"])
    with client_for(sim, "claude", "gemini") as client:
        got = client.post("/v1/chat/stream", json={"prompt": "A story"})
    assert got.status_code == 200
    text, _, broken = got.text.partition("\n[stream broken: ")
    assert "Simulated reply from claude".startswith(text)
    assert text
    assert broken.endswith("]")
    assert sim.stats("gemini").requests == 0  # no failover once the client had text


def test_a_client_leaving_mid_stream_closes_the_upstream(sim: SimulatorThread) -> None:
    with client_for(sim, "drip") as client:
        with client.stream("POST", "/v1/chat/stream", json={"prompt": "A story"}) as resp:
            assert resp.status_code == 200
            first = next(resp.iter_text())
            assert first
        until(lambda: sim.stats("drip").open_connections == 0)
        until(lambda: client.get("/v1/stats").json()["providers"]["drip"]["in_flight"] == 0)
        stats = client.get("/v1/stats").json()["providers"]["drip"]
        assert stats["streams_completed"] == 0
        assert stats["streams_started"] == 1


def test_the_lifespan_closes_the_balancer(sim: SimulatorThread) -> None:
    client = client_for(sim, "claude")
    with client:
        lb = client.app.state.lb  # type: ignore[attr-defined]
        assert client.post("/v1/chat", json={"prompt": "Hello"}).status_code == 200
    assert lb.get_totals().requests == 1
    with pytest.raises(llmlb.BalancerClosedError):
        asyncio.run(lb.request(llmlb.LLMRequest(prompt="too late")))
