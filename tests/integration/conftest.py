"""Integration fixtures: the simulator runs in the test's own trio run, on 127.0.0.1."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from llmlb_actors.sim import Behaviour, SimProvider, Simulator, open_simulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

KEYS = {"openai": "sk-test-openai", "anthropic": "sk-ant-test", "gemini": "AIza-test"}


@pytest.fixture(params=["default", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both transports must behave the same from the balancer's point of view."""
    return str(request.param)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """Three OpenAI-protocol providers plus one of each other protocol."""
    providers = [
        SimProvider(name=name, protocol="openai", api_key=f"sk-{name}", model=f"gpt-{name}")
        for name in ("first", "second", "third")
    ]
    providers += [
        SimProvider(
            name="claude", protocol="anthropic", api_key=KEYS["anthropic"], model="claude-sim"
        ),
        SimProvider(name="gemini", protocol="gemini", api_key=KEYS["gemini"], model="gemini-sim"),
        SimProvider(
            name="slow",
            protocol="openai",
            api_key="sk-slow",
            model="m",
            behaviour=Behaviour(latency=5),
        ),
    ]
    async with open_simulator(providers) as simulator:
        yield simulator
