"""`SimulatorThread`: the simulator on its own thread, for code that is not trio."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from llmlb_actors.sim import Behaviour, SimProvider, SimulatorThread


def test_serves_over_loopback_and_mirrors_the_handle() -> None:
    with SimulatorThread([SimProvider(name="a", protocol="openai", model="gpt-x")]) as sim:
        assert sim.names == ["a"]
        config = sim.provider_config("a", weight=2)
        assert (config.base_url, config.weight) == (sim.base_url("a"), 2.0)
        sim.script("a", ["503"])
        body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
        url = sim.base_url("a") + "/chat/completions"
        assert httpx.post(url, json=body).status_code == 503
        assert httpx.post(url, json=body).status_code == 200
        sim.set_behaviour("a", Behaviour(reply="fixed"))
        assert "fixed" in httpx.post(url, json=body).text
        stats = sim.stats("a")
        assert (stats.requests, stats.outcomes) == (3, {"503": 1, "ok": 2})
        with pytest.raises(KeyError):
            sim.stats("nope")

        async def from_a_loop() -> int:  # callable from an asyncio loop's thread too
            return sim.stats("a").requests

        assert asyncio.run(from_a_loop()) == 3
    assert not any(t.name == "llmlb-simulator" for t in threading.enumerate())


def test_a_bad_provider_list_raises_on_entering() -> None:
    with (
        pytest.raises(ValueError, match="unique"),
        SimulatorThread(
            [SimProvider(name="a", protocol="openai"), SimProvider(name="a", protocol="openai")]
        ),
    ):
        pass
