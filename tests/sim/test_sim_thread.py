"""`SimulatorThread`: the simulator on its own thread, for code that is not trio."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from llmlb_actors.sim import Behaviour, SimProvider, SimulatorThread

ROOT = Path(__file__).resolve().parents[2]


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


CRASH = """
from llmlb_actors.sim import SimProvider, SimulatorThread


def boom() -> None:
    raise ZeroDivisionError("in the run loop itself")


try:
    with SimulatorThread([SimProvider(name="a", protocol="openai")]) as sim:
        sim._token.run_sync_soon(boom)  # trio ends the run with TrioInternalError
        sim._thread.join(30)
        try:
            sim.stats("a")
        except RuntimeError as exc:
            print("call:", exc, "|", type(exc.__cause__).__name__)
except RuntimeError as exc:
    print("close:", exc, "|", type(exc.__cause__).__name__)
"""


def test_a_crashed_run_fails_calls_and_close_instead_of_hanging_or_passing() -> None:
    # In a process of its own: a crashed trio run leaves its tasks' coroutines to the
    # garbage collector, which would finalize them inside later tests' runs.
    done = subprocess.run(
        [sys.executable, "-c", CRASH],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "call: the simulator thread crashed | TrioInternalError",
        "close: the simulator thread crashed | TrioInternalError",
    ]
